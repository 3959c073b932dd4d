package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
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
	store  *merchants.Store
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
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Vault: vault, Jobs: jobs,
		AllowPrivateNetworks: true}) // http test URLs, as dev
	if err != nil {
		t.Fatal(err)
	}
	idem, err := idempotency.New(idempotency.Config{Pool: pool, Hasher: vault})
	if err != nil {
		t.Fatal(err)
	}
	e := api.New(api.Config{
		Pool: pool, HSM: hsm, Secrets: testenv.Secrets(t),
		Auth: auth, Idempotency: idem.Middleware(api.MerchantID),
		Areas: []api.Area{api.Webhooks{Service: hooks, Merchants: ms}},
	})
	srv := httptest.NewServer(testenv.RecordBodies(e))
	t.Cleanup(srv.Close)
	return &whServer{client: apitest.NewClient(t, srv.URL), auth: auth, vault: vault, hooks: hooks, store: ms}
}

// whMerchant makes a merchant holding bind and withhold and a client
// holding an access token with both.
func (s *whServer) whMerchant(t *testing.T) (string, *apitest.Client) {
	t.Helper()
	id := testenv.Merchant(t, testenv.Pool(t))
	return id, s.withScopes(t, id, merchants.ScopeBind, merchants.ScopeWithhold)
}

// withScopes is a client holding a token of merchant id with scopes.
func (s *whServer) withScopes(t *testing.T, id string, scopes ...string) *apitest.Client {
	t.Helper()
	tok, err := s.auth.Issue(context.Background(), id, scopes)
	if err != nil {
		t.Fatal(err)
	}
	return s.client.WithToken(tok)
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
		if e := res.APIError(); res.Status != http.StatusUnprocessableEntity || e.Code != "validation_failed" || e.Field != "limit" {
			t.Errorf("limit=%s: %d %s field %q, want 422 validation_failed on limit", limit, res.Status, e.Code, e.Field)
		}
	}
}

// TestWebhookEndpointScopes: the endpoint receives every event of the
// merchant, so only a token holding every scope the merchant holds may set
// it (DESIGN.md "Abuse limits").
func TestWebhookEndpointScopes(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	ctx := context.Background()
	pool := testenv.Pool(t)
	both, full := s.whMerchant(t)
	storedURL := func(m string) string {
		t.Helper()
		var u string
		err := pool.QueryRow(ctx, `SELECT url FROM webhook_endpoints WHERE merchant_id = $1`, m).Scan(&u)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return u
	}
	full.Put(t, "/v1/webhook_endpoint", map[string]any{"url": "https://hooks.example.com/mine"}).WantStatus(t, http.StatusOK)

	for _, tc := range []struct {
		name    string
		scopes  []string
		missing string
	}{
		{"token narrowed to bind", []string{merchants.ScopeBind}, merchants.ScopeWithhold},
		{"token narrowed to withhold", []string{merchants.ScopeWithhold}, merchants.ScopeBind},
	} {
		t.Run(tc.name+" cannot redirect the merchant's events", func(t *testing.T) {
			res := s.withScopes(t, both, tc.scopes...).Put(t, "/v1/webhook_endpoint",
				map[string]any{"url": "https://attacker.example.com/"})
			if res.WantError(t, http.StatusForbidden, "insufficient_scope") && res.APIError().RequiredScope != tc.missing {
				t.Errorf("required_scope = %q, want %q", res.APIError().RequiredScope, tc.missing)
			}
			if u := storedURL(both); u != "https://hooks.example.com/mine" {
				t.Errorf("endpoint is now %q", u)
			}
		})
	}

	t.Run("a bind-only merchant's bind token holds every scope it has", func(t *testing.T) {
		m, _, err := s.store.Create(ctx, "bind only", []string{merchants.ScopeBind})
		if err != nil {
			t.Fatal(err)
		}
		s.withScopes(t, m.ID, merchants.ScopeBind).Put(t, "/v1/webhook_endpoint",
			map[string]any{"url": "https://hooks.example.com/bind"}).WantStatus(t, http.StatusOK)
		if u := storedURL(m.ID); u != "https://hooks.example.com/bind" {
			t.Errorf("endpoint = %q, want the one set", u)
		}
	})
}

