package api_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/limits"
)

// wantRateLimited wants 429 rate_limited whose retry_after (error object)
// and Retry-After (header) agree and lie in (0, max].
func wantRateLimited(t *testing.T, res *apitest.Response, max time.Duration) {
	t.Helper()
	wantError(t, res, http.StatusTooManyRequests, "rate_limited", "")
	var body struct {
		Error struct {
			RetryAfter int `json:"retry_after"`
		} `json:"error"`
	}
	if !res.Decode(t, &body) || body.Error.RetryAfter < 1 || time.Duration(body.Error.RetryAfter)*time.Second > max {
		t.Fatalf("retry_after = %d, want 1..%s", body.Error.RetryAfter, max)
	}
	if h := res.Header.Get("Retry-After"); h != strconv.Itoa(body.Error.RetryAfter) {
		t.Fatalf("Retry-After = %q, retry_after = %d", h, body.Error.RetryAfter)
	}
}

// TestAbuseLimitsAcrossMerchants: a card's applies are counted across
// merchants and refused with 429 before the bank; idempotent replays do not
// count; quickpay's consent codes count against the phone's texts.
func TestAbuseLimitsAcrossMerchants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := clock.NewFake(mandateEpoch)
	srv := newTestServer(t, serverOptions{Clock: clk, Limits: &binding.Limits{
		ApplyPerHour:   limits.Rule{Cap: 2, Window: time.Hour},
		ApplyPerDay:    limits.Rule{Cap: 10, Window: binding.Day},
		SMSPerDay:      limits.Rule{Cap: 4, Window: binding.Day},
		MismatchPerDay: limits.Rule{Cap: 5, Window: binding.Day},
	}})
	gen := conformance.NewGen()
	// Tokens live 15 minutes on the moving clock: each step logs in anew.
	tenant := func(scopes ...string) func() tenant {
		m, secret, err := srv.merchants.Create(ctx, "limits", scopes)
		if err != nil {
			t.Fatal(err)
		}
		return func() tenant {
			c := apitest.NewClient(t, srv.url)
			return tenant{id: m.ID, c: c.WithToken(c.Token(t, m.ClientID, secret))}
		}
	}
	loginA, loginB := tenant("bind", "withhold"), tenant("bind")
	a, b := loginA(), loginB()
	acct := srv.account(t, gen, "ICBC", "debit")
	texts := func() int {
		t.Helper()
		got, err := srv.SimCtl.SMS(ctx, acct.Phone)
		if err != nil {
			t.Fatal(err)
		}
		return len(got)
	}

	req := bindRequest(acct)
	req["external_user_id"] = "limits-user"
	key := apitest.IdempotencyKey("limits-" + randomHex(t, 4))
	first := a.c.Post(t, "/v1/bindings", req, key)
	if !first.WantStatus(t, http.StatusCreated) {
		t.FailNow()
	}
	clk.Advance(time.Minute)
	if res := b.c.Post(t, "/v1/bindings", req); !res.WantStatus(t, http.StatusCreated) {
		t.FailNow()
	}
	// A replay answers from the saved answer and counts nothing.
	if res := a.c.Post(t, "/v1/bindings", req, key); !res.WantStatus(t, http.StatusCreated) ||
		res.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", res.Status, res.Body)
	}
	wantRateLimited(t, a.c.Post(t, "/v1/bindings", req), time.Hour)
	wantRateLimited(t, b.c.Post(t, "/v1/bindings", req), time.Hour)
	if n := texts(); n != 2 {
		t.Fatalf("%d texts to the phone, want 2: a refused apply reached the bank", n)
	}

	// An hour on, merchant a binds the card: its third text.
	clk.Advance(time.Hour)
	a = loginA()
	var bnd bindingAnswer
	if res := a.c.Post(t, "/v1/bindings", req); !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &bnd) {
		t.FailNow()
	}
	res := a.c.Post(t, "/v1/bindings/"+bnd.ID+"/confirm", map[string]string{"otp": srv.code(t, acct.Phone)})
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &bnd) || bnd.CardID == nil {
		t.Fatalf("confirm: %d %s", res.Status, res.Body)
	}
	// The consent code is the fourth text; the next mandate's would be a
	// fifth, refused before the carrier.
	if res := a.c.Post(t, "/v1/mandates", fixedMandate(*bnd.CardID)); !res.WantStatus(t, http.StatusCreated) {
		t.FailNow()
	}
	wantRateLimited(t, a.c.Post(t, "/v1/mandates", fixedMandate(*bnd.CardID)), binding.Day)
	if n := texts(); n != 4 {
		t.Fatalf("%d texts to the phone, want 4", n)
	}
}
