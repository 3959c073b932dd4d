package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// ordersArea serves POST /v1/orders (and /v1/refunds, a second path) with
// a handler the test chooses, counting executions, and GET /v1/orders.
type ordersArea struct {
	calls  atomic.Int64
	gets   atomic.Int64
	handle func(c echo.Context, n int64) error
}

func (a *ordersArea) Routes(v1 *echo.Group) {
	h := func(c echo.Context) error {
		var in struct {
			Amount int64 `json:"amount"`
		}
		// The handler reads the body again after the middleware did.
		if err := api.Bind(c, &in); err != nil {
			return err
		}
		return a.handle(c, a.calls.Add(1))
	}
	v1.POST("/orders", h)
	v1.POST("/refunds", h)
	v1.GET("/orders", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]int64{"gets": a.gets.Add(1)})
	})
}

func (a *ordersArea) Errors() map[error]*api.Error { return nil }

// created answers 201 with a media type of its own, so a replay that kept
// only a default Content-Type would show.
func created(c echo.Context, n int64) error {
	body := fmt.Sprintf(`{"id":"ord_%d","execution":%d}`, n, n)
	return c.Blob(http.StatusCreated, "application/vnd.quickpay.test+json; charset=utf-8", []byte(body))
}

type harness struct {
	url   string
	pool  *pgxpool.Pool
	vault *vaultkeys.Vault
	auth  *api.Auth
	clock *clock.Fake
	store *idempotency.Store
	area  *ordersArea
}

