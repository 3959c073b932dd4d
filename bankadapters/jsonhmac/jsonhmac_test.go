package jsonhmac_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/jsonhmac"
	"github.com/quickpay/quickpay/internal/dev/sim"
)

// startSim serves a fresh banksim on loopback, stopped when tb ends.
func startSim(tb testing.TB) string {
	tb.Helper()
	s, err := sim.New(sim.Config{CallbackBackoff: 100 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	tb.Cleanup(srv.Close)
	tb.Cleanup(s.Close) // runs first: settlements and callbacks stop before the server
	return srv.URL
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// register makes a merchant number with a random secret at code and
// returns its registration and a constructor for adapters that use it.
func register(tb testing.TB, baseURL, code string) (conformance.Merchant, func(baseURL string, opts bankadapters.CallOptions) (*jsonhmac.Bank, error)) {
	tb.Helper()
	m := conformance.Merchant{BankCode: code, MerchantNo: "QP" + code + randomHex(4), HMACSecret: randomHex(32)}
	if err := conformance.NewClient(baseURL).RegisterMerchant(context.Background(), m); err != nil {
		tb.Fatal(err)
	}
	return m, func(url string, opts bankadapters.CallOptions) (*jsonhmac.Bank, error) {
		return jsonhmac.New(jsonhmac.Config{Code: code, BaseURL: url, MerchantNo: m.MerchantNo, Secret: []byte(m.HMACSecret), CallOptions: opts})
	}
}

// jsonHMAC is the dialect as the conformance suite needs to know it: its
// codes (docs/banksim.md, "Result codes"), a JSON body, and the signature
// in the X-Signature header.
var jsonHMAC = conformance.Dialect{
	Name:      bankadapters.DialectJSONHMAC,
	CodeField: "code",
	Codes: map[string]string{
		"success": "0000", "processing": "0001", "sign_invalid": "1001", "id_mismatch": "2002",
		"card_frozen": "2007", "insufficient_funds": "4001", "single_limit": "4002", "daily_limit": "4003",
		"agreement_invalid": "4004", "try_tomorrow": "4005", "order_conflict": "4007",
		"order_not_refundable": "4008", "refund_window_expired": "4009", "refund_exceeds": "4010",
	},
	SetField: conformance.SetJSONField,
	Unsign: func(h http.Header, body []byte) (http.Header, []byte) {
		h = h.Clone()
		h.Del("X-Signature")
		return h, body
	},
}

func harness(t *testing.T, code string, async bool) conformance.Harness {
	t.Helper()
	base := startSim(t)
	m, newBank := register(t, base, code)
	return conformance.Harness{
		BankCode: code, MerchantNo: m.MerchantNo, Merchant: m, BaseURL: base, Async: async, Dialect: jsonHMAC,
		New: func(t *testing.T, baseURL string, opts bankadapters.CallOptions) bankadapters.Bank {
			t.Helper()
			b, err := newBank(baseURL, opts)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
	}
}

func TestICBCConformance(t *testing.T) {
	t.Parallel()
	conformance.Run(t, harness(t, "ICBC", false))
}

func TestCMBConformance(t *testing.T) {
	t.Parallel()
	conformance.Run(t, harness(t, "CMB", true))
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	for _, cfg := range []jsonhmac.Config{
		{BaseURL: "http://x", MerchantNo: "m", Secret: []byte("s")},
		{Code: "ICBC", MerchantNo: "m", Secret: []byte("s")},
		{Code: "ICBC", BaseURL: "http://x", Secret: []byte("s")},
		{Code: "ICBC", BaseURL: "http://x", MerchantNo: "m"},
	} {
		if _, err := jsonhmac.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an incomplete config", cfg)
		}
	}
}

// BenchmarkCharge is ICBC's synchronous charge against an in-process,
// zero-latency banksim: HMAC signing and verification both ways, JSON, and
// loopback HTTP (conformance.BenchmarkCharges).
//
//	go test -run '^$' -bench Charge -benchtime 2s -count 6 ./bankadapters/jsonhmac/
func BenchmarkCharge(b *testing.B) {
	base := startSim(b)
	_, newBank := register(b, base, "ICBC")
	bank, err := newBank(base, bankadapters.CallOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	conformance.BenchmarkCharges(b, bank, base)
}
