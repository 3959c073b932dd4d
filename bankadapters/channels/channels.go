// Package channels builds the bank adapters from their channel settings in
// HashiCorp Vault: one KV v2 secret per bank at <prefix>/<code> (default
// secret/quickpay/banks/ICBC) with fields
//
//	dialect              a bankadapters.Dialect: "json-hmac" or "form-rsa"
//	merchant_no          the platform's merchant number at the bank
//	hmac_secret          json-hmac: the shared secret
//	bank_public_key_pem  form-rsa: the bank's key that signs its answers
//	base_url             optional; overrides Config.BaseURL for this bank
//
// form-rsa requests are signed in the HSM with qp-bank-<code>. A secret
// naming another dialect, or none, is an error at Open: no bank falls back
// to a dialect it did not name. A new dialect is one more case in open.
package channels

import (
	"context"
	"errors"
	"fmt"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/bankadapters/jsonhmac"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// SecretReader reads a KV v2 secret; *vaultkeys.Secrets is one.
type SecretReader interface {
	Read(ctx context.Context, path string) (map[string]any, error)
}

// Config says where the settings are and how to reach the banks.
type Config struct {
	Secrets SecretReader // Required.
	// Signer returns the HSM signer for a form-rsa bank; (*vaultkeys.HSM).BankSigner fits. Required for form-rsa banks.
	Signer func(code string) formrsa.Signer
	// Prefix is the KV path holding one secret per bank. Defaults to "secret/quickpay/banks".
	Prefix string
	// BaseURL is the banks' host unless a bank's secret names its own.
	BaseURL string
	// BINs routes cards. Defaults to bankadapters.DefaultBINs().
	BINs []bankadapters.BIN
	// Options are the adapters' transport settings.
	Options bankadapters.CallOptions
	// Limits bound each bank's calls (bankadapters.WithLimit), by bank
	// code. A bank without one is unlimited.
	Limits map[string]bankadapters.Limit
	// Observer records every bank's calls (metrics, spans), the wait at
	// its limit included. Nil records nothing.
	Observer *bankadapters.Observer
}

// Registry holds the adapters and the BIN router.
type Registry struct {
	Router *bankadapters.Router
	banks  map[string]bankadapters.Bank
}

// Bank returns the adapter for code.
func (r *Registry) Bank(code string) (bankadapters.Bank, bool) {
	b, ok := r.banks[code]
	return b, ok
}

// Route returns where pan routes, or bankadapters.ErrCardUnsupported.
func (r *Registry) Route(pan sensitive.PAN) (bankadapters.CardInfo, error) {
	return r.Router.Route(pan)
}

// Codes lists the connected banks.
func (r *Registry) Codes() []string {
	out := make([]string, 0, len(r.banks))
	for c := range r.banks {
		out = append(out, c)
	}
	return out
}

// Open builds an adapter for every bank in the BIN table.
func Open(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Secrets == nil {
		return nil, errors.New("channels: Config needs Secrets")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "secret/quickpay/banks"
	}
	if cfg.BINs == nil {
		cfg.BINs = bankadapters.DefaultBINs()
	}
	r := &Registry{Router: bankadapters.NewRouter(cfg.BINs), banks: map[string]bankadapters.Bank{}}
	for _, b := range cfg.BINs {
		if _, done := r.banks[b.BankCode]; done {
			continue
		}
		bank, err := open(ctx, cfg, b.BankCode)
		if err != nil {
			return nil, err
		}
		r.banks[b.BankCode] = cfg.Observer.Observe(bankadapters.WithLimit(bank, cfg.Limits[b.BankCode]))
	}
	for code := range cfg.Limits {
		if _, ok := r.banks[code]; !ok {
			return nil, fmt.Errorf("QUICKPAY_BANK_LIMITS names %s, which is no bank here", code)
		}
	}
	return r, nil
}

func open(ctx context.Context, cfg Config, code string) (bankadapters.Bank, error) {
	path := cfg.Prefix + "/" + code
	data, err := cfg.Secrets.Read(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("bank %s channel settings: %w", code, err)
	}
	str := func(k string) string { s, _ := data[k].(string); return s }
	base := cfg.BaseURL
	if u := str("base_url"); u != "" {
		base = u
	}
	if base == "" {
		return nil, fmt.Errorf("bank %s: no base URL (set QUICKPAY_BANKSIM_URL or base_url in %s)", code, path)
	}
	switch d := bankadapters.Dialect(str("dialect")); d {
	case bankadapters.DialectJSONHMAC:
		return jsonhmac.New(jsonhmac.Config{Code: code, BaseURL: base, MerchantNo: str("merchant_no"),
			Secret: []byte(str("hmac_secret")), CallOptions: cfg.Options})
	case bankadapters.DialectFormRSA:
		if cfg.Signer == nil {
			return nil, fmt.Errorf("bank %s is form-rsa but no HSM signer is configured", code)
		}
		return formrsa.New(formrsa.Config{Code: code, BaseURL: base, MerchantNo: str("merchant_no"),
			Signer: cfg.Signer(code), BankPublicKeyPEM: str("bank_public_key_pem"), CallOptions: cfg.Options})
	default:
		return nil, fmt.Errorf("bank %s: %s has dialect %q, want json-hmac or form-rsa", code, path, d)
	}
}
