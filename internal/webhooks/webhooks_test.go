package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// env is one test's outbox over the package's real Postgres, SoftHSM and
// Vault, with a River queue of its own, so that parallel tests never work
// each other's jobs.
type env struct {
	pool  *pgxpool.Pool
	vault *vaultkeys.Vault
	clock *clock.Fake
	svc   *webhooks.Service
	queue string
}

func newVault(t testing.TB, pool *pgxpool.Pool) *vaultkeys.Vault {
	t.Helper()
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: testenv.HSM(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// newEnv starts a River client working the env's queue with a
// DeliverWorker configured by wc (fast backoff and private networks allowed
// unless wc says otherwise). With work false the client only inserts, so
// jobs stay where Emit put them.
func newEnv(t testing.TB, work bool, wc func(*webhooks.WorkerConfig)) *env {
	t.Helper()
	e := &env{
		pool:  testenv.Pool(t),
		clock: clock.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)),
		queue: strings.ReplaceAll(ids.New("wh"), "_", "-"),
	}
	e.vault = newVault(t, e.pool)
	var rc *river.Client[pgx.Tx]
	if work {
		rc = e.startWorker(t, 4, wc)
	} else {
		var err error
		if rc, err = river.NewClient(riverpgxv5.New(e.pool), &river.Config{Logger: slog.New(slog.DiscardHandler)}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	e.svc, err = webhooks.New(webhooks.Config{Pool: e.pool, Vault: e.vault, Jobs: rc, Queue: e.queue, Clock: e.clock,
		AllowPrivateNetworks: true}) // loopback receivers; address_test.go checks the refusals
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startWorker starts a River client working the env's queue with up to
// workers DeliverWorkers configured by wc (see newEnv), stopped at cleanup.
func (e *env) startWorker(t testing.TB, workers int, wc func(*webhooks.WorkerConfig)) *river.Client[pgx.Tx] {
	t.Helper()
	cfg := webhooks.WorkerConfig{
		Pool: e.pool, Vault: e.vault, Clock: e.clock, AllowPrivateNetworks: true,
		Backoff: webhooks.Backoff{Base: 10 * time.Millisecond, Max: 40 * time.Millisecond},
	}
	if wc != nil {
		wc(&cfg)
	}
	w, err := webhooks.NewDeliverWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := &river.Config{Logger: slog.New(slog.DiscardHandler), Workers: river.NewWorkers(),
		Queues: map[string]river.QueueConfig{e.queue: {MaxWorkers: workers}}}
	river.AddWorker(rcfg.Workers, w)
	rcfg.FetchCooldown, rcfg.FetchPollInterval = 5*time.Millisecond, 20*time.Millisecond
	rc, err := river.NewClient(riverpgxv5.New(e.pool), rcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rc.Stop(ctx)
	})
	return rc
}

func newMerchant(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	id := ids.New("mch")
	if _, err := pool.Exec(context.Background(),
		`INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash) VALUES ($1, 'test', '{bind}', $2, 'x')`,
		id, ids.New("cli")); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) emit(t *testing.T, merchant, typ string, data any) webhooks.Event {
	t.Helper()
	var ev webhooks.Event
	err := db.InTx(context.Background(), e.pool, func(tx pgx.Tx) error {
		var err error
		ev, err = e.svc.Emit(context.Background(), tx, merchant, typ, data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *env) setEndpoint(t testing.TB, merchant, url string, events []string) string {
	t.Helper()
	ep, err := e.svc.SetEndpoint(context.Background(), merchant, url, events)
	if err != nil {
		t.Fatal(err)
	}
	return ep.Secret
}

// jobs returns the delivery jobs that carry an event.
func jobs(t *testing.T, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, eventID string) []rivertype.JobRow {
	t.Helper()
	rows, err := q.Query(context.Background(),
		`SELECT queue, state, attempt, max_attempts, args FROM river_job WHERE kind = 'webhook_deliver' AND args->'event_ids' ? $1`, eventID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rivertype.JobRow, error) {
		var j rivertype.JobRow
		err := r.Scan(&j.Queue, &j.State, &j.Attempt, &j.MaxAttempts, &j.EncodedArgs)
		return j, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond every 10ms until it holds, or fails after 30s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time // real time of arrival
}

// receiver is a merchant's endpoint: it answers the n-th request (from 1)
// with status(n) and keeps every request.
type receiver struct {
	url    string
	mu     sync.Mutex
	got    []received
	status func(n int) int
	// answer, if set, answers by the request's body instead of status;
	// -1 drops the connection without an answer.
	answer func(body []byte) int
}

func newReceiver(t testing.TB, status func(n int) int) *receiver {
	t.Helper()
	r := &receiver{status: status}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{header: req.Header.Clone(), body: body, at: time.Now()})
		n := len(r.got)
		answer := r.answer
		r.mu.Unlock()
		status := r.status(n)
		if answer != nil {
			status = answer(body)
		}
		if status == -1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hooks/quickpay"
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func always(status int) func(int) int { return func(int) int { return status } }

// independentVerify re-implements the documented algorithm without the
// package's code: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
func independentVerify(t *testing.T, secret, header string, body []byte) (unix int64) {
	t.Helper()
	var ts, v1 string
	for _, kv := range strings.Split(header, ",") {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "." + string(body)))
	if want := hex.EncodeToString(m.Sum(nil)); v1 != want {
		t.Errorf("v1 = %q, independent HMAC = %q", v1, want)
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Errorf("t = %q is not unix seconds", ts)
	}
	return n
}

type delivery struct {
	Attempt    int
	StatusCode *int
	Error      *string
	DurationMS int
	URL        string
}

func deliveries(t *testing.T, pool *pgxpool.Pool, eventID string) []delivery {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT attempt, status_code, error, duration_ms, url FROM webhook_deliveries WHERE event_id = $1 ORDER BY attempt, id`, eventID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[delivery])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func jobState(t *testing.T, pool *pgxpool.Pool, eventID string) rivertype.JobState {
	t.Helper()
	js := jobs(t, pool, eventID)
	if len(js) != 1 {
		t.Fatalf("%d delivery jobs for %s, want 1", len(js), eventID)
	}
	return js[0].State
}

func TestDeliverySignedAndRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, nil)
	a, b := newMerchant(t, e.pool), newMerchant(t, e.pool)
	recvA, recvB := newReceiver(t, always(200)), newReceiver(t, always(200))
	secret := e.setEndpoint(t, a, recvA.url, nil)
	e.setEndpoint(t, b, recvB.url, nil)

	ev := e.emit(t, a, webhooks.EventChargeSucceeded, map[string]any{"charge_id": "chg_1", "amount": 1999, "currency": "CNY"})
	eventually(t, "the delivery job to complete", func() bool { return jobState(t, e.pool, ev.ID) == rivertype.JobStateCompleted })

	got := recvA.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	if n := len(recvB.requests()); n != 0 {
		t.Errorf("merchant B's endpoint got %d of A's events", n)
	}
	req := got[0]
	var payload struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt time.Time       `json:"created_at"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(req.body, &payload); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, req.body)
	}
	var data map[string]any
	_ = json.Unmarshal(payload.Data, &data)
	if payload.ID != ev.ID || payload.Type != webhooks.EventChargeSucceeded || !payload.CreatedAt.Equal(e.clock.Now()) ||
		data["charge_id"] != "chg_1" || data["amount"] != float64(1999) {
		t.Errorf("payload = %s, want event %s charge.succeeded at %s with its data", req.body, ev.ID, e.clock.Now())
	}
	if ct := req.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}

	sig := req.header.Get(webhooks.SignatureHeader)
	if ts := independentVerify(t, secret, sig, req.body); ts != e.clock.Now().Unix() {
		t.Errorf("signature t = %d, want the injected clock's %d", ts, e.clock.Now().Unix())
	}
	now := e.clock.Now()
	if err := webhooks.Verify(secret, sig, req.body, now, time.Minute); err != nil {
		t.Errorf("Verify: %v", err)
	}
	tampered := []byte(strings.Replace(string(req.body), "1999", "9999", 1))
	for name, tc := range map[string]struct {
		secret, header string
		body           []byte
		now            time.Time
		want           error
	}{
		"other secret":            {secret + "x", sig, req.body, now, webhooks.ErrSignatureMismatch},
		"tampered body":           {secret, sig, tampered, now, webhooks.ErrSignatureMismatch},
		"replayed 2 minutes late": {secret, sig, req.body, now.Add(2 * time.Minute), webhooks.ErrSignatureExpired},
		"no v1":                   {secret, "t=" + strconv.FormatInt(now.Unix(), 10), req.body, now, webhooks.ErrSignatureMalformed},
		"garbage":                 {secret, "sha256=abc", req.body, now, webhooks.ErrSignatureMalformed},
	} {
		if err := webhooks.Verify(tc.secret, tc.header, tc.body, tc.now, time.Minute); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}

	ds := deliveries(t, e.pool, ev.ID)
	if len(ds) != 1 || ds[0].Attempt != 1 || ds[0].StatusCode == nil || *ds[0].StatusCode != 200 ||
		ds[0].Error != nil || ds[0].URL != recvA.url || ds[0].DurationMS < 0 {
		t.Errorf("deliveries = %+v, want one attempt answered 200 at %s", ds, recvA.url)
	}
}

func TestSignAndVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_900_000_000, 0)
	body := []byte(`{"id":"evt_x"}`)
	h := webhooks.Sign("whsec_k", now, body)
	if independentVerify(t, "whsec_k", h, body) != now.Unix() {
		t.Errorf("Sign(%v) = %q: wrong t", now, h)
	}
	// A header carrying a second, stale v1 (a rotated secret) still verifies.
	if err := webhooks.Verify("whsec_k", h+",v1="+strings.Repeat("0", 64), body, now.Add(-4*time.Minute), 0); err != nil {
		t.Errorf("Verify with two v1 and the default tolerance: %v", err)
	}
	if err := webhooks.Verify("whsec_k", h, body, now.Add(6*time.Minute), 0); !errors.Is(err, webhooks.ErrSignatureExpired) {
		t.Errorf("6 min late with the default 5 min tolerance: %v", err)
	}
}

func TestFailingReceiverGetsTheEventOnRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, nil)
	m := newMerchant(t, e.pool)
	recv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	secret := e.setEndpoint(t, m, recv.url, []string{webhooks.EventMandateActivated})
	ev := e.emit(t, m, webhooks.EventMandateActivated, map[string]string{"mandate_id": "mdt_1"})
	eventually(t, "the delivery job to complete", func() bool { return jobState(t, e.pool, ev.ID) == rivertype.JobStateCompleted })

	got := recv.requests()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3 (500, 500, 200)", len(got))
	}
	for i, r := range got {
		var p struct{ ID string }
		if err := json.Unmarshal(r.body, &p); err != nil || p.ID != ev.ID {
			t.Errorf("request %d carries id %q (%v), want %s every time", i+1, p.ID, err, ev.ID)
		}
		if err := webhooks.Verify(secret, r.header.Get(webhooks.SignatureHeader), r.body, e.clock.Now(), time.Minute); err != nil {
			t.Errorf("request %d: %v", i+1, err)
		}
	}
	if summary, want := attempts(t, e.pool, ev.ID), []string{"1:500", "2:500", "3:200"}; !slices.Equal(summary, want) {
		t.Errorf("recorded attempts = %v, want %v", summary, want)
	}
	if js := jobs(t, e.pool, ev.ID); js[0].Attempt != 3 {
		t.Errorf("job attempts = %d, want 3", js[0].Attempt)
	}
	// The worker's configured backoff (tens of ms) ran the retries, not
	// River's default (1 s, then 16 s).
	if gap := got[2].at.Sub(got[1].at); gap > 10*time.Second {
		t.Errorf("second retry came %s after the first: the configured backoff was not used", gap)
	}
}