// newHarness serves api.New with the real token auth and the idempotency
// middleware over the package's real Postgres, SoftHSM and Vault, with a
// fake clock of the test's own for the idempotency store.
func newHarness(t *testing.T, cfg idempotency.Config, handle func(c echo.Context, n int64) error) *harness {
	t.Helper()
	h := &harness{pool: testenv.Pool(t), clock: clock.NewFake(time.Now()), area: &ordersArea{handle: handle}}
	hsm := testenv.HSM(t, 2)
	vault := newVaultOn(t, h.pool, hsm)
	ms, err := merchants.NewStore(merchants.Config{Pool: h.pool})
	if err != nil {
		t.Fatal(err)
	}
	if h.auth, err = api.NewAuth(api.AuthConfig{Merchants: ms, Vault: vault}); err != nil {
		t.Fatal(err)
	}
	cfg.Pool, cfg.Clock, cfg.Hasher = h.pool, h.clock, vault
	store, err := idempotency.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.store, h.vault = store, vault
	e := api.New(api.Config{
		Pool: h.pool, HSM: hsm, Secrets: testenv.Secrets(t),
		Auth:        h.auth,
		Idempotency: store.Middleware(api.MerchantID),
		Areas:       []api.Area{h.area},
	})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// tenant is a merchant and an access token for it.
type tenant struct{ id, token string }

// newMerchant makes a merchant (keys reference merchants) and issues it a
// real access token.
func (h *harness) newMerchant(t *testing.T) tenant {
	t.Helper()
	id := testenv.Merchant(t, h.pool)
	tok, err := h.auth.Issue(context.Background(), id, []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	return tenant{id: id, token: tok}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) replayed() bool { return r.header.Get(idempotency.HeaderReplayed) == "true" }

func (r response) errorCode(t *testing.T) (code, field string) {
	t.Helper()
	var b struct {
		Error struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body is not JSON: %v\n%s", err, r.body)
	}
	return b.Error.Code, b.Error.Field
}

// noKey is the key argument of a request without the header.
var noKey = (*string)(nil)

func key(k string) *string { return &k }

func (h *harness) do(t *testing.T, method, path string, m tenant, k *string, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, rd)
	if err != nil {
		t.Error(err)
		return response{}
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	req.Header.Set("Content-Type", "application/json")
	if k != nil {
		req.Header[idempotency.HeaderKey] = []string{*k}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return response{}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Errorf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (h *harness) post(t *testing.T, m tenant, k *string, body string) response {
	t.Helper()
	return h.do(t, http.MethodPost, "/v1/orders", m, k, body)
}

// sameAnswer fails unless got repeats want byte for byte.
func sameAnswer(t *testing.T, got, want response) {
	t.Helper()
	if got.status != want.status || !bytes.Equal(got.body, want.body) ||
		got.header.Get("Content-Type") != want.header.Get("Content-Type") {
		t.Errorf("answer = %d %q %s, want %d %q %s", got.status, got.header.Get("Content-Type"), got.body,
			want.status, want.header.Get("Content-Type"), want.body)
	}
}

func (h *harness) rows(t *testing.T, m tenant) int {
	t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM idempotency_keys WHERE merchant_id = $1`, m.id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSameKeySameRequestRunsOnceAndReplays(t *testing.T) {
	t.Parallel()

	t.Run("success answer replayed byte for byte", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, idempotency.Config{}, created)
		m := h.newMerchant(t)
		first := h.post(t, m, key("order-1"), `{"amount":100}`)
		if first.status != http.StatusCreated || first.replayed() {
			t.Fatalf("first answer = %d replayed=%v %s, want a fresh 201", first.status, first.replayed(), first.body)
		}
		for i := range 3 {
			again := h.post(t, m, key("order-1"), `{"amount":100}`)
			sameAnswer(t, again, first)
			if !again.replayed() {
				t.Errorf("repeat %d lacks %s: true", i, idempotency.HeaderReplayed)
			}
		}
		if n := h.area.calls.Load(); n != 1 {
			t.Errorf("handler ran %d times, want 1", n)
		}
	})

	t.Run("error answer replayed with the first request id", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, idempotency.Config{}, func(c echo.Context, n int64) error {
			return api.Validation(http.StatusUnprocessableEntity, "amount", "amount must be positive")
		})
		m := h.newMerchant(t)
		first := h.post(t, m, key("neg"), `{"amount":-1}`)
		again := h.post(t, m, key("neg"), `{"amount":-1}`)
		if first.status != http.StatusUnprocessableEntity {
			t.Fatalf("first status = %d, want 422: %s", first.status, first.body)
		}
		sameAnswer(t, again, first)
		firstID, againID := first.header.Get(echo.HeaderXRequestID), again.header.Get(echo.HeaderXRequestID)
		if firstID == againID || !bytes.Contains(again.body, []byte(firstID)) {
			t.Errorf("replayed body %s should carry the first request id %q, not %q", again.body, firstID, againID)
		}
		if n := h.area.calls.Load(); n != 1 || !again.replayed() {
			t.Errorf("handler ran %d times (want 1), replayed=%v", n, again.replayed())
		}
	})
}

func TestSameKeyDifferentRequestIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	if r := h.post(t, m, key("k"), `{"amount":100}`); r.status != http.StatusCreated {
		t.Fatalf("first status = %d: %s", r.status, r.body)
	}
	for name, r := range map[string]response{
		"other body":             h.post(t, m, key("k"), `{"amount":101}`),
		"same JSON, other bytes": h.post(t, m, key("k"), `{"amount": 100}`),
		"other path":             h.do(t, http.MethodPost, "/v1/refunds", m, key("k"), `{"amount":100}`),
	} {
		code, _ := r.errorCode(t)
		if r.status != http.StatusUnprocessableEntity || code != "idempotency_key_reused" {
			t.Errorf("%s: answer = %d %s, want 422 idempotency_key_reused", name, r.status, r.body)
		}
	}
	if n := h.area.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// blocking runs the first execution until release is closed, signalling
// entered; later executions answer at once.
func blocking() (handle func(echo.Context, int64) error, entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	return func(c echo.Context, n int64) error {
		if n == 1 {
			close(entered)
			<-release
		}
		return created(c, n)
	}, entered, release
}

// within receives from ch or fails the test after 30s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestInFlightKeyAnswers409(t *testing.T) {
	t.Parallel()
	handle, entered, release := blocking()
	h := newHarness(t, idempotency.Config{InFlightWait: 100 * time.Millisecond}, handle)
	m := h.newMerchant(t)

	firstC := make(chan response, 1)
	go func() { firstC <- h.post(t, m, key("slow"), `{"amount":1}`) }()
	within(t, entered, "the first execution to start")

	r := h.post(t, m, key("slow"), `{"amount":1}`)
	if code, _ := r.errorCode(t); r.status != http.StatusConflict || code != "idempotency_key_in_use" {
		t.Errorf("same request while in flight = %d %s, want 409 idempotency_key_in_use", r.status, r.body)
	}
	r = h.post(t, m, key("slow"), `{"amount":2}`)
	if code, _ := r.errorCode(t); r.status != http.StatusUnprocessableEntity || code != "idempotency_key_reused" {
		t.Errorf("other request while in flight = %d %s, want 422 idempotency_key_reused", r.status, r.body)
	}

	close(release)
	first := within(t, firstC, "the first answer")
	if first.status != http.StatusCreated {
		t.Fatalf("first answer = %d %s", first.status, first.body)
	}
	again := h.post(t, m, key("slow"), `{"amount":1}`)
	sameAnswer(t, again, first)
	if n := h.area.calls.Load(); n != 1 || !again.replayed() {
		t.Errorf("handler ran %d times (want 1); replayed=%v", n, again.replayed())
	}
}

func TestConcurrentIdenticalRequestsExecuteOnce(t *testing.T) {
	t.Parallel()
	const n = 50
	handle, _, release := blocking()
	h := newHarness(t, idempotency.Config{InFlightWait: time.Minute}, handle)
	var waiting atomic.Int64
	idempotency.SetOnWait(h.store, func() { waiting.Add(1) })
	m := h.newMerchant(t)

	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = h.post(t, m, key("burst"), `{"amount":5000}`) })
	}
	// Hold the one execution until every other request has found the key
	// in flight, so that all of them really overlap it.
	deadline := time.Now().Add(30 * time.Second)
	for waiting.Load() < n-1 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("only %d of %d requests waited on the in-flight key within 30s", waiting.Load(), n-1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()

	if c := h.area.calls.Load(); c != 1 {
		t.Errorf("handler ran %d times for %d identical requests, want 1", c, n)
	}
	replays := 0
	for i, a := range answers {
		if a.status != http.StatusCreated {
			t.Errorf("answer %d = %d %s, want 201", i, a.status, a.body)
		}
		sameAnswer(t, a, answers[0])
		if a.replayed() {
			replays++
		}
	}
	if replays != n-1 {
		t.Errorf("%d answers were replays, want %d", replays, n-1)
	}
}

func TestKeysArePerMerchant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, idempotency.Config{}, created)
	a, b := h.newMerchant(t), h.newMerchant(t)
	ra := h.post(t, a, key("shared-key"), `{"amount":1}`)
	rb := h.post(t, b, key("shared-key"), `{"amount":2}`)
	if ra.status != http.StatusCreated || rb.status != http.StatusCreated || rb.replayed() {
		t.Fatalf("A = %d, B = %d replayed=%v; want both fresh 201: %s", ra.status, rb.status, rb.replayed(), rb.body)
	}
	if bytes.Equal(ra.body, rb.body) {
		t.Errorf("B got A's answer %s", ra.body)
	}
	sameAnswer(t, h.post(t, b, key("shared-key"), `{"amount":2}`), rb)
	sameAnswer(t, h.post(t, a, key("shared-key"), `{"amount":1}`), ra)
	if n := h.area.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (once per merchant)", n)
	}
}

func TestWithoutKeyPassesThrough(t *testing.T) {
	t.Parallel()
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	r1 := h.post(t, m, noKey, `{"amount":1}`)
	r2 := h.post(t, m, noKey, `{"amount":1}`)
	if r1.status != http.StatusCreated || r2.status != http.StatusCreated || r2.replayed() || bytes.Equal(r1.body, r2.body) {
		t.Errorf("answers %d %s / %d %s: want two separate executions", r1.status, r1.body, r2.status, r2.body)
	}
	// A GET ignores the header.
	g1 := h.do(t, http.MethodGet, "/v1/orders", m, key("get-key"), "")
	g2 := h.do(t, http.MethodGet, "/v1/orders", m, key("get-key"), "")
	if g1.status != http.StatusOK || g2.replayed() || h.area.gets.Load() != 2 {
		t.Errorf("GETs with a key: %d %s, %s; gets = %d, want 2", g1.status, g1.body, g2.body, h.area.gets.Load())
	}
	if n := h.area.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
	if n := h.rows(t, m); n != 0 {
		t.Errorf("%d idempotency rows written for requests without a POST key", n)
	}
}

func TestKeyValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	for name, k := range map[string]string{
		"empty":         "",
		"256 chars":     strings.Repeat("k", 256),
		"not ASCII":     "订单-1",
		"control chars": "a\tb",
	} {
		r := h.post(t, m, key(k), `{"amount":1}`)
		code, field := r.errorCode(t)
		if r.status != http.StatusBadRequest || code != "validation_failed" || field != idempotency.HeaderKey {
			t.Errorf("%s: answer = %d %s, want 400 validation_failed on %s", name, r.status, r.body, idempotency.HeaderKey)
		}
	}
	if n := h.area.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for invalid keys", n)
	}
	if r := h.post(t, m, key(strings.Repeat("k", 255)), `{"amount":1}`); r.status != http.StatusCreated {
		t.Errorf("255-character key: %d %s, want 201", r.status, r.body)
	}
}

func TestRetryLaterAnswersAreNotSaved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		fail   func(echo.Context) error
		status int
	}{
		{"unknown error answers 500", func(echo.Context) error { return errors.New("database went away") }, 500},
		{"handler answers 503", func(echo.Context) error {
			return api.NewError(http.StatusServiceUnavailable, "bank_unavailable", "bank unavailable")
		}, 503},
		{"handler answers 429", func(echo.Context) error {
			return api.NewError(http.StatusTooManyRequests, "otp_resend_too_soon", "too soon")
		}, 429},
		{"handler panics", func(echo.Context) error { panic("handler bug") }, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, idempotency.Config{}, func(c echo.Context, n int64) error {
				if n == 1 {
					return tc.fail(c)
				}
				return created(c, n)
			})
			m := h.newMerchant(t)
			r := h.post(t, m, key("retry-me"), `{"amount":1}`)
			if r.status != tc.status {
				t.Fatalf("first answer = %d %s, want %d", r.status, r.body, tc.status)
			}
			if n := h.rows(t, m); n != 0 {
				t.Errorf("%d rows left after a %d answer, want the claim deleted", n, r.status)
			}
			r = h.post(t, m, key("retry-me"), `{"amount":1}`)
			if r.status != http.StatusCreated || r.replayed() {
				t.Errorf("retry = %d replayed=%v %s, want a fresh 201", r.status, r.replayed(), r.body)
			}
			again := h.post(t, m, key("retry-me"), `{"amount":1}`)
			sameAnswer(t, again, r)
			if n := h.area.calls.Load(); n != 2 || !again.replayed() {
				t.Errorf("handler ran %d times (want 2); third replayed=%v", n, again.replayed())
			}
		})
	}
}

func TestStaleInFlightIsTakenOver(t *testing.T) {
	t.Parallel()
	handle, entered, release := blocking()
	// The first execution stands for a process that died mid-request: its
	// claim stays in flight while the clock moves past StaleAfter.
	h := newHarness(t, idempotency.Config{InFlightWait: -1, StaleAfter: 5 * time.Minute}, handle)
	m := h.newMerchant(t)
	firstC := make(chan response, 1)
	go func() { firstC <- h.post(t, m, key("orphan"), `{"amount":1}`) }()
	within(t, entered, "the first execution to start")

	h.clock.Advance(5*time.Minute - time.Second)
	if r := h.post(t, m, key("orphan"), `{"amount":1}`); r.status != http.StatusConflict {
		t.Errorf("before StaleAfter: %d %s, want 409", r.status, r.body)
	}
	h.clock.Advance(time.Second)
	if r := h.post(t, m, key("orphan"), `{"amount":2}`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("stale claim, other request: %d %s, want 422 (only the same request takes over)", r.status, r.body)
	}
	second := h.post(t, m, key("orphan"), `{"amount":1}`)
	if second.status != http.StatusCreated || second.replayed() || !bytes.Contains(second.body, []byte(`"execution":2`)) {
		t.Fatalf("after StaleAfter: %d replayed=%v %s, want execution 2", second.status, second.replayed(), second.body)
	}

	// The orphan finishes late: its client gets its answer, but the saved
	// answer stays the one of the execution that took over.
	close(release)
	if first := within(t, firstC, "the first answer"); first.status != http.StatusCreated || !bytes.Contains(first.body, []byte(`"execution":1`)) {
		t.Errorf("late first answer = %d %s", first.status, first.body)
	}
	sameAnswer(t, h.post(t, m, key("orphan"), `{"amount":1}`), second)
	if n := h.area.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

// TestExpiry is not parallel: DeleteExpired on a clock a day ahead would
// delete the rows of tests running beside it (parallel tests start only
// after the sequential ones end).
func TestExpiry(t *testing.T) {
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	ctx := context.Background()
	kept := h.post(t, m, key("k1"), `{"amount":1}`)
	if r := h.post(t, m, key("k2"), `{"amount":1}`); r.status != http.StatusCreated || kept.status != http.StatusCreated {
		t.Fatalf("setup answers %d, %d", kept.status, r.status)
	}

	h.clock.Advance(idempotency.DefaultTTL - time.Second)
	sameAnswer(t, h.post(t, m, key("k1"), `{"amount":1}`), kept)
	if _, err := h.store.DeleteExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.rows(t, m); n != 2 {
		t.Fatalf("%d rows left after cleanup a second before expiry, want 2", n)
	}

	h.clock.Advance(2 * time.Second)
	// An expired key is free again, before any cleanup ran.
	r := h.post(t, m, key("k1"), `{"amount":99}`)
	if r.status != http.StatusCreated || r.replayed() {
		t.Errorf("expired key with another body: %d replayed=%v %s, want a fresh 201", r.status, r.replayed(), r.body)
	}
	n, err := h.store.DeleteExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Errorf("DeleteExpired removed %d rows, want k2's", n)
	}
	var keys []string
	rows, err := h.pool.Query(ctx, `SELECT key FROM idempotency_keys WHERE merchant_id = $1`, m.id)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(keys) != 1 || keys[0] != "k1" {
		t.Errorf("keys left = %v, want [k1] (re-used after expiry; k2 expired)", keys)
	}
	if n := h.area.calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

func TestConfigRefusesShortTTL(t *testing.T) {
	t.Parallel()
	_, err := idempotency.New(idempotency.Config{Pool: testenv.Pool(t), Hasher: newVault(t), TTL: time.Hour})
	if err == nil {
		t.Error("a 1h TTL was accepted; the API promises at least 24h")
	}
}
