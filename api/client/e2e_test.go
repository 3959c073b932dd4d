package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/webhooks"
)

func TestMain(m *testing.M) {
	logs := testenv.CaptureDefaultLog()
	os.Exit(testenv.Main(m, testenv.ScanPackage(logs, "PAN", "ID number", "OTP")))
}

// realServer is quickpay's API with its bindings and webhooks areas, auth
// and idempotency over a testenv.Stack, composed as cmd/quickpay composes
// them (a subset of api's own test server). It returns the stack, the
// server's URL and a new merchant's client credentials (scope bind).
func realServer(t *testing.T) (st *testenv.Stack, url, clientID, secret string) {
	t.Helper()
	st = testenv.NewStack(t)
	store, err := merchants.NewStore(merchants.Config{Pool: st.Pool})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: st.Vault})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := river.NewClient(riverpgxv5.New(st.Pool), &river.Config{}) // enqueues deliveries, works none
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: st.Pool, Vault: st.Vault, Jobs: jobs, AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	bindings, err := binding.New(binding.Config{Pool: st.Pool, Vault: st.Vault, Banks: st.Banks, Emit: hooks.Queue})
	if err != nil {
		t.Fatal(err)
	}
	idem, err := idempotency.New(idempotency.Config{Pool: st.Pool, Hasher: st.Vault, Sealer: st.Vault})
	if err != nil {
		t.Fatal(err)
	}
	e := api.New(api.Config{Pool: st.Pool, HSM: st.HSM, Secrets: st.Secrets, Auth: auth,
		Idempotency: idem.Middleware(api.MerchantID),
		Areas:       []api.Area{&api.Bindings{Service: bindings}, api.Webhooks{Service: hooks, Merchants: store}}})
	srv := httptestServer(t, testenv.RecordBodies(e))
	m, secret, err := store.Create(context.Background(), "client e2e", []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	return st, srv, m.ClientID, secret
}

// TestBindThroughRealStack binds a debit card through the real API with
// the client: a wrong code answers a typed otp_incorrect, a repeated
// Idempotency-Key replays, the card and the binding.bound event are found
// by the iterators.
func TestBindThroughRealStack(t *testing.T) {
	st, url, clientID, secret := realServer(t)
	ctx := context.Background()
	info, err := st.SimCtl.Bank(ctx, "ICBC")
	if err != nil {
		t.Fatal(err)
	}
	acct, err := conformance.NewGen().Account(info, "debit", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SimCtl.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{BaseURL: url, ClientID: clientID, ClientSecret: secret})
	if err != nil {
		t.Fatal(err)
	}

	user := "user-" + client.NewIdempotencyKey()[:8]
	key := client.NewIdempotencyKey()
	req := client.CreateBindingRequest{ExternalUserId: &user, HolderName: acct.HolderName, IdNumber: acct.IDNumber,
		CardNumber: acct.CardNumber, Phone: acct.Phone}
	created, err := c.CreateBindingWithResponse(ctx, &client.CreateBindingParams{IdempotencyKey: &key}, req)
	if err != nil {
		t.Fatal(err)
	}
	if created.JSON201 == nil || created.JSON201.Status != "otp_sent" {
		t.Fatalf("create binding answered %d, want 201 otp_sent", created.StatusCode())
	}
	replay, err := c.CreateBindingWithResponse(ctx, &client.CreateBindingParams{IdempotencyKey: &key}, req)
	if err != nil {
		t.Fatal(err)
	}
	if replay.JSON201 == nil || replay.JSON201.Id != created.JSON201.Id ||
		replay.HTTPResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the same key again answered %d (replayed %q), want the saved binding",
			replay.StatusCode(), replay.HTTPResponse.Header.Get("Idempotent-Replayed"))
	}

	texts, err := st.SimCtl.SMS(ctx, acct.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no SMS for the phone: %v", err)
	}
	code := texts[0].Code
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	_, err = c.ConfirmBindingWithResponse(ctx, created.JSON201.Id, nil, client.ConfirmBindingRequest{Otp: wrong})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 422 || apiErr.Code != "otp_incorrect" ||
		apiErr.AttemptsLeft == nil || *apiErr.AttemptsLeft != 4 || apiErr.RequestID == "" {
		t.Fatalf("wrong code: err = %v (%+v), want 422 otp_incorrect with 4 attempts left", err, apiErr)
	}
	bound, err := c.ConfirmBindingWithResponse(ctx, created.JSON201.Id, nil, client.ConfirmBindingRequest{Otp: code})
	if err != nil {
		t.Fatal(err)
	}
	b := bound.JSON200
	if b == nil || b.Status != "bound" || b.CardId == nil || b.MemberId == nil {
		t.Fatalf("confirm answered %d %+v, want bound with card and member", bound.StatusCode(), b)
	}

	var cards []string
	for card, err := range c.MemberCards(ctx, *b.MemberId) {
		if err != nil {
			t.Fatal(err)
		}
		cards = append(cards, card.Id)
	}
	if len(cards) != 1 || cards[0] != *b.CardId {
		t.Fatalf("member's cards = %v, want [%s]", cards, *b.CardId)
	}
	var types []string
	for ev, err := range c.Events(ctx, client.ListEventsParams{}) {
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, string(ev.Type))
	}
	if !strings.Contains(strings.Join(types, " "), "binding.bound") {
		t.Fatalf("events = %v, want binding.bound among them", types)
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