// emitBatch emits one event of each type for merchant in one EmitAll, so
// that one job carries them, and returns them in order.
func (e *env) emitBatch(t *testing.T, merchant string, types ...string) []webhooks.Event {
	t.Helper()
	ctx := context.Background()
	var pending []webhooks.Pending
	for i, typ := range types {
		pending = append(pending, webhooks.Pending{MerchantID: merchant, Type: typ, Data: map[string]int{"i": i}})
	}
	if err := db.InTx(ctx, e.pool, func(tx pgx.Tx) error { return e.svc.EmitAll(ctx, tx, pending) }); err != nil {
		t.Fatal(err)
	}
	evs, _, err := e.svc.ListEvents(ctx, merchant, "", 0)
	if err != nil || len(evs) != len(types) {
		t.Fatalf("listed %d events (%v), want %d", len(evs), err, len(types))
	}
	if js := jobs(t, e.pool, evs[0].ID); len(js) != 1 || js[0].MaxAttempts != webhooks.MaxAttempts {
		t.Fatalf("%d jobs carry the first event, want 1", len(js))
	}
	return evs
}

// attempts summarizes an event's recorded attempts as "n:status" or
// "n:error".
func attempts(t *testing.T, pool *pgxpool.Pool, eventID string) []string {
	t.Helper()
	var out []string
	for _, d := range deliveries(t, pool, eventID) {
		s := fmt.Sprintf("%d:", d.Attempt)
		if d.StatusCode != nil {
			s += strconv.Itoa(*d.StatusCode)
		} else if d.Error != nil {
			s += "error"
		}
		out = append(out, s)
	}
	return out
}

// bodyID is the event id a delivery carries.
func bodyID(body []byte) string {
	var p struct{ ID string }
	_ = json.Unmarshal(body, &p)
	return p.ID
}

// dataOf is the "i" of a delivered event's data, or -1.
func dataOf(body []byte) int {
	var p struct{ Data struct{ I *int } }
	if json.Unmarshal(body, &p) != nil || p.Data.I == nil {
		return -1
	}
	return *p.Data.I
}

func TestBatchRetrySendsOnlyWhatFailed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// fail is how the receiver fails the first delivery of event i (1:
		// the second of three).
		fail int
		// The requests in order, by event, and each event's attempts.
		wantOrder    []int
		wantAttempts [3][]string
	}{
		// A refusal does not hold back the events after it; the retry sends
		// only the refused one.
		{"answer 503", http.StatusServiceUnavailable, []int{0, 1, 2, 1},
			[3][]string{{"1:200"}, {"1:503", "2:200"}, {"1:200"}}},
		// A dropped connection ends the attempt: the third event waits for
		// the retry, which does not send the first again.
		{"connection dropped", -1, []int{0, 1, 1, 2},
			[3][]string{{"1:200"}, {"1:error", "2:200"}, {"2:200"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, true, nil)
			m := newMerchant(t, e.pool)
			var failed atomic.Bool
			recv := newReceiver(t, always(http.StatusOK))
			recv.mu.Lock()
			recv.answer = func(body []byte) int {
				if dataOf(body) == 1 && !failed.Swap(true) {
					return tc.fail
				}
				return http.StatusOK
			}
			recv.mu.Unlock()
			secret := e.setEndpoint(t, m, recv.url, nil)
			evs := e.emitBatch(t, m, webhooks.EventChargeSucceeded, webhooks.EventChargeFailed, webhooks.EventChargeRetryScheduled)
			eventually(t, "the delivery job to complete", func() bool { return jobState(t, e.pool, evs[0].ID) == rivertype.JobStateCompleted })

			var order []int
			for _, r := range recv.requests() {
				order = append(order, dataOf(r.body))
				i := dataOf(r.body)
				if i < 0 || bodyID(r.body) != evs[i].ID {
					t.Errorf("request carries %s, data i %d: not the batch's event", bodyID(r.body), i)
				}
				if err := webhooks.Verify(secret, r.header.Get(webhooks.SignatureHeader), r.body, e.clock.Now(), time.Minute); err != nil {
					t.Errorf("request for event %d: %v", i, err)
				}
			}
			if !slices.Equal(order, tc.wantOrder) {
				t.Errorf("receiver got events %v, want %v", order, tc.wantOrder)
			}
			for i, ev := range evs {
				if got := attempts(t, e.pool, ev.ID); !slices.Equal(got, tc.wantAttempts[i]) {
					t.Errorf("event %d: recorded attempts %v, want %v", i, got, tc.wantAttempts[i])
				}
			}
			if js := jobs(t, e.pool, evs[0].ID); js[0].Attempt != 2 {
				t.Errorf("job ran %d times, want 2", js[0].Attempt)
			}
		})
	}
}

