package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/idempotency"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/testenv"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/vaultkeys"
)

// whServer is the real API with the Webhooks area (and real token auth and
// idempotency) over the package's Postgres, SoftHSM and Vault. Deliveries
// are enqueued by an insert-only River client and never worked here; the
// webhooks package tests delivery.
type whServer struct {
	client *apitest.Client
	auth   *api.Auth
	vault  *vaultkeys.Vault
	hooks  *webhooks.Service
}

func newWHServer(t *testing.T) *whServer {
	t.Helper()
	ctx := context.Background()
	pool, hsm := testenv.Pool(t), testenv.HSM(t, 2)
	vault, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: hsm})
	if err != nil {
		t.Fatal(err)
	}
	if err := vault.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := merchants.NewStore(merchants.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: ms, Vault: vault})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Vault: vault, Jobs: jobs})
	if err != nil {
		t.Fatal(err)
	}
	idem, err := idempotency.New(idempotency.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	e := api.New(api.Config{
		Pool: pool, HSM: hsm, Secrets: testenv.Secrets(t),
		Auth: auth, Idempotency: idem.Middleware(api.MerchantID),
		Areas: []api.Area{api.Webhooks{Service: hooks}},
	})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &whServer{client: apitest.NewClient(t, srv.URL), auth: auth, vault: vault, hooks: hooks}
}

// whMerchant makes a merchant and a client holding its access token.
func (s *whServer) whMerchant(t *testing.T) (string, *apitest.Client) {
	t.Helper()
	pool := testenv.Pool(t)
	id := testenv.Merchant(t, pool)
	tok, err := s.auth.Issue(context.Background(), id, []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	return id, s.client.WithToken(tok)
}

type whEndpoint struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	Secret string   `json:"secret"`
}

func TestWebhookEndpointAPI(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	ctx := context.Background()
	m, c := s.whMerchant(t)
	pool := testenv.Pool(t)

	// storedSecret decrypts the secret the worker will sign with.
	storedSecret := func() string {
		t.Helper()
		var ct []byte
		if err := pool.QueryRow(ctx, `SELECT secret_ct FROM webhook_endpoints WHERE merchant_id = $1`, m).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		pt, err := s.vault.Decrypt(ctx, ct, []byte("webhook_endpoint|"+m), vaultkeys.Access{MerchantID: m, Actor: "test", Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return string(pt)
	}

	t.Run("set with events answers them sorted with a new secret", func(t *testing.T) {
		res := c.Put(t, "/v1/webhook_endpoint", map[string]any{
			"url":    "https://hooks.example.com/quickpay",
			"events": []string{webhooks.EventChargeFailed, webhooks.EventBindingBound, webhooks.EventChargeFailed},
		})
		var ep whEndpoint
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &ep) {
			return
		}
		if ep.URL != "https://hooks.example.com/quickpay" ||
			!slices.Equal(ep.Events, []string{webhooks.EventBindingBound, webhooks.EventChargeFailed}) {
			t.Errorf("answer = %+v", ep)
		}
		if !strings.HasPrefix(ep.Secret, webhooks.SecretPrefix) || ep.Secret != storedSecret() {
			t.Errorf("answered secret is not the stored signing secret")
		}
	})

	t.Run("set again without events subscribes to every type and rotates the secret", func(t *testing.T) {
		before := storedSecret()
		// PUT is idempotent by itself: a key is accepted but not recorded.
		res := c.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "http://hooks.example.com/v2"},
			apitest.IdempotencyKey("put-1"))
		var ep whEndpoint
		if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &ep) {
			return
		}
		if want := slices.Sorted(slices.Values(webhooks.EventTypes())); !slices.Equal(ep.Events, want) {
			t.Errorf("events = %v, want %v", ep.Events, want)
		}
		if ep.Secret == before || ep.Secret != storedSecret() {
			t.Error("the secret was not replaced by the answered one")
		}
		again := c.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "http://hooks.example.com/v2"},
			apitest.IdempotencyKey("put-1"))
		var ep2 whEndpoint
		if again.WantStatus(t, http.StatusOK) && again.Decode(t, &ep2) &&
			(ep2.Secret == ep.Secret || again.Header.Get(idempotency.HeaderReplayed) != "") {
			t.Error("a PUT with a repeated Idempotency-Key was replayed")
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for name, tc := range map[string]struct {
			body   any
			status int
			field  string
		}{
			"ftp url":       {map[string]any{"url": "ftp://hooks.example.com/"}, 422, "url"},
			"missing url":   {map[string]any{"events": []string{webhooks.EventCardUnbound}}, 422, "url"},
			"credentials":   {map[string]any{"url": "https://u:p@hooks.example.com/"}, 422, "url"},
			"empty events":  {map[string]any{"url": "https://hooks.example.com/", "events": []string{}}, 422, "events"},
			"unknown event": {map[string]any{"url": "https://hooks.example.com/", "events": []string{"charge.refunded"}}, 422, "events"},
			"unknown field": {map[string]any{"url": "https://hooks.example.com/", "secret": "mine"}, 400, "secret"},
		} {
			res := c.Put(t, "/v1/webhook_endpoint", tc.body)
			if e := res.APIError(); res.Status != tc.status || e.Code != "validation_failed" || e.Field != tc.field {
				t.Errorf("%s: %d %s field %q, want %d validation_failed on %s", name, res.Status, e.Code, e.Field, tc.status, tc.field)
			}
		}
		res := c.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://hooks.example.com/"}, apitest.NoToken())
		res.WantError(t, http.StatusUnauthorized, "unauthorized")
	})
}

