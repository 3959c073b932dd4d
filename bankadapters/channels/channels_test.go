package channels_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestOpenFromVault(t *testing.T) {
	ctx := context.Background()
	sec := testenv.Secrets(t)
	h := testenv.HSM(t, 2)
	if _, err := h.EnsureBankKey(ctx, "CCB"); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	bankPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	prefix := "secret/quickpay/test-banks"
	for code, data := range map[string]map[string]any{
		"ICBC": {"dialect": "json-hmac", "merchant_no": "M1", "hmac_secret": "s1"},
		"CMB":  {"dialect": "json-hmac", "merchant_no": "M3", "hmac_secret": "s3"},
		"CCB":  {"dialect": "form-rsa", "merchant_no": "M2", "bank_public_key_pem": bankPEM},
	} {
		if err := sec.Write(ctx, prefix+"/"+code, data); err != nil {
			t.Fatal(err)
		}
	}
	signer := func(code string) formrsa.Signer { return h.BankSigner(code) }

	reg, err := channels.Open(ctx, channels.Config{Secrets: sec, Signer: signer, Prefix: prefix, BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	codes := reg.Codes()
	sort.Strings(codes)
	if strings.Join(codes, ",") != "CCB,CMB,ICBC" {
		t.Fatalf("banks = %v", codes)
	}
	if b, ok := reg.Bank("CCB"); !ok || b.Code() != "CCB" {
		t.Fatalf("Bank(CCB) = %v, %v", b, ok)
	}

	t.Run("missing bank settings name the bank", func(t *testing.T) {
		_, err := channels.Open(ctx, channels.Config{Secrets: sec, Signer: signer, Prefix: "secret/quickpay/none", BaseURL: "http://x"})
		if !errors.Is(err, vaultkeys.ErrSecretNotFound) || !strings.Contains(err.Error(), "bank ") {
			t.Fatalf("err = %v", err)
		}
	})
	// A dialect open does not know, or none, fails: no bank silently
	// speaks json-hmac.
	for name, dialect := range map[string]string{"unknown dialect is refused": "soap", "missing dialect is refused": ""} {
		t.Run(name, func(t *testing.T) {
			p := "secret/quickpay/bad-banks-" + dialect
			for _, code := range []string{"ICBC", "CCB", "CMB"} {
				if err := sec.Write(ctx, p+"/"+code, map[string]any{"dialect": dialect, "merchant_no": "M", "hmac_secret": "s"}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := channels.Open(ctx, channels.Config{Secrets: sec, Signer: signer, Prefix: p, BaseURL: "http://x"})
			if err == nil || !strings.Contains(err.Error(), `dialect "`+dialect+`"`) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