func TestJobOutOfTimeContinuesInTheNextRun(t *testing.T) {
	t.Parallel()
	// Each run has less than one POST's Timeout: it sends one event, then
	// snoozes, and the next run takes the next event.
	e := newEnv(t, true, func(c *webhooks.WorkerConfig) { c.JobTimeout = 300 * time.Millisecond })
	m := newMerchant(t, e.pool)
	recv := newReceiver(t, always(http.StatusOK))
	e.setEndpoint(t, m, recv.url, nil)
	evs := e.emitBatch(t, m, webhooks.EventChargeSucceeded, webhooks.EventChargeFailed, webhooks.EventChargeRetryScheduled)
	eventually(t, "the delivery job to complete", func() bool { return jobState(t, e.pool, evs[0].ID) == rivertype.JobStateCompleted })

	var order []int
	for _, r := range recv.requests() {
		order = append(order, dataOf(r.body))
	}
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Errorf("receiver got events %v, want each once, in order", order)
	}
	for i, ev := range evs {
		if got := attempts(t, e.pool, ev.ID); !slices.Equal(got, []string{"1:200"}) {
			t.Errorf("event %d: recorded attempts %v, want [1:200]", i, got)
		}
	}
	var snoozes int
	if err := e.pool.QueryRow(context.Background(), `SELECT coalesce((metadata->>'snoozes')::int, 0) FROM river_job
		WHERE kind = 'webhook_deliver' AND args->'event_ids' ? $1`, evs[0].ID).Scan(&snoozes); err != nil {
		t.Fatal(err)
	}
	if js := jobs(t, e.pool, evs[0].ID); js[0].Attempt != 1 || snoozes != 2 {
		t.Errorf("job attempt %d after %d snoozes, want attempt 1 after 2 (snoozes are not attempts)", js[0].Attempt, snoozes)
	}
}

func TestDefaultClientRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, func(c *webhooks.WorkerConfig) { c.AllowPrivateNetworks = false })
	m := newMerchant(t, e.pool)
	recv := newReceiver(t, always(200))
	// https, so that the default client gets as far as the dial.
	e.setEndpoint(t, m, strings.Replace(recv.url, "http://", "https://", 1), nil)
	ev := e.emit(t, m, webhooks.EventCardUnbound, map[string]string{"card_id": "card_1"})
	eventually(t, "two failed attempts", func() bool { return len(deliveries(t, e.pool, ev.ID)) >= 2 })

	if n := len(recv.requests()); n != 0 {
		t.Errorf("a loopback receiver got %d requests through the default client", n)
	}
	d := deliveries(t, e.pool, ev.ID)[0]
	if d.StatusCode != nil || d.Error == nil || !strings.Contains(*d.Error, "non-public address") {
		t.Errorf("attempt = %+v, want an error naming the non-public address", d)
	}
}

