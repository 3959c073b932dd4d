package webhooks_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/quickpay/quickpay/internal/webhooks"
)

// rebindingDNS is a stand-in resolver: it answers a public-looking name
// with an internal address, as a hostile DNS server would. No such server
// can be set up for real here; the dial-time half of the check is tested
// with a real name (deliver_internal_test.go).
type rebindingDNS map[string][]netip.Addr

func (r rebindingDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestSetEndpointRefusesNonPublicTargets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	rc, err := river.NewClient(riverpgxv5.New(e.pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	strict, err := webhooks.New(webhooks.Config{Pool: e.pool, Vault: e.vault, Jobs: rc, Clock: e.clock,
		Resolver: rebindingDNS{
			"internal.biller.example": {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.0.0.7")},
			"public.biller.example":   {netip.MustParseAddr("8.8.8.8")},
			"mapped.biller.example":   {netip.MustParseAddr("::ffff:198.18.0.9")},
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := newMerchant(t, e.pool)
	for name, url := range map[string]string{
		"plain http":                  "http://public.biller.example/hooks",
		"loopback":                    "https://127.0.0.1/hooks",
		"localhost":                   "https://localhost:8443/hooks",
		"localhost subdomain":         "https://api.localhost./hooks",
		"rfc 1918":                    "https://10.1.2.3/hooks",
		"this network":                "https://0.1.2.3/hooks",
		"benchmarking":                "https://198.18.4.5/hooks",
		"nat64":                       "https://[64:ff9b::a9fe:a9fe]/hooks",
		"6to4":                        "https://[2002:a9fe:a9fe::1]/hooks",
		"ipv4-compatible":             "https://[::169.254.169.254]/hooks",
		"site-local":                  "https://[fec0::1]/hooks",
		"ipv4-mapped loopback":        "https://[::ffff:127.0.0.1]/hooks",
		"ipv4-mapped benchmarking":    "https://[::ffff:198.18.0.1]/hooks",
		"name resolving to internal":  "https://internal.biller.example/hooks",
		"name resolving to mapped v4": "https://mapped.biller.example/hooks",
	} {
		_, err := strict.SetEndpoint(ctx, m, url, nil)
		var fe *webhooks.FieldError
		if !errors.As(err, &fe) || fe.Field != "url" || !errors.Is(err, webhooks.ErrInvalid) {
			t.Errorf("%s: SetEndpoint(%s) err = %v, want a field error on url", name, url, err)
		}
	}
	for name, url := range map[string]string{
		"public literal":             "https://8.8.8.8/hooks",
		"public v6 literal":          "https://[2001:4860:4860::8888]:8443/hooks",
		"name resolving to public":   "https://public.biller.example/hooks",
		"name not resolvable (yet)":  "https://nowhere.biller.example/hooks",
		"ipv4-mapped public address": "https://[::ffff:8.8.8.8]/hooks",
	} {
		if _, err := strict.SetEndpoint(ctx, m, url, nil); err != nil {
			t.Errorf("%s: SetEndpoint(%s) = %v, want accepted", name, url, err)
		}
	}
	// Dev's flag lets the local receivers in.
	if _, err := e.svc.SetEndpoint(ctx, m, "http://127.0.0.1:9/hooks", nil); err != nil {
		t.Errorf("allow-private service refused a loopback http URL: %v", err)
	}
}

// A strict worker sends nothing in clear: an http endpoint (one stored
// before https was required) gets an attempt that names the rule.
func TestDefaultClientRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, func(c *webhooks.WorkerConfig) { c.AllowPrivateNetworks = false })
	m := newMerchant(t, e.pool)
	recv := newReceiver(t, always(200))
	e.setEndpoint(t, m, recv.url, nil)
	ev := e.emit(t, m, webhooks.EventCardUnbound, map[string]string{"card_id": "card_1"})
	eventually(t, "a failed attempt", func() bool { return len(deliveries(t, e.pool, ev.ID)) >= 1 })
	if n := len(recv.requests()); n != 0 {
		t.Errorf("an http receiver got %d requests through the default client", n)
	}
	d := deliveries(t, e.pool, ev.ID)[0]
	if d.StatusCode != nil || d.Error == nil || !strings.Contains(*d.Error, "must use https") {
		t.Errorf("attempt = %+v, want an error naming https", d)
	}
}
