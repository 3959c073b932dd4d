package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Queue is the default River queue of deliveries. It is separate so that
// slow receivers cannot hold up charge workers.
const Queue = "webhooks"

// Retry schedule. The default backoff waits 30 s after the first failed attempt
// and doubles each time up to 6 h: 30 s, 1, 2, 4, 8, 16, 32, 64, 128, 256
// min (the first ten retries, 8 h 31 min 30 s in all), then every 6 h.
// Eleven more 6-hour waits reach 74 h 31 min 30 s after the first attempt,
// so MaxAttempts = 1 + 10 + 11 = 22 is the fewest attempts that keep
// retrying for RetryWindow (one fewer would stop at 68 h 31 min 30 s).
const (
	RetryWindow = 72 * time.Hour
	MaxAttempts = 22
)

// The production retry schedule (WorkerConfig.Backoff's default).
const (
	DefaultBackoffBase = 30 * time.Second
	DefaultBackoffMax  = 6 * time.Hour
)

// Backoff is an exponential retry schedule.
type Backoff struct {
	Base time.Duration // wait after the first failed attempt
	Max  time.Duration // cap on any wait
}

// Delay is the wait after failed attempt number attempt (1-based):
// Base·2^(attempt−1), capped at Max.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Base
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// AttemptsFor is the fewest attempts whose waits add up to at least window.
func (b Backoff) AttemptsFor(window time.Duration) int {
	n, total := 1, time.Duration(0)
	for total < window {
		total += b.Delay(n)
		n++
	}
	return n
}

// MaxDeliverBatch bounds the events of one delivery job.
const MaxDeliverBatch = 50

// DeliverArgs is the River job delivering events of one merchant, in order.
type DeliverArgs struct {
	MerchantID string   `json:"merchant_id"`
	EventIDs   []string `json:"event_ids,omitempty"`
	// EventID is the one event of a job enqueued before jobs carried
	// several; such jobs are still delivered.
	EventID string `json:"event_id,omitempty"`
	// AfterDelivery (Redeliver's jobs) is the id of the last
	// webhook_deliveries row of the events when the job was enqueued: only
	// a 2xx answer recorded after it counts as delivered.
	AfterDelivery int64 `json:"after_delivery,omitempty"`
}

// eventIDs are the job's events.
func (a DeliverArgs) eventIDs() []string {
	if a.EventID != "" {
		return append([]string{a.EventID}, a.EventIDs...)
	}
	return a.EventIDs
}

// Kind implements river.JobArgs.
func (DeliverArgs) Kind() string { return "webhook_deliver" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: MaxAttempts}
}