// TestEventScopeClosedSet: every event type maps to a scope, and a type of
// an unknown family is an error, not silently some scope's.
func TestEventScopeClosedSet(t *testing.T) {
	t.Parallel()
	want := map[string]string{
		"binding": merchants.ScopeBind, "card": merchants.ScopeBind, "binding_session": merchants.ScopeBind,
		"mandate": merchants.ScopeWithhold, "charge": merchants.ScopeWithhold, "refund": merchants.ScopeWithhold,
	}
	types := append(webhooks.EventTypes(), "binding_session.completed", "refund.succeeded", "card.revoked")
	for _, typ := range types {
		prefix, _, _ := strings.Cut(typ, ".")
		got, err := api.EventScope(typ)
		if err != nil || got != want[prefix] {
			t.Errorf("EventScope(%q) = %q, %v; want %q", typ, got, err, want[prefix])
		}
	}
	for _, typ := range []string{"payout.sent", "bindings.bound", "chargeback.opened", ""} {
		if got, err := api.EventScope(typ); err == nil {
			t.Errorf("EventScope(%q) = %q, want an error", typ, got)
		}
	}
}

// TestEventsFeedScopes: GET /v1/events shows a token only its scopes'
// events, narrowed in the query so that pages stay full and after= pages
// on correctly through the other scope's events.
func TestEventsFeedScopes(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	m, full := s.whMerchant(t)
	bind := s.withScopes(t, m, merchants.ScopeBind)
	withhold := s.withScopes(t, m, merchants.ScopeWithhold)
	none := s.withScopes(t, m)

	// b1, 5 charge events, b2, m1, 5 charge events, b3: a page of 2 read
	// after the fact would hold b1 and a charge event, or be empty.
	var all []webhooks.Event
	emit := func(typ string, n int) { t.Helper(); s.emit(t, m, typ, n, &all) }
	emit(webhooks.EventBindingBound, 1)
	emit(webhooks.EventChargeSucceeded, 5)
	emit(webhooks.EventCardUnbound, 1)
	emit(webhooks.EventMandateActivated, 1)
	emit(webhooks.EventChargeFailed, 5)
	emit(webhooks.EventBindingFailed, 1)

	of := func(scope string) []string {
		var out []string
		for _, ev := range all {
			if sc, _ := api.EventScope(ev.Type); sc == scope {
				out = append(out, ev.ID)
			}
		}
		return out
	}
	bindIDs, withholdIDs := of(merchants.ScopeBind), of(merchants.ScopeWithhold)

	t.Run("a bind token pages through bind events only, in full pages", func(t *testing.T) {
		ids, more := feedPage(t, bind, "limit=2")
		if !slices.Equal(ids, bindIDs[:2]) || !more {
			t.Errorf("first page = %v more=%v, want %v and more", ids, more, bindIDs[:2])
		}
		ids, more = feedPage(t, bind, "limit=2&after="+bindIDs[1])
		if !slices.Equal(ids, bindIDs[2:]) || more {
			t.Errorf("second page = %v more=%v, want %v and no more", ids, more, bindIDs[2:])
		}
		if got := walkFeed(t, bind, nil, 1); !slices.Equal(got, bindIDs) {
			t.Errorf("walked %v, want %v", got, bindIDs)
		}
	})
	t.Run("a withhold token sees mandate and charge events only", func(t *testing.T) {
		if got := walkFeed(t, withhold, nil, 4); !slices.Equal(got, withholdIDs) {
			t.Errorf("walked %v, want %v", got, withholdIDs)
		}
	})
	t.Run("a token with both scopes sees every event", func(t *testing.T) {
		var want []string
		for _, ev := range all {
			want = append(want, ev.ID)
		}
		if got := walkFeed(t, full, nil, 3); !slices.Equal(got, want) {
			t.Errorf("walked %v, want all %v", got, want)
		}
	})
	t.Run("a token without scopes sees none", func(t *testing.T) {
		if ids, more := feedPage(t, none, ""); len(ids) != 0 || more {
			t.Errorf("events = %v more=%v, want none", ids, more)
		}
	})
	t.Run("after naming an event of another scope is not found", func(t *testing.T) {
		bind.Get(t, "/v1/events?after="+withholdIDs[0]).WantError(t, http.StatusNotFound, "not_found")
		withhold.Get(t, "/v1/events?after="+bindIDs[0]).WantError(t, http.StatusNotFound, "not_found")
	})
}

// feedPage GETs /v1/events?query with c and returns the page's event ids
// and has_more; any answer but 200 ends the test.
func feedPage(t *testing.T, c *apitest.Client, query string) (ids []string, more bool) {
	t.Helper()
	res := c.Get(t, "/v1/events?"+query)
	var p struct {
		Data []struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		} `json:"data"`
		HasMore bool `json:"has_more"`
	}
	if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &p) {
		t.FailNow()
	}
	for _, it := range p.Data {
		ids = append(ids, it.ID)
	}
	return ids, p.HasMore
}