func TestRetrySchedule(t *testing.T) {
	t.Parallel()
	b := webhooks.Backoff{Base: webhooks.DefaultBackoffBase, Max: webhooks.DefaultBackoffMax}
	for attempt, want := range map[int]time.Duration{
		1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 10: 256 * time.Minute,
		11: 6 * time.Hour, 21: 6 * time.Hour, 500: 6 * time.Hour,
	} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
	waits := func(attempts int) (d time.Duration) {
		for i := 1; i < attempts; i++ {
			d += b.Delay(i)
		}
		return d
	}
	if got := waits(webhooks.MaxAttempts); got < webhooks.RetryWindow || got != 74*time.Hour+31*time.Minute+30*time.Second {
		t.Errorf("MaxAttempts = %d spans %s, want 74h31m30s (≥ %s)", webhooks.MaxAttempts, got, webhooks.RetryWindow)
	}
	if got := waits(webhooks.MaxAttempts - 1); got >= webhooks.RetryWindow {
		t.Errorf("one attempt fewer already spans %s: MaxAttempts is more than needed", got)
	}
	if got := b.AttemptsFor(webhooks.RetryWindow); got != webhooks.MaxAttempts {
		t.Errorf("AttemptsFor(72h) = %d, MaxAttempts = %d", got, webhooks.MaxAttempts)
	}
	opts := webhooks.DeliverArgs{}.InsertOpts()
	if opts.MaxAttempts != webhooks.MaxAttempts || opts.Queue != webhooks.Queue {
		t.Errorf("InsertOpts = %+v", opts)
	}

	pool := testenv.Pool(t)
	w, err := webhooks.NewDeliverWorker(webhooks.WorkerConfig{Pool: pool, Vault: newVault(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	next := w.NextRetry(&river.Job[webhooks.DeliverArgs]{JobRow: &rivertype.JobRow{Attempt: 3}})
	if d := next.Sub(before); d < 2*time.Minute || d > 2*time.Minute+5*time.Second {
		t.Errorf("default worker retries attempt 3 after %s, want 2m", d)
	}
}

func TestEmitEnqueuesOnlyForSubscribedEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	some, all, none := newMerchant(t, e.pool), newMerchant(t, e.pool), newMerchant(t, e.pool)
	e.setEndpoint(t, some, "https://hooks.example.com/a", []string{webhooks.EventChargeSucceeded, webhooks.EventChargeFailed})
	e.setEndpoint(t, all, "https://hooks.example.com/b", nil)

	for _, tc := range []struct {
		merchant, typ string
		wantJob       bool
	}{
		{some, webhooks.EventChargeSucceeded, true},
		{some, webhooks.EventBindingBound, false},
		{all, webhooks.EventMandateCancelled, true},
		{none, webhooks.EventChargeSucceeded, false},
	} {
		ev := e.emit(t, tc.merchant, tc.typ, map[string]int{"n": 1})
		var stored string
		if err := e.pool.QueryRow(ctx, `SELECT type FROM events WHERE id = $1 AND merchant_id = $2`, ev.ID, tc.merchant).Scan(&stored); err != nil || stored != tc.typ {
			t.Errorf("%s event: stored type %q, %v", tc.typ, stored, err)
		}
		js := jobs(t, e.pool, ev.ID)
		switch {
		case !tc.wantJob && len(js) != 0:
			t.Errorf("%s for an endpoint not subscribed to it: %d jobs, want none", tc.typ, len(js))
		case tc.wantJob && len(js) != 1:
			t.Errorf("%s for a subscribed endpoint: %d jobs, want 1", tc.typ, len(js))
		case tc.wantJob:
			var args webhooks.DeliverArgs
			_ = json.Unmarshal(js[0].EncodedArgs, &args)
			if js[0].Queue != e.queue || js[0].MaxAttempts != webhooks.MaxAttempts || args.MerchantID != tc.merchant ||
				!slices.Equal(args.EventIDs, []string{ev.ID}) || args.EventID != "" {
				t.Errorf("job = queue %s, max_attempts %d, args %+v", js[0].Queue, js[0].MaxAttempts, args)
			}
		}
	}
}

func TestEmitInRolledBackTransactionLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	m := newMerchant(t, e.pool)
	e.setEndpoint(t, m, "https://hooks.example.com/", nil)
	errAbort := errors.New("the business change failed")
	var ev webhooks.Event
	err := db.InTx(ctx, e.pool, func(tx pgx.Tx) error {
		var err error
		if ev, err = e.svc.Emit(ctx, tx, m, webhooks.EventBindingFailed, map[string]string{"binding_id": "bnd_1"}); err != nil {
			return err
		}
		// Inside the transaction both exist…
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = $1`, ev.ID).Scan(&n); err != nil || n != 1 {
			t.Errorf("inside the transaction: %d events, %v", n, err)
		}
		if js := jobs(t, tx, ev.ID); len(js) != 1 {
			t.Errorf("inside the transaction: %d jobs, want 1", len(js))
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("InTx = %v", err)
	}
	// …and after the rollback neither does.
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE merchant_id = $1`, m).Scan(&n); err != nil || n != 0 {
		t.Errorf("after rollback: %d events (%v), want 0", n, err)
	}
	if js := jobs(t, e.pool, ev.ID); len(js) != 0 {
		t.Errorf("after rollback: %d jobs, want 0", len(js))
	}
}

func TestEmitRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	m := newMerchant(t, e.pool)
	for name, tc := range map[string]struct {
		typ  string
		data any
	}{
		"unknown type":   {"charge.refunded", map[string]int{"n": 1}},
		"array data":     {webhooks.EventChargeFailed, []int{1}},
		"nil data":       {webhooks.EventChargeFailed, nil},
		"unmarshallable": {webhooks.EventChargeFailed, map[string]any{"f": func() {}}},
	} {
		err := db.InTx(context.Background(), e.pool, func(tx pgx.Tx) error {
			_, err := e.svc.Emit(context.Background(), tx, m, tc.typ, tc.data)
			return err
		})
		if err == nil {
			t.Errorf("%s: Emit accepted it", name)
		}
	}
	evs, _, err := e.svc.ListEvents(context.Background(), m, "", 0)
	if err != nil || len(evs) != 0 {
		t.Errorf("events after refused emits: %d, %v", len(evs), err)
	}
}

func TestEmitAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	someTypes := []string{webhooks.EventChargeSucceeded, webhooks.EventMandateActivated, webhooks.EventCardUnbound}
	// newMerchants returns a merchant whose endpoint takes every type, one
	// whose endpoint takes someTypes, and one without an endpoint.
	newMerchants := func(t *testing.T) (all, some, none string) {
		t.Helper()
		all, some, none = newMerchant(t, e.pool), newMerchant(t, e.pool), newMerchant(t, e.pool)
		e.setEndpoint(t, all, "https://hooks.example.com/all", nil)
		e.setEndpoint(t, some, "https://hooks.example.com/some", someTypes)
		return all, some, none
	}
	emitAll := func(pending []webhooks.Pending) error {
		return db.InTx(ctx, e.pool, func(tx pgx.Tx) error { return e.svc.EmitAll(ctx, tx, pending) })
	}
	// stored returns the merchants' events in seq order.
	stored := func(t *testing.T, merchants ...string) []webhooks.Event {
		t.Helper()
		rows, err := e.pool.Query(ctx, `SELECT id, merchant_id, type, created_at, data FROM events
			WHERE merchant_id = ANY ($1) ORDER BY seq`, merchants)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhooks.Event, error) {
			var ev webhooks.Event
			err := r.Scan(&ev.ID, &ev.MerchantID, &ev.Type, &ev.CreatedAt, &ev.Data)
			return ev, err
		})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	// deliveryJobs counts the delivery jobs of the merchants' events.
	deliveryJobs := func(t *testing.T, merchants ...string) int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM river_job
			WHERE kind = 'webhook_deliver' AND args->>'merchant_id' = ANY ($1)`, merchants).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// dataI is an event's {"i": n}, or -1.
	dataI := func(ev webhooks.Event) int {
		var d map[string]int
		if err := json.Unmarshal(ev.Data, &d); err != nil || len(d) != 1 {
			return -1
		}
		if i, ok := d["i"]; ok {
			return i
		}
		return -1
	}

	t.Run("mixed batch kept in order, delivered only where subscribed", func(t *testing.T) {
		all, some, none := newMerchants(t)
		merchants := []string{all, some, none}
		// Every merchant gets every type once, the merchants interleaved;
		// item i carries {"i": i}.
		var batch []webhooks.Pending
		for i := range 3 * len(webhooks.EventTypes()) {
			batch = append(batch, webhooks.Pending{
				MerchantID: merchants[i%3], Type: webhooks.EventTypes()[i/3], Data: map[string]int{"i": i},
			})
		}
		err := db.InTx(ctx, e.pool, func(tx pgx.Tx) error {
			if err := e.svc.EmitAll(ctx, tx, batch); err != nil {
				return err
			}
			// Until commit, each merchant's feed lock is held shared.
			for _, m := range merchants {
				var held bool
				if err := tx.QueryRow(ctx, `
					SELECT EXISTS (SELECT 1 FROM pg_locks
					                WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
					                  AND pid = pg_backend_pid() AND objsubid = 1
					                  AND objid::bigint = (hashtext('quickpay.events.' || $1)::bigint & 4294967295))`,
					m).Scan(&held); err != nil {
					return err
				}
				if !held {
					t.Errorf("merchant %s: feed lock not held shared by the emitting transaction", m)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		// The whole batch is stored and numbered in input order.
		evs := stored(t, merchants...)
		if len(evs) != len(batch) {
			t.Fatalf("%d events stored for %d pending", len(evs), len(batch))
		}
		seen := map[string]bool{}
		want := map[string][]string{} // event ids by merchant, in input order
		for i, ev := range evs {
			if dataI(ev) != i || ev.MerchantID != batch[i].MerchantID || ev.Type != batch[i].Type || !ev.CreatedAt.Equal(e.clock.Now()) {
				t.Errorf("event %d by seq = %+v (data %s), want merchant %s, type %s, data {\"i\":%d}, created now",
					i, ev, ev.Data, batch[i].MerchantID, batch[i].Type, i)
			}
			if !ids.Valid("evt", ev.ID) || seen[ev.ID] {
				t.Errorf("event %d: id %q is not a fresh evt_ id", i, ev.ID)
			}
			seen[ev.ID] = true
			want[ev.MerchantID] = append(want[ev.MerchantID], ev.ID)
		}
		// Each merchant's feed lists exactly its own, in input order.
		for _, m := range merchants {
			got, more, err := e.svc.ListEvents(ctx, m, "", 0)
			if err != nil || more || len(want[m]) != len(webhooks.EventTypes()) || !slices.Equal(eventIDs(got), want[m]) {
				t.Errorf("feed of %s = %v more=%v (%v), want %v", m, eventIDs(got), more, err, want[m])
			}
		}

		// Each subscribed event in the one delivery job of its merchant,
		// which carries them in order; no job for the others.
		subscribed := 0
		carried := map[string][]string{} // merchant → the event ids its job carries
		for i, ev := range evs {
			wantJob := ev.MerchantID == all || ev.MerchantID == some && slices.Contains(someTypes, ev.Type)
			js := jobs(t, e.pool, ev.ID)
			switch {
			case !wantJob && len(js) != 0:
				t.Errorf("event %d (%s, merchant %s): %d delivery jobs, want none", i, ev.Type, ev.MerchantID, len(js))
			case wantJob && len(js) != 1:
				t.Errorf("event %d (%s, merchant %s): %d delivery jobs, want 1", i, ev.Type, ev.MerchantID, len(js))
			case wantJob:
				subscribed++
				var args webhooks.DeliverArgs
				_ = json.Unmarshal(js[0].EncodedArgs, &args)
				if js[0].Queue != e.queue || js[0].MaxAttempts != webhooks.MaxAttempts || js[0].State != rivertype.JobStateAvailable ||
					args.MerchantID != ev.MerchantID {
					t.Errorf("event %d: job = queue %s, max_attempts %d, state %s, args %+v",
						i, js[0].Queue, js[0].MaxAttempts, js[0].State, args)
				}
				carried[ev.MerchantID] = args.EventIDs
			}
		}
		if want := len(webhooks.EventTypes()) + len(someTypes); subscribed != want {
			t.Errorf("%d subscribed events have a job, want %d", subscribed, want)
		}
		for m, n := range map[string]int{all: len(webhooks.EventTypes()), some: len(someTypes)} {
			var wantIDs []string
			for _, ev := range evs {
				if ev.MerchantID == m && (m == all || slices.Contains(someTypes, ev.Type)) {
					wantIDs = append(wantIDs, ev.ID)
				}
			}
			if len(wantIDs) != n || !slices.Equal(carried[m], wantIDs) {
				t.Errorf("merchant %s's job carries %v, want its %d subscribed events in order %v", m, carried[m], n, wantIDs)
			}
		}
		if n := deliveryJobs(t, merchants...); n != 2 {
			t.Errorf("%d delivery jobs for the batch's merchants, want 2 (one per subscribed merchant)", n)
		}
	})

	t.Run("an invalid item anywhere stores nothing of the batch", func(t *testing.T) {
		all, some, none := newMerchants(t)
		valid := []webhooks.Pending{
			{MerchantID: all, Type: webhooks.EventChargeSucceeded, Data: map[string]int{"i": 1}},
			{MerchantID: some, Type: webhooks.EventChargeSucceeded, Data: map[string]int{"i": 2}},
			{MerchantID: none, Type: webhooks.EventChargeFailed, Data: map[string]int{"i": 3}},
			{MerchantID: all, Type: webhooks.EventBindingBound, Data: map[string]int{"i": 4}},
		}
		for name, bad := range map[string]webhooks.Pending{
			"unknown type":   {MerchantID: some, Type: "charge.refunded", Data: map[string]int{"i": 0}},
			"array data":     {MerchantID: all, Type: webhooks.EventChargeFailed, Data: []int{1}},
			"nil data":       {MerchantID: all, Type: webhooks.EventChargeFailed, Data: nil},
			"string data":    {MerchantID: all, Type: webhooks.EventChargeFailed, Data: "{}"},
			"unmarshallable": {MerchantID: all, Type: webhooks.EventChargeFailed, Data: map[string]any{"f": func() {}}},
			// Refused by the database (foreign key), not by EmitAll's checks.
			"unknown merchant": {MerchantID: ids.New("mch"), Type: webhooks.EventChargeFailed, Data: map[string]int{"i": 0}},
		} {
			for _, at := range []int{0, 2, len(valid)} {
				batch := slices.Insert(slices.Clone(valid), at, bad)
				if err := emitAll(batch); err == nil {
					t.Errorf("%s at %d of %d: EmitAll accepted the batch", name, at, len(batch))
				}
				if evs := stored(t, all, some, none, bad.MerchantID); len(evs) != 0 {
					t.Errorf("%s at %d: %d events stored after the rollback, want 0", name, at, len(evs))
				}
				if n := deliveryJobs(t, all, some, none, bad.MerchantID); n != 0 {
					t.Errorf("%s at %d: %d delivery jobs after the rollback, want 0", name, at, n)
				}
			}
		}
		// The valid items alone are accepted, so the counts above could
		// have been non-zero.
		if err := emitAll(valid); err != nil {
			t.Fatalf("valid batch: %v", err)
		}
		evs := stored(t, all, some, none)
		if len(evs) != len(valid) || dataI(evs[0]) != 1 || dataI(evs[len(evs)-1]) != len(valid) {
			t.Errorf("valid batch: stored %v, want its %d events in order", eventIDs(evs), len(valid))
		}
		if n := deliveryJobs(t, all, some, none); n != 2 {
			t.Errorf("valid batch: %d delivery jobs, want 2 (all's two events, some's one)", n)
		}
	})

	t.Run("empty batch", func(t *testing.T) {
		// A snapshot transaction sees its own writes and nobody else's, so
		// the counts move only if EmitAll wrote something.
		count := func(tx pgx.Tx) (n int) {
			t.Helper()
			if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM river_job)`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		for name, pending := range map[string][]webhooks.Pending{"nil": nil, "empty": {}} {
			tx, err := e.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			before := count(tx)
			if err := e.svc.EmitAll(ctx, tx, pending); err != nil {
				t.Errorf("%s batch: %v, want no error", name, err)
			}
			if after := count(tx); after != before {
				t.Errorf("%s batch: %d events and jobs written, want none", name, after-before)
			}
			_ = tx.Rollback(ctx)
		}
	})
}

