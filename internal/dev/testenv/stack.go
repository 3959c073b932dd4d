package testenv

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Stack is quickpay's world for domain and API tests: the package's
// database, HSM token and Vault, a key vault with its keys, and a fresh
// banksim on a loopback listener that knows the platform, whose channel
// settings are in Vault and open as bank adapters.
type Stack struct {
	Pool    *pgxpool.Pool
	HSM     *vaultkeys.HSM
	Secrets *vaultkeys.Secrets
	Vault   *vaultkeys.Vault
	Sim     *sim.Sim
	SimURL  string
	SimCtl  *simclient.Client
	Banks   *channels.Registry
	// BanksPrefix is the Vault KV path under which Banks' channel settings
	// are, one secret per bank code.
	BanksPrefix string
	// channels are Banks' channel settings by bank code (merchant_no,
	// dialect, hmac_secret…), to register the platform anew (SetNotifyURL).
	channels map[string]map[string]any
}

// NewStack builds a Stack for t; everything stops when t ends.
func NewStack(t testing.TB) *Stack {
	t.Helper()
	return NewStackWith(t, StackConfig{})
}

// StackConfig adjusts a Stack.
type StackConfig struct {
	// SimMaxHold is how long banksim holds a "timeout" fault's answer
	// (sim.Config.MaxHold); with the fault's apply set, every faulted call
	// is answered after it, which makes a slow bank. Defaults to banksim's.
	SimMaxHold time.Duration
}

// NewStackWith builds a Stack for t as cfg says; everything stops when t
// ends.
func NewStackWith(t testing.TB, cfg StackConfig) *Stack {
	t.Helper()
	ctx := context.Background()
	st := &Stack{Pool: Pool(t), HSM: HSM(t, 8), Secrets: Secrets(t)}
	v, err := vaultkeys.New(vaultkeys.Config{Pool: st.Pool, HSM: st.HSM})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	st.Vault = v

	s, err := sim.New(sim.Config{CallbackBackoff: 100 * time.Millisecond, MaxHold: cfg.SimMaxHold})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close)
	st.Sim, st.SimURL, st.SimCtl = s, srv.URL, simclient.NewClient(srv.URL)
	pkgEnv.mu.Lock()
	pkgEnv.sims = append(pkgEnv.sims, s)
	pkgEnv.mu.Unlock()

	prefix := "secret/quickpay/banks-" + randHex(4)
	st.BanksPrefix = prefix
	chans, err := st.SimCtl.ConnectPlatform(ctx, func(code string) string { return "QP" + code + randHex(3) }, st.Vault.BankPublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for code, ch := range chans {
		if err := st.Secrets.Write(ctx, prefix+"/"+code, ch); err != nil {
			t.Fatal(err)
		}
	}
	st.channels = chans
	st.Banks, err = channels.Open(ctx, channels.Config{
		Secrets: st.Secrets, Prefix: prefix, BaseURL: srv.URL,
		Signer:  func(code string) formrsa.Signer { return st.HSM.BankSigner(code) },
		Options: bankadapters.CallOptions{Timeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// SetNotifyURL registers notifyURL(code) at banksim as the notify_url of
// the platform's merchant number at each bank of Banks: where the bank
// posts its agreement_terminated notices, quickpay's
// /callbacks/banks/{code} (api.CallbackURL) once a test serves the API.
// The channels keep their credentials; "" leaves a bank without one.
func (st *Stack) SetNotifyURL(t testing.TB, notifyURL func(code string) string) {
	t.Helper()
	ctx := context.Background()
	for code, ch := range st.channels {
		m := simclient.Merchant{BankCode: code, NotifyURL: notifyURL(code)}
		m.MerchantNo, _ = ch["merchant_no"].(string)
		switch d, _ := ch["dialect"].(string); bankadapters.Dialect(d) {
		case bankadapters.DialectJSONHMAC:
			m.HMACSecret, _ = ch["hmac_secret"].(string)
		case bankadapters.DialectFormRSA:
			pem, err := st.Vault.BankPublicKeyPEM(ctx, code)
			if err != nil {
				t.Fatal(err)
			}
			m.PublicKeyPEM = pem
		default:
			t.Fatalf("testenv: bank %s has dialect %q", code, d)
		}
		if err := st.SimCtl.RegisterMerchant(ctx, m); err != nil {
			t.Fatalf("testenv: notify_url at %s: %v", code, err)
		}
	}
}

// Merchant inserts a merchant row for tests that need a tenant but not its
// API credentials, and returns its id.
func Merchant(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	id := ids.New("mch")
	_, err := pool.Exec(context.Background(), `INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash)
		VALUES ($1, 'test merchant', '{bind,withhold}', $2, 'not-a-hash')`, id, "qpc_test_"+randHex(8))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
