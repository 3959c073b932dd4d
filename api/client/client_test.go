package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/client"
)

// fake is an httptest server that speaks the contract's shape: a token
// endpoint issuing tok-1, tok-2… (expires_in 900) and, for every other
// route, the test's handler. It records what it was sent. It stands in for
// quickpay where the answer under test (a 5xx, a 409 in flight, a
// Retry-After) cannot be caused on demand against the real server;
// TestBindThroughRealStack covers the real one.
type fake struct {
	mu       sync.Mutex
	tokens   int
	requests []*http.Request // routes other than the token endpoint
	srv      *httptest.Server
}

func newFake(t *testing.T, handler func(n int, w http.ResponseWriter, r *http.Request)) *fake {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		if r.URL.Path == "/v1/oauth/token" {
			f.tokens++
			n := f.tokens
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":900,"scope":"bind"}`, n)
			return
		}
		f.requests = append(f.requests, r.Clone(context.Background()))
		n := len(f.requests)
		f.mu.Unlock()
		handler(n, w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) sent() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.requests...)
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClient is a client of f whose waits are recorded, not slept.
func newClient(t *testing.T, f *fake, clk *clock) (*client.Client, *[]time.Duration) {
	t.Helper()
	var waits []time.Duration
	var mu sync.Mutex
	c, err := client.New(client.Config{
		BaseURL: f.srv.URL, ClientID: "cli_test", ClientSecret: "secret",
		Now:     clk.Now,
		Backoff: func(attempt int) time.Duration { return time.Duration(attempt) * time.Second },
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
			return ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, &waits
}

func writeError(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func writeMember(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, `{"id":"mem_abcdefghijklmnopqrstuvwx","external_id":"u1","kind":"explicit","created_at":"2026-01-02T03:04:05Z"}`)
}

func TestRetries(t *testing.T) {
	t.Parallel()
	const inUse = `{"error":{"code":"idempotency_key_in_use","message":"in flight"},"request_id":"r1"}`
	tests := []struct {
		name      string
		answers   []func(w http.ResponseWriter) // by try; the last repeats
		wantTries int
		wantErr   string // the final *Error's code, "" for success
		wantWaits []time.Duration
	}{
		{"409 in use then created", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { writeError(w, 409, inUse) },
			func(w http.ResponseWriter) { writeMember(w, 201) },
		}, 2, "", []time.Duration{time.Second}},
		{"429 waits its Retry-After", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "7")
				writeError(w, 429, `{"error":{"code":"rate_limited","message":"slow down","retry_after":7},"request_id":"r2"}`)
			},
			func(w http.ResponseWriter) { writeMember(w, 201) },
		}, 2, "", []time.Duration{7 * time.Second}},
		{"5xx until attempts run out", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				writeError(w, 503, `{"error":{"code":"bank_unavailable","message":"bank"},"request_id":"r3"}`)
			},
		}, 4, "bank_unavailable", []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{"a proxy's 502 without quickpay's body", []func(http.ResponseWriter){
			func(w http.ResponseWriter) { w.WriteHeader(502) },
			func(w http.ResponseWriter) { writeMember(w, 201) },
		}, 2, "", []time.Duration{time.Second}},
		{"429 asking for longer than MaxRetryWait is returned", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "3600")
				writeError(w, 429, `{"error":{"code":"rate_limited","message":"card limit","retry_after":3600},"request_id":"r7"}`)
			},
		}, 1, "rate_limited", nil},
		{"429 otp_resend_limit is not retried", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				writeError(w, 429, `{"error":{"code":"otp_resend_limit","message":"no more codes"},"request_id":"r8"}`)
			},
		}, 1, "otp_resend_limit", nil},
		{"409 member_exists is not retried", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				writeError(w, 409, `{"error":{"code":"member_exists","message":"exists"},"request_id":"r4"}`)
			},
		}, 1, "member_exists", nil},
		{"422 is not retried", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				writeError(w, 422, `{"error":{"code":"idempotency_key_reused","message":"other body"},"request_id":"r5"}`)
			},
		}, 1, "idempotency_key_reused", nil},
		{"400 is not retried", []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				writeError(w, 400, `{"error":{"code":"validation_failed","message":"bad","field":"external_id"},"request_id":"r6"}`)
			},
		}, 1, "validation_failed", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
				tc.answers[min(n, len(tc.answers))-1](w)
			})
			c, waits := newClient(t, f, &clock{t: time.Now()})
			resp, err := c.CreateMemberWithResponse(context.Background(), nil, client.CreateMemberRequest{ExternalId: "u1"})
			sent := f.sent()
			if len(sent) != tc.wantTries {
				t.Errorf("tries = %d, want %d", len(sent), tc.wantTries)
			}
			if fmt.Sprint(*waits) != fmt.Sprint(tc.wantWaits) {
				t.Errorf("waits = %v, want %v", *waits, tc.wantWaits)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				if resp.JSON201 == nil || resp.JSON201.Id != "mem_abcdefghijklmnopqrstuvwx" {
					t.Fatalf("answer = %+v, want the member", resp)
				}
			} else {
				var e *client.Error
				if !errors.As(err, &e) || e.Code != tc.wantErr {
					t.Fatalf("err = %v, want *client.Error %s", err, tc.wantErr)
				}
			}
			key := sent[0].Header.Get("Idempotency-Key")
			if len(key) != 32 {
				t.Fatalf("Idempotency-Key = %q, want a generated 32-hex key", key)
			}
			for i, r := range sent {
				if got := r.Header.Get("Idempotency-Key"); got != key {
					t.Errorf("try %d Idempotency-Key = %q, want %q as on the first", i+1, got, key)
				}
			}
		})
	}
}

