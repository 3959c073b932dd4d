package api_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/merchants"
)

// TestMerchantRPSCeiling: a merchant's requests-per-second ceiling is a
// token bucket per merchant on the server's clock (nothing here sleeps:
// every request of a step is sent at one instant of the fake clock), read
// from the merchant's record at most once per DefaultCeilingTTL. The
// subtests share one server and clock and run in order.
func TestMerchantRPSCeiling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := clock.NewFake(mandateEpoch)
	srv := newTestServer(t, serverOptions{Clock: clk})

	type merchant struct {
		tenant
		clientID, secret string
	}
	newMerchant := func(t *testing.T, rps int) merchant {
		t.Helper()
		m, secret, err := srv.merchants.CreateWith(ctx, merchants.NewMerchant{Name: "ceiling", Scopes: merchants.AllScopes, RPSCeiling: rps})
		if err != nil {
			t.Fatal(err)
		}
		c := apitest.NewClient(t, srv.url)
		return merchant{tenant: tenant{id: m.ID, c: c.WithToken(c.Token(t, m.ClientID, secret))}, clientID: m.ClientID, secret: secret}
	}
	// allowed sends n requests now and wants each answered 200.
	allowed := func(t *testing.T, m merchant, n int, what string) {
		t.Helper()
		for i := range n {
			if res := m.c.Get(t, "/v1/events"); res.Status != http.StatusOK {
				t.Fatalf("%s: request %d of %d → %d %s, want 200", what, i+1, n, res.Status, res.APIError().Code)
			}
		}
	}
	// refused wants the next request refused: 429 rate_limited, retry_after 1
	// (a ceiling of at least 1 a second refills a token within a second) and
	// Retry-After saying the same.
	refused := func(t *testing.T, m merchant, what string) {
		t.Helper()
		res := m.c.Get(t, "/v1/events")
		if res.Status != http.StatusTooManyRequests {
			t.Fatalf("%s → %d, want 429 rate_limited", what, res.Status)
		}
		wantRateLimited(t, res, time.Second)
	}

	var a, b, unlimited, changed merchant
	t.Run("ceiling 2: the third request in one instant is refused, other merchants go on", func(t *testing.T) {
		a, b, unlimited = newMerchant(t, 2), newMerchant(t, 2), newMerchant(t, 0)
		allowed(t, a, 2, "merchant a within its ceiling")
		refused(t, a, "merchant a's third request in the instant")
		refused(t, a, "merchant a's fourth request in the instant")
		allowed(t, b, 2, "merchant b, same ceiling, while a is refused")
		refused(t, b, "merchant b's third request")
		allowed(t, unlimited, 30, "a merchant without a ceiling")

		// A refused merchant still gets a token (the token endpoint is not
		// behind the ceiling: c.Token wants 200), and the ceiling follows
		// the merchant, not the token.
		c := apitest.NewClient(t, srv.url)
		again := merchant{tenant: tenant{id: a.id, c: c.WithToken(c.Token(t, a.clientID, a.secret))}}
		refused(t, again, "merchant a with a new token")

		// Half a second refills one token at 2 a second; a whole second
		// refills the burst of 2 and no more.
		clk.Advance(500 * time.Millisecond)
		allowed(t, a, 1, "merchant a half a second later")
		refused(t, a, "merchant a's second request half a second later")
		clk.Advance(5 * time.Second)
		allowed(t, a, 2, "merchant a five seconds later")
		refused(t, a, "merchant a's third request five seconds later")
	})

	t.Run("a changed ceiling applies once the cached one is DefaultCeilingTTL old", func(t *testing.T) {
		changed = newMerchant(t, 2)
		allowed(t, changed, 2, "ceiling 2")
		refused(t, changed, "the third request at ceiling 2")
		if err := srv.merchants.SetRPSCeiling(ctx, changed.id, 4); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		allowed(t, changed, 2, "a second after the change")
		refused(t, changed, "the third request within the TTL: the cached ceiling 2 still holds")
		clk.Advance(api.DefaultCeilingTTL)
		allowed(t, changed, 4, "past the TTL, ceiling 4")
		refused(t, changed, "the fifth request at ceiling 4")

		if err := srv.merchants.SetRPSCeiling(ctx, changed.id, 0); err != nil {
			t.Fatal(err)
		}
		clk.Advance(api.DefaultCeilingTTL)
		allowed(t, changed, 20, "past the TTL after the ceiling was taken away")
	})

	t.Run("merchants idle for DefaultCeilingIdle are forgotten", func(t *testing.T) {
		if got := srv.rateLimit.Tracked(); got != 4 {
			t.Fatalf("%d merchants tracked, want the 4 that made requests", got)
		}
		clk.Advance(api.DefaultCeilingIdle)
		// Merchant a's bucket is forgotten too: it starts full again.
		allowed(t, a, 2, "merchant a after being idle")
		refused(t, a, "merchant a's third request after being idle")
		if got := srv.rateLimit.Tracked(); got != 1 {
			t.Fatalf("%d merchants tracked after the others were idle for %s, want 1", got, api.DefaultCeilingIdle)
		}
	})

	t.Run("concurrent requests in one instant: exactly the ceiling pass", func(t *testing.T) {
		const ceiling, n = 3, 12
		m := newMerchant(t, ceiling)
		statuses := make(chan int, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { statuses <- m.c.Get(t, "/v1/events").Status })
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for st := range statuses {
			counts[st]++
		}
		if counts[http.StatusOK] != ceiling || counts[http.StatusTooManyRequests] != n-ceiling {
			t.Fatalf("statuses %v, want %d × 200 and %d × 429", counts, ceiling, n-ceiling)
		}
	})
}

// TestRateLimitedDocumented: every route behind the ceiling (all of /v1
// but the token endpoint) documents its 429, so that a client generated
// from the document expects it.
func TestRateLimitedDocumented(t *testing.T) {
	t.Parallel()
	doc, err := api.OpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") || path == api.TokenPath {
			continue
		}
		for method, op := range item.Operations() {
			n++
			ref := op.Responses.Status(http.StatusTooManyRequests)
			if ref == nil || ref.Value == nil || ref.Value.Headers["Retry-After"] == nil {
				t.Errorf("%s %s does not document 429 with Retry-After", method, path)
			}
		}
	}
	if n < 20 {
		t.Fatalf("found %d operations under /v1, want every authenticated one", n)
	}
}