func eventIDs(evs []webhooks.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func TestListEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	a, b := newMerchant(t, e.pool), newMerchant(t, e.pool)
	var evA, evB []webhooks.Event
	for i := range 5 {
		evA = append(evA, e.emit(t, a, webhooks.EventChargeSucceeded, map[string]int{"i": i}))
		e.clock.Advance(time.Second)
		if i < 2 {
			evB = append(evB, e.emit(t, b, webhooks.EventChargeFailed, map[string]int{"i": i}))
		}
	}
	idsA := eventIDs(evA)

	type page struct {
		ids  []string
		more bool
	}
	list := func(m, after string, limit int) (page, error) {
		evs, more, err := e.svc.ListEvents(ctx, m, after, limit)
		return page{eventIDs(evs), more}, err
	}
	for _, tc := range []struct {
		name     string
		merchant string
		after    string
		limit    int
		want     page
	}{
		{"all, oldest first", a, "", 0, page{idsA, false}},
		{"first page", a, "", 2, page{idsA[:2], true}},
		{"second page", a, idsA[1], 2, page{idsA[2:4], true}},
		{"last page", a, idsA[3], 2, page{idsA[4:], false}},
		{"after the newest", a, idsA[4], 0, page{[]string{}, false}},
		{"B sees only its own", b, "", 0, page{eventIDs(evB), false}},
	} {
		got, err := list(tc.merchant, tc.after, tc.limit)
		if err != nil || !slices.Equal(got.ids, tc.want.ids) || got.more != tc.want.more {
			t.Errorf("%s: got %v more=%v (%v), want %v more=%v", tc.name, got.ids, got.more, err, tc.want.ids, tc.want.more)
		}
	}
	evs, _, err := e.svc.ListEvents(ctx, a, idsA[2], 1)
	if err != nil || len(evs) != 1 || evs[0].Type != webhooks.EventChargeSucceeded ||
		string(evs[0].Data) != `{"i": 3}` || !evs[0].CreatedAt.Equal(evA[3].CreatedAt) {
		t.Errorf("event 4 = %+v (%v), want its type, data and time", evs, err)
	}
	for name, after := range map[string]string{
		"another merchant's event": idsA[0],
		"unknown event id":         ids.New("evt"),
		"not an event id":          "chg_whatever",
	} {
		if _, _, err := e.svc.ListEvents(ctx, b, after, 0); !errors.Is(err, webhooks.ErrNotFound) {
			t.Errorf("%s as after: %v, want ErrNotFound", name, err)
		}
	}
}

func TestListEventsLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	m := newMerchant(t, e.pool)
	emitMany(t, e, m, webhooks.EventChargeSucceeded, webhooks.MaxListLimit+1)
	for limit, want := range map[int]int{0: webhooks.DefaultListLimit, 10_000: webhooks.MaxListLimit, 7: 7} {
		evs, more, err := e.svc.ListEvents(ctx, m, "", limit)
		if err != nil || len(evs) != want || !more {
			t.Errorf("limit %d: %d events, more=%v (%v), want %d and more", limit, len(evs), more, err, want)
		}
	}
}

// TestListEventsWaitsForOpenEmitters shows why ListEvents locks: an event
// whose transaction is still open when a later one commits must not be
// skipped by a reader paging with after.
func TestListEventsWaitsForOpenEmitters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	m := newMerchant(t, e.pool)

	slow, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	first, err := e.svc.Emit(ctx, slow, m, webhooks.EventChargeSucceeded, map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	second := e.emit(t, m, webhooks.EventChargeSucceeded, map[string]int{"n": 2}) // committed, numbered after first

	type result struct {
		ids []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, _, err := e.svc.ListEvents(ctx, m, "", 0)
		done <- result{eventIDs(evs), err}
	}()
	// Commit the slow transaction only once the reader has either finished
	// (and so read without it) or is waiting on the merchant's feed lock.
	eventually(t, "the reader to finish or wait", func() bool {
		if len(done) > 0 {
			return true
		}
		var waiting bool
		if err := e.pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_locks
			                WHERE locktype = 'advisory' AND NOT granted
			                  AND objid::bigint = (hashtext('quickpay.events.' || $1)::bigint & 4294967295))`,
			m).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ListEvents did not return after the emitter committed")
	}
	if want := []string{first.ID, second.ID}; r.err != nil || !slices.Equal(r.ids, want) {
		t.Errorf("ListEvents = %v (%v), want %v: an open emitter's event was skipped", r.ids, r.err, want)
	}
}

func TestSetEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	ctx := context.Background()
	m, other := newMerchant(t, e.pool), newMerchant(t, e.pool)

	for name, tc := range map[string]struct {
		url    string
		events []string
		field  string
	}{
		"empty url":          {"", nil, "url"},
		"ftp url":            {"ftp://hooks.example.com/", nil, "url"},
		"relative url":       {"/hooks", nil, "url"},
		"no host":            {"https:///hooks", nil, "url"},
		"credentials in url": {"https://user:pw@hooks.example.com/", nil, "url"},
		"too long":           {"https://hooks.example.com/" + strings.Repeat("a", webhooks.MaxURLLength), nil, "url"},
		"empty events":       {"https://hooks.example.com/", []string{}, "events"},
		"unknown event":      {"https://hooks.example.com/", []string{webhooks.EventChargeFailed, "charge.refunded"}, "events"},
	} {
		_, err := e.svc.SetEndpoint(ctx, m, tc.url, tc.events)
		var fe *webhooks.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, webhooks.ErrInvalid) {
			t.Errorf("%s: err = %v, want a field error on %s", name, err, tc.field)
		}
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1`, m).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused endpoints stored: %d, %v", n, err)
	}

	ep, err := e.svc.SetEndpoint(ctx, m, "http://hooks.example.com/q?x=1",
		[]string{webhooks.EventChargeFailed, webhooks.EventBindingBound, webhooks.EventChargeFailed})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{webhooks.EventBindingBound, webhooks.EventChargeFailed}; !slices.Equal(ep.Events, want) {
		t.Errorf("events = %v, want %v (sorted, deduplicated)", ep.Events, want)
	}
	ep2, err := e.svc.SetEndpoint(ctx, m, "https://hooks.example.com/v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(slices.Values(webhooks.EventTypes())); !slices.Equal(ep2.Events, want) {
		t.Errorf("events without a filter = %v, want every type, sorted: %v", ep2.Events, want)
	}
	for _, s := range []string{ep.Secret, ep2.Secret} {
		if !strings.HasPrefix(s, webhooks.SecretPrefix) || len(s) != len(webhooks.SecretPrefix)+64 {
			t.Errorf("secret %q is not whsec_ and 32 random bytes in hex", s)
		}
	}
	if ep.Secret == ep2.Secret {
		t.Error("setting the endpoint again kept the old secret")
	}

	var url string
	var events []string
	var ct []byte
	if err := e.pool.QueryRow(ctx, `SELECT url, events, secret_ct FROM webhook_endpoints WHERE merchant_id = $1`, m).
		Scan(&url, &events, &ct); err != nil {
		t.Fatal(err)
	}
	if url != "https://hooks.example.com/v2" || events != nil {
		t.Errorf("stored %q %v, want the second URL and NULL events", url, events)
	}
	if strings.Contains(string(ct), ep2.Secret) || strings.Contains(string(ct), ep2.Secret[len(webhooks.SecretPrefix):]) {
		t.Error("secret_ct holds the secret in clear")
	}
	access := vaultkeys.Access{MerchantID: m, Actor: "test", Reason: "test"}
	pt, err := e.vault.Decrypt(ctx, ct, []byte("webhook_endpoint|"+m), access)
	if err != nil || string(pt) != ep2.Secret {
		t.Errorf("decrypt with the merchant's AAD = %v, want the secret", err)
	}
	if _, err := e.vault.Decrypt(ctx, ct, []byte("webhook_endpoint|"+other), access); !errors.Is(err, vaultkeys.ErrDecrypt) {
		t.Errorf("decrypt under another merchant's AAD = %v, want ErrDecrypt", err)
	}
	if col := webhooks.EncryptedColumn(); col.Table != "webhook_endpoints" || col.Ciphertext != "secret_ct" ||
		string(col.AAD(m, m)) != "webhook_endpoint|"+m {
		t.Errorf("EncryptedColumn = %+v: does not rebuild the AAD the secret was sealed with", col)
	}
}
