package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/merchants"
)

// DefaultCeilingTTL is how long RateLimit trusts a merchant's ceiling it
// read: a changed ceiling applies within this time.
const DefaultCeilingTTL = 30 * time.Second

// DefaultCeilingIdle is how long a merchant may make no request before
// RateLimit forgets its bucket and cached ceiling.
const DefaultCeilingIdle = 5 * time.Minute

// Ceilings reads a merchant's requests-per-second ceiling, 0 for none;
// *merchants.Store is one.
type Ceilings interface {
	RPSCeiling(ctx context.Context, merchantID string) (int, error)
}

var _ Ceilings = (*merchants.Store)(nil)

// RateLimitConfig configures a RateLimit.
type RateLimitConfig struct {
	Ceilings Ceilings // Required.
	// Clock times the buckets and the cache. Defaults to clock.System.
	Clock clock.Clock
	// TTL is how long a ceiling read is used before it is read again.
	// Defaults to DefaultCeilingTTL.
	TTL time.Duration
	// Idle is how long a merchant's bucket is kept after its last request.
	// Defaults to DefaultCeilingIdle; it is raised to TTL if below.
	Idle time.Duration
}

// RateLimit enforces each merchant's requests-per-second ceiling (DESIGN.md
// "Abuse limits": "A merchant can be given a requests-per-second ceiling
// too") on the authenticated /v1 routes, after auth and before
// idempotency: a request over the ceiling answers 429 rate_limited with
// retry_after and Retry-After, before any database work (so an idempotent
// replay counts as a request too). The token endpoint and the public
// routes are not behind it.
//
// # Per instance
//
// Each serve instance keeps its own token bucket per merchant
// (golang.org/x/time/rate: the ceiling per second, a burst of the ceiling;
// a new or changed ceiling starts with a full bucket). Counting in Postgres
// would cost a write per request and serialize a merchant's requests on one
// row, more than a ceiling protects; so with N instances behind a balancer
// a merchant gets up to N × its ceiling. The ceiling is read from the
// merchant's record at most once per TTL per merchant (concurrent misses
// share one read), so a request costs no round trip. Merchants idle for
// Idle are forgotten, so memory follows the merchants active lately, not
// every merchant ever seen.
//
// A RateLimit is safe for concurrent use.
type RateLimit struct {
	ceilings Ceilings
	clock    clock.Clock
	ttl      time.Duration
	idle     time.Duration
	reads    singleflight.Group

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

// bucket is one merchant's cached ceiling and token bucket.
type bucket struct {
	ceiling int
	read    time.Time     // when ceiling was read
	lim     *rate.Limiter // nil without a ceiling
	seen    time.Time     // the merchant's last request
}

// NewRateLimit returns a RateLimit.
func NewRateLimit(cfg RateLimitConfig) (*RateLimit, error) {
	if cfg.Ceilings == nil {
		return nil, errors.New("api: RateLimitConfig needs Ceilings")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultCeilingTTL
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultCeilingIdle
	}
	cfg.Idle = max(cfg.Idle, cfg.TTL)
	return &RateLimit{ceilings: cfg.Ceilings, clock: cfg.Clock, ttl: cfg.TTL, idle: cfg.Idle,
		buckets: map[string]*bucket{}}, nil
}

// Middleware refuses a merchant's requests over its ceiling. It must run
// after the auth middleware (it reads MerchantID); without a merchant it
// lets the request through.
func (l *RateLimit) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := MerchantID(c)
			if id == "" {
				return next(c)
			}
			wait, err := l.take(c.Request().Context(), id)
			if err != nil {
				return err
			}
			if wait > 0 {
				return RateLimited(int(math.Ceil(wait.Seconds())))
			}
			return next(c)
		}
	}
}

// take counts one request of the merchant now. It returns 0 if the request
// may go on, else how long until it could.
func (l *RateLimit) take(ctx context.Context, merchantID string) (time.Duration, error) {
	now := l.clock.Now()
	l.mu.Lock()
	l.sweep(now)
	b := l.buckets[merchantID]
	if b == nil || now.Sub(b.read) >= l.ttl {
		l.mu.Unlock()
		ceiling, err := l.read(ctx, merchantID)
		if err != nil {
			return 0, err
		}
		l.mu.Lock()
		if b = l.buckets[merchantID]; b == nil {
			b = &bucket{}
			l.buckets[merchantID] = b
		}
		if ceiling != b.ceiling || (ceiling > 0 && b.lim == nil) {
			b.ceiling, b.lim = ceiling, nil
			if ceiling > 0 {
				b.lim = rate.NewLimiter(rate.Limit(ceiling), ceiling)
			}
		}
		b.read = now
	}
	defer l.mu.Unlock()
	b.seen = now
	if b.lim == nil || b.lim.AllowN(now, 1) {
		return 0, nil
	}
	// Less than one token is left; one more comes at the ceiling's rate.
	missing := 1 - b.lim.TokensAt(now)
	return max(time.Duration(missing/float64(b.lim.Limit())*float64(time.Second)), time.Nanosecond), nil
}

// read reads a merchant's ceiling; concurrent reads of one merchant share
// one query, which the first caller's cancellation does not abort.
func (l *RateLimit) read(ctx context.Context, merchantID string) (int, error) {
	v, err, _ := l.reads.Do(merchantID, func() (any, error) {
		return l.ceilings.RPSCeiling(context.WithoutCancel(ctx), merchantID)
	})
	if err != nil {
		return 0, fmt.Errorf("rate limit: read the ceiling of %s: %w", merchantID, err)
	}
	return v.(int), nil
}

// sweep forgets the merchants idle for l.idle, at most once per l.idle.
// The caller holds l.mu.
func (l *RateLimit) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.idle {
		return
	}
	l.lastSweep = now
	for id, b := range l.buckets {
		if now.Sub(b.seen) >= l.idle {
			delete(l.buckets, id)
		}
	}
}

// Tracked is how many merchants RateLimit holds a bucket or cached ceiling
// for.
func (l *RateLimit) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
