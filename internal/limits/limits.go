// Package limits meters abuse-prone actions in Postgres, so that every
// serve instance shares one count (DESIGN.md "Abuse limits").
//
// A Rule is "at most Cap in any Window". What is metered is named by a Kind
// and a key: the callers' keyed fingerprints (made in the HSM; this package
// never sees a clear value) or a hash of values that are not secret. The
// windows slide: the instants counted are kept (table limit_events, at most
// the cap of the kind's longest window), so "10 a day" is 10 in any 24
// hours, and the wait told to a refused caller is exact.
//
// Take checks and counts in one statement (function limits_take, migration
// 013): all rules of a call pass and are counted together, or none is.
// Callers take before the call to the outside world (reserve, then call), so
// a caller who hangs up once the bank or carrier has been asked has been
// counted already; Release gives back a take that turned out not to reach
// anyone (the bank answered with no SMS sent), or that should not count
// (a right client secret).
//
// Windows are counted by fingerprint, so after an fp key rotation the same
// card or phone gets a new key and its count restarts: an attacker gains at
// most one more window's allowance per rotation, which is rare and
// operator-driven.
package limits

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind names what is metered.
type Kind string

// Rule is at most Cap in any Window.
type Rule struct {
	Cap    int
	Window time.Duration
}

// Valid reports whether r can be enforced (Cap ≥ 1, Window ≥ 1 s).
func (r Rule) Valid() bool { return r.Cap >= 1 && r.Window >= time.Second }

// Unlimited is a cap no count reaches: Record counts with it.
const unlimited = math.MaxInt32

// Check is one rule applied to one key. Take counts the call (once per
// kind and key, whatever the number of its rules); a Check without Take
// only reads the count.
type Check struct {
	Kind Kind
	Key  []byte
	Rule Rule
	Take bool
}

// ErrLimited is what every *LimitedError matches.
var ErrLimited = errors.New("rate limited")

// LimitedError refuses a take: RetryAfter is how long until every refusing
// rule has room.
type LimitedError struct{ RetryAfter time.Duration }

func (e *LimitedError) Error() string {
	return fmt.Sprintf("rate limited, retry after %s", e.RetryAfter)
}

// Is lets errors.Is(err, ErrLimited) match.
func (e *LimitedError) Is(target error) bool { return target == ErrLimited }

// Seconds is RetryAfter in whole seconds, rounded up, at least 1.
func (e *LimitedError) Seconds() int {
	return max(1, int((e.RetryAfter+time.Second-1)/time.Second))
}

// Limiter meters in Postgres.
type Limiter struct{ pool *pgxpool.Pool }

// New returns a Limiter over pool (migrated to 013).
func New(pool *pgxpool.Pool) (*Limiter, error) {
	if pool == nil {
		return nil, errors.New("limits: New needs a pool")
	}
	return &Limiter{pool: pool}, nil
}

const takeSQL = `SELECT limits_take($1, $2, $3, $4, $5, $6)`

// Take applies checks at now in one round trip. Errors: *LimitedError
// (nothing was counted), a database error.
func (l *Limiter) Take(ctx context.Context, now time.Time, checks ...Check) error {
	if len(checks) == 0 {
		return nil
	}
	n := len(checks)
	kinds, keys, takes := make([]string, n), make([][]byte, n), make([]bool, n)
	caps, wins := make([]int32, n), make([]time.Duration, n)
	for i, c := range checks {
		if !c.Rule.Valid() || len(c.Key) == 0 || c.Kind == "" {
			return fmt.Errorf("limits: invalid check of %q (cap %d, window %s)", c.Kind, c.Rule.Cap, c.Rule.Window)
		}
		kinds[i], keys[i], takes[i] = string(c.Kind), c.Key, c.Take
		caps[i], wins[i] = int32(min(c.Rule.Cap, unlimited)), c.Rule.Window
	}
	var wait *float64
	if err := l.pool.QueryRow(ctx, takeSQL, now, kinds, keys, takes, caps, wins).Scan(&wait); err != nil {
		return fmt.Errorf("limits: take: %w", err)
	}
	if wait != nil {
		return &LimitedError{RetryAfter: time.Duration(*wait * float64(time.Second))}
	}
	return nil
}

// Record counts one instant at now for each (kind, key) without a limit
// (what the outside world answered: a mismatch), kept for window.
func (l *Limiter) Record(ctx context.Context, now time.Time, window time.Duration, kind Kind, keys ...[]byte) error {
	checks := make([]Check, 0, len(keys))
	for _, k := range keys {
		if len(k) > 0 {
			checks = append(checks, Check{Kind: kind, Key: k, Rule: Rule{Cap: unlimited, Window: window}, Take: true})
		}
	}
	return l.Take(ctx, now, checks...)
}

// Release gives back one instant taken at `at` for (kind, key): the take
// did not reach the outside world, or should not count.
func (l *Limiter) Release(ctx context.Context, at time.Time, kind Kind, key []byte) error {
	_, err := l.pool.Exec(ctx, releaseSQL, string(kind), key, at)
	if err != nil {
		return fmt.Errorf("limits: release: %w", err)
	}
	return nil
}

// releaseSQL removes one occurrence of $3 (two takes in one microsecond
// are two instants).
const releaseSQL = `UPDATE limit_events
	SET times = times[:array_position(times, $3::timestamptz) - 1] || times[array_position(times, $3::timestamptz) + 1:]
	WHERE kind = $1 AND key = $2 AND $3::timestamptz = ANY (times)`

// DeleteExpired removes rows whose instants have all left their windows,
// and returns how many.
func (l *Limiter) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	tag, err := l.pool.Exec(ctx, `DELETE FROM limit_events WHERE expires_at < $1`, now)
	if err != nil {
		return 0, fmt.Errorf("limits: delete expired: %w", err)
	}
	return tag.RowsAffected(), nil
}
