package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
)

// TestNULRefusedOnEveryRoute: JSON's "\u0000" decodes to a NUL, which
// Postgres text refuses; every body field holding one answers 400
// validation_failed naming the field, before any bank, carrier or
// database write (a 500 otherwise).
func TestNULRefusedOnEveryRoute(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newTestServer(t, serverOptions{})
	gen := conformance.NewGen()
	m, secret, err := srv.merchants.Create(ctx, "nul", []string{"bind", "withhold"})
	if err != nil {
		t.Fatal(err)
	}
	c := apitest.NewClient(t, srv.url)
	c = c.WithToken(c.Token(t, m.ClientID, secret))
	acct := srv.account(t, gen, "ICBC", "debit")

	bind := bindRequest(acct)
	bind["external_user_id"] = "nul\x00user"
	named := bindRequest(acct)
	named["external_user_id"] = "nul-user"
	named["holder_name"] = acct.HolderName + "\x00"
	for _, tc := range []struct {
		name, path string
		body       any
		field      string
	}{
		{"member external id", "/v1/members", map[string]string{"external_id": "m\x00"}, "external_id"},
		{"member name", "/v1/members", map[string]string{"external_id": "m-nul", "name": "a\x00b"}, "name"},
		{"binding external user id", "/v1/bindings", bind, "external_user_id"},
		{"binding holder name", "/v1/bindings", named, "holder_name"},
		{"webhook url", "/v1/webhook_endpoint", map[string]string{"url": "https://example.com/\x00"}, "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res *apitest.Response
			if tc.path == "/v1/webhook_endpoint" {
				res = c.Put(t, tc.path, tc.body)
			} else {
				res = c.Post(t, tc.path, tc.body)
			}
			wantError(t, res, http.StatusBadRequest, "validation_failed", tc.field)
		})
	}
	if sms, err := srv.SimCtl.SMS(ctx, acct.Phone); err != nil || len(sms) != 0 {
		t.Fatalf("the bank texted %d codes (%v), want none", len(sms), err)
	}
	var members int
	if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM members WHERE merchant_id = $1`, m.ID).Scan(&members); err != nil || members != 0 {
		t.Fatalf("%d members (%v), want none", members, err)
	}
}