func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"data":[],"has_more":false}`)
			return
		}
		writeMember(w, 201)
	})
	c, _ := newClient(t, f, &clock{t: time.Now()})
	ctx := context.Background()
	mine := "order-42"
	if _, err := c.CreateMemberWithResponse(ctx, &client.CreateMemberParams{IdempotencyKey: &mine}, client.CreateMemberRequest{ExternalId: "u1"}); err != nil {
		t.Fatal(err)
	}
	for _, err := range c.Charges(ctx, client.ListChargesParams{}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range c.Charges(ctx, client.ListChargesParams{}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreateMemberWithResponse(ctx, nil, client.CreateMemberRequest{ExternalId: "u2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateMemberWithResponse(ctx, nil, client.CreateMemberRequest{ExternalId: "u3"}); err != nil {
		t.Fatal(err)
	}
	sent := f.sent()
	if got := sent[0].Header.Get("Idempotency-Key"); got != mine {
		t.Errorf("caller's key sent as %q, want %q", got, mine)
	}
	if got := sent[1].Header.Get("Idempotency-Key"); got != "" {
		t.Errorf("GET carried Idempotency-Key %q", got)
	}
	if te := sent[1].TransferEncoding; len(te) != 0 || sent[1].ContentLength != 0 {
		t.Errorf("GET sent a body: Transfer-Encoding %v, Content-Length %d", te, sent[1].ContentLength)
	}
	a, b := sent[3].Header.Get("Idempotency-Key"), sent[4].Header.Get("Idempotency-Key")
	if a == "" || a == b {
		t.Errorf("two calls' generated keys = %q, %q; want two different keys", a, b)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	var refuse sync.Once
	f := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer tok-2" {
			refused := false
			refuse.Do(func() { refused = true })
			if refused {
				writeError(w, 401, `{"error":{"code":"invalid_token","message":"retired key"},"request_id":"r"}`)
				return
			}
		}
		writeMember(w, 200)
	})
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c, _ := newClient(t, f, clk)
	get := func() {
		t.Helper()
		if _, err := c.GetMemberWithResponse(context.Background(), "mem_abcdefghijklmnopqrstuvwx"); err != nil {
			t.Fatal(err)
		}
	}
	get()
	clk.Add(13 * time.Minute) // 2 min before expiry: reused
	get()
	clk.Add(time.Minute + time.Second) // within the last minute: replaced
	get()                              // tok-2 refused once: tok-3 fetched, the call tried again
	var auth []string
	for _, r := range f.sent() {
		auth = append(auth, r.Header.Get("Authorization"))
	}
	want := []string{"Bearer tok-1", "Bearer tok-1", "Bearer tok-2", "Bearer tok-3"}
	if fmt.Sprint(auth) != fmt.Sprint(want) {
		t.Fatalf("Authorization by request = %q, want %q", auth, want)
	}
}

func TestErrorFields(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeError(w, 422, `{"error":{"code":"otp_incorrect","message":"wrong code","attempts_left":2,"field":"otp"},"request_id":"req_1"}`)
	})
	c, _ := newClient(t, f, &clock{t: time.Now()})
	_, err := c.ConfirmBindingWithResponse(context.Background(), "bnd_abcdefghijklmnopqrstuvwx", nil, client.ConfirmBindingRequest{Otp: "123456"})
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *client.Error", err)
	}
	if e.Status != 422 || e.Code != "otp_incorrect" || e.Message != "wrong code" || e.Field != "otp" ||
		e.AttemptsLeft == nil || *e.AttemptsLeft != 2 || e.RequestID != "req_1" || e.RetryAfter != 0 {
		t.Fatalf("error = %+v", e)
	}
	if got := e.Error(); got != "quickpay: 422 otp_incorrect (otp): wrong code [request req_1]" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestIterators(t *testing.T) {
	t.Parallel()
	// 5 charges, newest first, pages of 2; 5 events, oldest first, pages of 2.
	f := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		var cursor string
		var prefix string
		switch r.URL.Path {
		case "/v1/charges":
			cursor, prefix = r.URL.Query().Get("starting_after"), "chg_"
		case "/v1/events":
			cursor, prefix = r.URL.Query().Get("after"), "evt_"
		default:
			writeError(w, 404, `{"error":{"code":"not_found","message":"no"},"request_id":"r"}`)
			return
		}
		start := 0
		if cursor != "" {
			start, _ = strconv.Atoi(cursor[len(prefix):])
		}
		var data []map[string]any
		for i := start + 1; i <= min(start+2, 5); i++ {
			data = append(data, map[string]any{"id": prefix + strconv.Itoa(i)})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"data": data, "has_more": start+2 < 5})
	})
	c, _ := newClient(t, f, &clock{t: time.Now()})
	ctx := context.Background()
	var ids []string
	for ch, err := range c.Charges(ctx, client.ListChargesParams{}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ch.Id)
	}
	if fmt.Sprint(ids) != "[chg_1 chg_2 chg_3 chg_4 chg_5]" {
		t.Fatalf("charges = %v", ids)
	}
	ids = nil
	after := "evt_2"
	for ev, err := range c.Events(ctx, client.ListEventsParams{After: &after}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.Id)
	}
	if fmt.Sprint(ids) != "[evt_3 evt_4 evt_5]" {
		t.Fatalf("events after evt_2 = %v", ids)
	}
	before := len(f.sent())
	for range c.Charges(ctx, client.ListChargesParams{}) {
		break // one row: no second page is asked for
	}
	if got := len(f.sent()) - before; got != 1 {
		t.Fatalf("a loop left after one row asked %d pages, want 1", got)
	}
	var got error
	for _, err := range c.Refunds(ctx, client.ListRefundsParams{}) {
		got = err
	}
	var e *client.Error
	if !errors.As(got, &e) || e.Code != "not_found" {
		t.Fatalf("walk of a refused list ended with %v, want not_found", got)
	}
}