// walkFeed pages through the feed of query with limit, checking every page
// is full but the last, and returns the ids seen.
func walkFeed(t *testing.T, c *apitest.Client, query url.Values, limit int) []string {
	t.Helper()
	var seen []string
	after := ""
	for range 20 {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		for k, v := range query {
			q[k] = v
		}
		if after != "" {
			q.Set("after", after)
		}
		ids, more := feedPage(t, c, q.Encode())
		seen = append(seen, ids...)
		if more && len(ids) != limit {
			t.Errorf("a page of %d with has_more holds %d events: %v", limit, len(ids), ids)
		}
		if !more {
			return seen
		}
		if len(ids) == 0 {
			t.Fatal("an empty page with has_more")
		}
		after = ids[len(ids)-1]
	}
	t.Fatal("the feed did not end")
	return nil
}

// emit emits n events of typ for merchant m, each in a transaction of its
// own, appending them to all; each event's data is {"n": its index in all}.
func (s *whServer) emit(t *testing.T, m, typ string, n int, all *[]webhooks.Event) {
	t.Helper()
	ctx := context.Background()
	for range n {
		if err := db.InTx(ctx, testenv.Pool(t), func(tx pgx.Tx) error {
			ev, err := s.hooks.Emit(ctx, tx, m, typ, map[string]int{"n": len(*all)})
			*all = append(*all, ev)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEventsFeedTypes: GET /v1/events?type= narrows the feed to one or more
// types, within the token's scopes, in full pages that after= pages on; a
// type of another scope shows nothing, as the feed hides that scope's
// events; a type that is no event type is 422 validation_failed naming type.
func TestEventsFeedTypes(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	m, full := s.whMerchant(t)
	other, otherFull := s.whMerchant(t)
	bind := s.withScopes(t, m, merchants.ScopeBind)
	withhold := s.withScopes(t, m, merchants.ScopeWithhold)

	var all, others []webhooks.Event
	for _, e := range []struct {
		typ string
		n   int
	}{
		{webhooks.EventBindingBound, 2}, {webhooks.EventChargeSucceeded, 3}, {webhooks.EventCardUnbound, 1},
		{webhooks.EventChargeFailed, 2}, {webhooks.EventBindingBound, 1}, {webhooks.EventChargeSucceeded, 2},
	} {
		s.emit(t, m, e.typ, e.n, &all)
		s.emit(t, other, e.typ, 1, &others)
	}
	of := func(evs []webhooks.Event, types ...string) []string {
		var out []string
		for _, ev := range evs {
			if slices.Contains(types, ev.Type) {
				out = append(out, ev.ID)
			}
		}
		return out
	}
	typeQuery := func(types ...string) url.Values { return url.Values{"type": types} }

	for _, tc := range []struct {
		name  string
		c     *apitest.Client
		types []string
		limit int
		want  []string
	}{
		{"one type", full, []string{webhooks.EventChargeSucceeded}, 2, of(all, webhooks.EventChargeSucceeded)},
		{"two types", full, []string{webhooks.EventBindingBound, webhooks.EventChargeFailed}, 2,
			of(all, webhooks.EventBindingBound, webhooks.EventChargeFailed)},
		{"a type of the token's scope", bind, []string{webhooks.EventBindingBound}, 1, of(all, webhooks.EventBindingBound)},
		{"a type of another scope shows nothing", bind, []string{webhooks.EventChargeSucceeded}, 2, nil},
		{"of two types, the one the token sees", withhold,
			[]string{webhooks.EventBindingBound, webhooks.EventChargeFailed}, 1, of(all, webhooks.EventChargeFailed)},
		{"a type the merchant has none of", full, []string{webhooks.EventMandatePaused}, 2, nil},
		{"another merchant sees its own", otherFull, []string{webhooks.EventChargeSucceeded}, 1,
			of(others, webhooks.EventChargeSucceeded)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := walkFeed(t, tc.c, typeQuery(tc.types...), tc.limit); !slices.Equal(got, tc.want) {
				t.Errorf("walked %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("after any event the token sees, of any type", func(t *testing.T) {
		after := of(all, webhooks.EventCardUnbound)[0]
		q := typeQuery(webhooks.EventChargeSucceeded)
		q.Set("after", after)
		ids, more := feedPage(t, full, q.Encode())
		if want := of(all, webhooks.EventChargeSucceeded)[3:]; !slices.Equal(ids, want) || more {
			t.Errorf("after %s: %v more=%v, want %v and no more", after, ids, more, want)
		}
	})
	t.Run("after an event of another scope is not found, whatever the type", func(t *testing.T) {
		q := typeQuery(webhooks.EventBindingBound)
		q.Set("after", of(all, webhooks.EventChargeSucceeded)[0])
		bind.Get(t, "/v1/events?"+q.Encode()).WantError(t, http.StatusNotFound, "not_found")
		q.Set("after", of(others, webhooks.EventBindingBound)[0])
		full.Get(t, "/v1/events?"+q.Encode()).WantError(t, http.StatusNotFound, "not_found")
	})
	t.Run("a type that is no event type is refused", func(t *testing.T) {
		for _, types := range [][]string{{"charge.refunded"}, {""}, {webhooks.EventChargeSucceeded, "payout.sent"}} {
			res := full.Get(t, "/v1/events?"+typeQuery(types...).Encode())
			if res.WantError(t, http.StatusUnprocessableEntity, "validation_failed") && res.APIError().Field != "type" {
				t.Errorf("type=%q: field %q, want type", types, res.APIError().Field)
			}
		}
		// A token's scopes do not change the answer for a type that is no event type.
		bind.Get(t, "/v1/events?type=charge.refunded").WantError(t, http.StatusUnprocessableEntity, "validation_failed")
	})
}

// TestGetEventAPI: GET /v1/events/{id} answers the merchant's event as the
// feed shows it; another merchant's, an unknown id and an event of a scope
// the token lacks are all 404 not_found.
func TestGetEventAPI(t *testing.T) {
	t.Parallel()
	s := newWHServer(t)
	m, full := s.whMerchant(t)
	other, _ := s.whMerchant(t)
	bind := s.withScopes(t, m, merchants.ScopeBind)
	withhold := s.withScopes(t, m, merchants.ScopeWithhold)
	none := s.withScopes(t, m)
	var all, others []webhooks.Event
	s.emit(t, m, webhooks.EventBindingBound, 1, &all)
	s.emit(t, m, webhooks.EventChargeSucceeded, 1, &all)
	s.emit(t, other, webhooks.EventBindingBound, 1, &others)
	bound, charged := all[0], all[1]

	type event struct {
		ID        string         `json:"id"`
		Type      string         `json:"type"`
		CreatedAt time.Time      `json:"created_at"`
		Data      map[string]int `json:"data"`
	}
	for _, tc := range []struct {
		name string
		c    *apitest.Client
		ev   webhooks.Event
		n    int
	}{
		{"a token with both scopes, a bind event", full, bound, 0},
		{"a token with both scopes, a withhold event", full, charged, 1},
		{"a bind token, a bind event", bind, bound, 0},
		{"a withhold token, a withhold event", withhold, charged, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.c.Get(t, "/v1/events/"+tc.ev.ID)
			var got event
			if !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &got) {
				return
			}
			if got.ID != tc.ev.ID || got.Type != tc.ev.Type || !got.CreatedAt.Equal(tc.ev.CreatedAt) ||
				len(got.Data) != 1 || got.Data["n"] != tc.n {
				t.Errorf("event = %+v, want %s %s at %s with data n=%d", got, tc.ev.ID, tc.ev.Type, tc.ev.CreatedAt, tc.n)
			}
		})
	}
	t.Run("the feed and the event answer the same JSON", func(t *testing.T) {
		one := full.Get(t, "/v1/events/"+charged.ID)
		page := full.Get(t, "/v1/events?type="+webhooks.EventChargeSucceeded)
		var p struct {
			Data []json.RawMessage `json:"data"`
		}
		if one.WantStatus(t, http.StatusOK) && page.WantStatus(t, http.StatusOK) && page.Decode(t, &p) &&
			(len(p.Data) != 1 || string(p.Data[0]) != strings.TrimSpace(string(one.Body))) {
			t.Errorf("feed item %s, event %s: want the same", p.Data, one.Body)
		}
	})
	for _, tc := range []struct {
		name string
		c    *apitest.Client
		id   string
	}{
		{"another merchant's event", full, others[0].ID},
		{"an unknown event", full, "evt_aaaaaaaaaaaaaaaaaaaaaaaa"},
		{"not an event id", full, "chg_aaaaaaaaaaaaaaaaaaaaaaaa"},
		{"a withhold event to a bind token", bind, charged.ID},
		{"a bind event to a withhold token", withhold, bound.ID},
		{"an event to a token without scopes", none, bound.ID},
	} {
		t.Run(tc.name+" is not found", func(t *testing.T) {
			tc.c.Get(t, "/v1/events/"+tc.id).WantError(t, http.StatusNotFound, "not_found")
		})
	}
}