func TestEventsAPI(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	ctx := context.Background()
	pool := testenv.Pool(t)
	a, ca := s.whMerchant(t)
	b, cb := s.whMerchant(t)

	emit := func(m, typ string, data any) webhooks.Event {
		t.Helper()
		var ev webhooks.Event
		if err := db.InTx(ctx, pool, func(tx pgx.Tx) error {
			var err error
			ev, err = s.hooks.Emit(ctx, tx, m, typ, data)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var evA []webhooks.Event
	for i, typ := range []string{webhooks.EventBindingBound, webhooks.EventMandateActivated, webhooks.EventChargeSucceeded} {
		evA = append(evA, emit(a, typ, map[string]any{"n": i, "card_id": "card_x"}))
	}
	evB := emit(b, webhooks.EventCardUnbound, map[string]string{"card_id": "card_y"})

	type item struct {
		ID        string         `json:"id"`
		Type      string         `json:"type"`
		CreatedAt time.Time      `json:"created_at"`
		Data      map[string]any `json:"data"`
	}
	type page struct {
		Data    []item `json:"data"`
		HasMore bool   `json:"has_more"`
	}
	list := func(c *apitest.Client, query url.Values) (page, bool) {
		t.Helper()
		res := c.Get(t, "/v1/events?"+query.Encode())
		var p page
		return p, res.WantStatus(t, http.StatusOK) && res.Decode(t, &p)
	}
	idsOf := func(p page) []string {
		var out []string
		for _, it := range p.Data {
			out = append(out, it.ID)
		}
		return out
	}

	if p, ok := list(ca, nil); ok {
		if len(p.Data) != 3 || p.HasMore {
			t.Fatalf("A's events = %v more=%v, want its 3", idsOf(p), p.HasMore)
		}
		for i, it := range p.Data {
			ev := evA[i]
			if it.ID != ev.ID || it.Type != ev.Type || !it.CreatedAt.Equal(ev.CreatedAt) || it.Data["n"] != float64(i) {
				t.Errorf("event %d = %+v, want %s %s", i, it, ev.ID, ev.Type)
			}
		}
	}
	if p, ok := list(ca, url.Values{"limit": {"2"}}); ok && (!slices.Equal(idsOf(p), []string{evA[0].ID, evA[1].ID}) || !p.HasMore) {
		t.Errorf("limit 2 = %v more=%v, want the first two and more", idsOf(p), p.HasMore)
	}
	if p, ok := list(ca, url.Values{"after": {evA[1].ID}}); ok && (!slices.Equal(idsOf(p), []string{evA[2].ID}) || p.HasMore) {
		t.Errorf("after the second = %v more=%v, want the third only", idsOf(p), p.HasMore)
	}
	if p, ok := list(cb, nil); ok && !slices.Equal(idsOf(p), []string{evB.ID}) {
		t.Errorf("B's events = %v, want only its own %s", idsOf(p), evB.ID)
	}
	cb.Get(t, "/v1/events?after="+evA[0].ID).WantError(t, http.StatusNotFound, "not_found")
	ca.Get(t, "/v1/events?after=evt_nonsense").WantError(t, http.StatusNotFound, "not_found")
	for _, limit := range []string{"0", "501", "ten"} {
		res := ca.Get(t, "/v1/events?limit="+limit)
		if e := res.APIError(); res.Status != http.StatusBadRequest || e.Code != "validation_failed" || e.Field != "limit" {
			t.Errorf("limit=%s: %d %s field %q, want 400 validation_failed on limit", limit, res.Status, e.Code, e.Field)
		}
	}
}