// WorkerConfig configures a DeliverWorker.
type WorkerConfig struct {
	Pool  *pgxpool.Pool // Required.
	Vault Sealer        // Required: decrypts endpoint secrets.
	// Clock gives the signature's timestamp and the attempt's recorded
	// time. Defaults to clock.System{}.
	Clock clock.Clock
	// Timeout bounds each POST, from dial to the last byte read. Defaults to 10s.
	Timeout time.Duration
	// JobTimeout bounds one run of a delivery job. A run that has less than
	// Timeout (and 5 s) left stops before its next event, having sent at
	// least one, and snoozes: River runs it again at once, without counting
	// an attempt. Keep it below River's RescueStuckJobsAfter, or a slow
	// receiver's job is rescued while it runs. Defaults to 4 min.
	JobTimeout time.Duration
	// Backoff is the retry schedule. Defaults to DefaultBackoffBase doubling
	// up to DefaultBackoffMax; anything
	// faster ends retries before RetryWindow (tests only).
	Backoff Backoff
	// Client sends the POSTs. Defaults to a client that refuses non-public
	// addresses (unless AllowPrivateNetworks), ignores proxy settings and
	// does not follow redirects. A Client given here is used as is.
	Client *http.Client
	// AllowPrivateNetworks lets the default client reach loopback and
	// private addresses: for dev stacks and tests, never production.
	AllowPrivateNetworks bool
	// WrapTransport, if set, wraps the default client's transport (its
	// address and scheme checks stay underneath): tracing. Unused with
	// Client.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DeliverWorker delivers events (River worker for DeliverArgs).
type DeliverWorker struct {
	river.WorkerDefaults[DeliverArgs]
	cfg WorkerConfig
}

// NewDeliverWorker returns a worker; register it with river.AddWorker.
func NewDeliverWorker(cfg WorkerConfig) (*DeliverWorker, error) {
	if cfg.Pool == nil || cfg.Vault == nil {
		return nil, errors.New("webhooks: WorkerConfig needs Pool and Vault")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 4 * time.Minute
	}
	if cfg.Timeout < 0 || cfg.JobTimeout < 0 {
		return nil, errors.New("webhooks: Timeout and JobTimeout must not be negative")
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMax}
	}
	if cfg.Backoff.Base <= 0 || cfg.Backoff.Max < cfg.Backoff.Base {
		return nil, errors.New("webhooks: Backoff needs 0 < Base <= Max")
	}
	if cfg.Client == nil {
		cfg.Client = newClient(cfg.AllowPrivateNetworks)
		if cfg.WrapTransport != nil {
			cfg.Client.Transport = cfg.WrapTransport(cfg.Client.Transport)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &DeliverWorker{cfg: cfg}, nil
}

// NextRetry implements the retry schedule (River's clock is the real one).
func (w *DeliverWorker) NextRetry(job *river.Job[DeliverArgs]) time.Time {
	return time.Now().Add(w.cfg.Backoff.Delay(job.Attempt))
}

// Timeout bounds one run (WorkerConfig.JobTimeout).
func (w *DeliverWorker) Timeout(*river.Job[DeliverArgs]) time.Duration { return w.cfg.JobTimeout }

// Work delivers the job's events that have no 2xx answer recorded yet to
// the merchant's endpoint as it is configured now, in order, and records
// each attempt. It returns an error, so River retries, if any event got a
// transport error, a timeout or an answer other than 2xx; a transport
// error or timeout also leaves the events after it for the retry. A run
// short of time for another POST leaves the rest to the next
// (WorkerConfig.JobTimeout).
func (w *DeliverWorker) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	a := job.Args
	name := a.MerchantID + " events"
	if ids := a.eventIDs(); len(ids) == 1 {
		name = ids[0]
	}
	evs, found, err := undelivered(ctx, w.cfg.Pool, a.MerchantID, a.eventIDs(), a.AfterDelivery)
	if err != nil {
		return fmt.Errorf("deliver %s: %w", name, err)
	}
	if found == 0 {
		return river.JobCancel(fmt.Errorf("deliver %s: event not found", name))
	}
	if len(evs) == 0 {
		return nil // all delivered by an earlier attempt
	}
	ep, err := loadEndpoint(ctx, w.cfg.Pool, a.MerchantID)
	if errors.Is(err, ErrNotFound) {
		err, ep = nil, endpointRow{events: []string{}} // removed since: subscribes to nothing
	}
	if err != nil {
		return fmt.Errorf("deliver %s: %w", name, err)
	}
	var secret []byte
	var failed []error
	sent := 0
	for _, ev := range evs {
		if !ep.subscribes(ev.Type) {
			// Removed or unsubscribed since the event: nothing to deliver.
			w.cfg.Logger.InfoContext(ctx, "webhook not delivered: no subscribed endpoint",
				"event_id", ev.ID, "merchant_id", ev.MerchantID, "type", ev.Type)
			continue
		}
		if dl, ok := ctx.Deadline(); ok && sent > 0 && time.Until(dl) < w.cfg.Timeout+5*time.Second {
			// Out of time for another POST: the rest go in the next run,
			// right away unless an event failed (then after the backoff).
			if len(failed) > 0 {
				return errors.Join(failed...)
			}
			return river.JobSnooze(0)
		}
		sent++
		if secret == nil {
			// Once per run, for its first event to send.
			secret, err = w.cfg.Vault.Decrypt(ctx, ep.secretCT, secretAAD(a.MerchantID), vaultkeys.Access{
				MerchantID: a.MerchantID, Actor: "worker:webhook_deliver", Subject: ev.ID, Reason: "sign webhook",
			})
			if err != nil {
				return fmt.Errorf("deliver %s: endpoint secret: %w", ev.ID, err)
			}
		}
		status, postErr := w.deliver(ctx, job.Attempt, ep, string(secret), ev)
		switch {
		case postErr != nil && !errors.Is(postErr, errRefused):
			return errors.Join(append(failed, fmt.Errorf("deliver %s: %w", ev.ID, postErr))...)
		case postErr != nil:
			failed = append(failed, fmt.Errorf("deliver %s: endpoint answered %d", ev.ID, status))
		}
	}
	return errors.Join(failed...)
}

// errRefused: the endpoint answered, with a status other than 2xx.
var errRefused = errors.New("endpoint refused the event")

// deliver POSTs one event, signed with secret, and records the attempt. It
// returns the answer's status and errRefused for one other than 2xx, or the
// transport error.
func (w *DeliverWorker) deliver(ctx context.Context, attemptNo int, ep endpointRow, secret string, ev Event) (int, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return 0, err
	}
	status, elapsed, postErr := w.post(ctx, ep.url, Sign(secret, w.cfg.Clock.Now(), body), body)
	rec := attempt{merchantID: ev.MerchantID, eventID: ev.ID, url: ep.url, n: attemptNo,
		duration: elapsed, at: w.cfg.Clock.Now()}
	if postErr != nil {
		msg := postErr.Error()
		if len(msg) > 500 {
			msg = msg[:500]
		}
		rec.errText = &msg
	} else {
		rec.statusCode = &status
	}
	if err := recordAttempt(ctx, w.cfg.Pool, rec); err != nil {
		return status, fmt.Errorf("record attempt: %w", err)
	}
	switch {
	case postErr != nil:
		return 0, postErr
	case status < 200 || status > 299:
		return status, errRefused
	}
	return status, nil
}

// post sends one delivery and returns the answer's status or the error.
func (w *DeliverWorker) post(ctx context.Context, target, signature string, body []byte) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "quickpay-webhooks/1")
	req.Header.Set(SignatureHeader, signature)
	start := time.Now()
	res, err := w.cfg.Client.Do(req)
	if err != nil {
		// net/http's *url.Error quotes the URL, whose path or query may
		// hold the merchant's secret; the error goes to logs, the job's
		// errors and trace spans: keep only what failed.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
		}
		return 0, time.Since(start), err
	}
	// Read a little of the answer so the connection can be reused; its
	// content is not kept.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	return res.StatusCode, time.Since(start), nil
}

// errNonPublic is the dial error for a refused address.
var errNonPublic = errors.New("webhook endpoint resolves to a non-public address")

func newClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		// Checked on the resolved address at connect time, so DNS cannot
		// point a public-looking name at an internal host.
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr()) {
				return errNonPublic
			}
			return nil
		}
	}
	var tr http.RoundTripper = &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if !allowPrivate {
		tr = httpsOnly{tr}
	}
	return &http.Client{
		Transport: tr,
		// A redirect is an answer other than 2xx: the merchant fixes the URL.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
