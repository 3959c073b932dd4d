package formrsa_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

// The platform's CCB key is in SoftHSM: testenv provisions the token (and
// the Vault holding its PIN).
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const bank = "CCB"

// setup serves a fresh banksim on loopback, registers a merchant number
// whose public key is the HSM's qp-bank-CCB, and returns banksim's URL, the
// registration and a constructor for adapters that sign in the HSM.
func setup(tb testing.TB) (string, conformance.Merchant, func(baseURL string, opts bankadapters.CallOptions) (*formrsa.Bank, error)) {
	tb.Helper()
	ctx := context.Background()
	hsm := testenv.HSM(tb, 8)
	if _, err := hsm.EnsureBankKey(ctx, bank); err != nil {
		tb.Fatal(err)
	}
	signer := hsm.BankSigner(bank)
	pub, err := signer.PublicKeyPEM(ctx)
	if err != nil {
		tb.Fatal(err)
	}

	s, err := sim.New(sim.Config{CallbackBackoff: 100 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	tb.Cleanup(srv.Close)
	tb.Cleanup(s.Close)

	c := conformance.NewClient(srv.URL)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	m := conformance.Merchant{BankCode: bank, MerchantNo: "QPCCB" + hex.EncodeToString(b), PublicKeyPEM: pub}
	if err := c.RegisterMerchant(ctx, m); err != nil {
		tb.Fatal(err)
	}
	info, err := c.Bank(ctx, bank)
	if err != nil {
		tb.Fatal(err)
	}
	if info.Dialect != bankadapters.DialectFormRSA || info.PublicKeyPEM == "" {
		tb.Fatalf("banksim's %s: dialect %q, public key %d bytes; want form-rsa with a key", bank, info.Dialect, len(info.PublicKeyPEM))
	}
	return srv.URL, m, func(baseURL string, opts bankadapters.CallOptions) (*formrsa.Bank, error) {
		return formrsa.New(formrsa.Config{
			Code: bank, BaseURL: baseURL, MerchantNo: m.MerchantNo, Signer: signer,
			BankPublicKeyPEM: info.PublicKeyPEM, CallOptions: opts,
		})
	}
}

// formRSA is the dialect as the conformance suite needs to know it: its
// codes (docs/banksim.md, "Result codes"), a form body, and the signature
// in its sign field.
var formRSA = conformance.Dialect{
	Name:      bankadapters.DialectFormRSA,
	CodeField: "ret_code",
	Codes: map[string]string{
		"success": "SUCCESS", "processing": "PROCESSING", "sign_invalid": "E_SIGN", "id_mismatch": "E_IDNO",
		"card_frozen": "E_FROZEN", "insufficient_funds": "E_BALANCE", "single_limit": "E_SINGLE_LIMIT",
		"daily_limit": "E_DAY_LIMIT", "agreement_invalid": "E_PROTOCOL", "try_tomorrow": "E_RETRY_TOMORROW",
		"order_conflict": "E_ORDER_CONFLICT", "order_not_refundable": "E_REFUND_ORDER",
		"refund_window_expired": "E_REFUND_EXPIRED", "refund_exceeds": "E_REFUND_AMOUNT",
	},
	SetField: conformance.SetFormField,
	Unsign: func(h http.Header, body []byte) (http.Header, []byte) {
		body, _ = conformance.SetFormField(body, "sign", "", false)
		return h, body
	},
}

func TestCCBConformance(t *testing.T) {
	base, m, newBank := setup(t)
	conformance.Run(t, conformance.Harness{
		BankCode: bank, MerchantNo: m.MerchantNo, Merchant: m, BaseURL: base, Dialect: formRSA,
		New: func(t *testing.T, baseURL string, opts bankadapters.CallOptions) bankadapters.Bank {
			t.Helper()
			b, err := newBank(baseURL, opts)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, _, newBank := setup(t)
	if _, err := newBank("", bankadapters.CallOptions{}); err == nil {
		t.Error("New accepted a config without BaseURL")
	}
	_, err := formrsa.New(formrsa.Config{Code: bank, BaseURL: "http://127.0.0.1:1", MerchantNo: "m",
		Signer: testenv.HSM(t, 1).BankSigner(bank), BankPublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"})
	if err == nil {
		t.Error("New accepted a bank key that does not parse")
	}
}

// BenchmarkCharge is CCB's synchronous charge against an in-process,
// zero-latency banksim (conformance.BenchmarkCharges): the request signed
// RSA-2048 in SoftHSM, banksim verifying it and signing its answer
// RSA-2048 (in Go, in this process: part of the figure), the adapter
// verifying that, and loopback HTTP.
//
//	QUICKPAY_DEVVAULT=$PWD/.quickpay/bin/devvault \
//	  go test -run '^$' -bench Charge -benchtime 2s -count 6 ./bankadapters/formrsa/
func BenchmarkCharge(b *testing.B) {
	base, _, newBank := setup(b)
	adapter, err := newBank(base, bankadapters.CallOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	conformance.BenchmarkCharges(b, adapter, base)
}
