package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublicAddr(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"8.8.8.8":              true,
		"2001:4860:4860::8888": true,
		"127.0.0.1":            false,
		"::1":                  false,
		"::ffff:127.0.0.1":     false,
		"10.1.2.3":             false,
		"172.16.0.1":           false,
		"192.168.1.1":          false,
		"169.254.169.254":      false, // cloud metadata
		"100.64.0.1":           false,
		"fc00::1":              false,
		"fe80::1":              false,
		"0.0.0.0":              false,
		"224.0.0.1":            false,
		// Issue 18: ranges netip does not classify.
		"0.1.2.3":            false, // 0.0.0.0/8
		"198.18.0.1":         false, // benchmarking 198.18.0.0/15
		"198.19.255.254":     false,
		"198.20.0.1":         true,  // just past it
		"64:ff9b::a00:1":     false, // NAT64 of 10.0.0.1
		"64:ff9b::808:808":   false, // NAT64 of a public address: refused whole
		"64:ff9b:1::1":       false, // NAT64 local use
		"2002:7f00:1::1":     false, // 6to4 of 127.0.0.1
		"2002:808:808::1":    false,
		"::127.0.0.1":        false, // IPv4-compatible
		"::8.8.8.8":          false,
		"fec0::1":            false, // site-local
		"::ffff:0:a9fe:a9fe": false, // IPv4-translated (SIIT) 169.254.169.254
		"feff::1":            false,
		"2001::1":            false, // Teredo
		"2003::1":            true,
		"255.255.255.255":    false,
		"240.0.0.1":          false,
		"fe80::1%eth0":       false,
		// IPv4-mapped forms are judged by the address they map.
		"::ffff:8.8.8.8":     true,
		"::ffff:10.0.0.1":    false,
		"::ffff:198.18.0.1":  false,
		"::ffff:0.1.2.3":     false,
		"::ffff:100.64.0.1":  false,
		"::ffff:169.254.1.1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestDeliveryBatches(t *testing.T) {
	t.Parallel()
	// 120 events of merchant a and 3 of b, interleaved at the start; every
	// fourth of a's not subscribed.
	var evs []Event
	var subscribed []bool
	var wantA, wantB []string
	for i := range 123 {
		m := "a"
		if i%41 == 1 {
			m = "b"
		}
		ev := Event{ID: fmt.Sprintf("evt_%d", i), MerchantID: m}
		sub := m == "b" || i%4 != 0
		evs, subscribed = append(evs, ev), append(subscribed, sub)
		switch {
		case sub && m == "a":
			wantA = append(wantA, ev.ID)
		case sub:
			wantB = append(wantB, ev.ID)
		}
	}
	got := deliveryBatches(evs, subscribed)
	var gotA, gotB []string
	for i, a := range got {
		if len(a.EventIDs) == 0 || len(a.EventIDs) > MaxDeliverBatch || a.EventID != "" {
			t.Errorf("job %d carries %d events (event_id %q), want 1..%d in event_ids", i, len(a.EventIDs), a.EventID, MaxDeliverBatch)
		}
		switch a.MerchantID {
		case "a":
			gotA = append(gotA, a.EventIDs...)
		case "b":
			gotB = append(gotB, a.EventIDs...)
		}
	}
	// a has 89 subscribed events: two jobs (50, 39); b one.
	if len(got) != 3 || !slices.Equal(gotA, wantA) || !slices.Equal(gotB, wantB) {
		t.Errorf("%d jobs; a's carry %v, b's %v; want 3 jobs carrying %v and %v in order", len(got), gotA, gotB, wantA, wantB)
	}
	if got := deliveryBatches(evs[:1], []bool{false}); len(got) != 0 {
		t.Errorf("no subscribed event: %d jobs", len(got))
	}
}

func TestDeliverArgsEventIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args DeliverArgs
		want []string
	}{
		{DeliverArgs{MerchantID: "m", EventIDs: []string{"evt_1", "evt_2"}}, []string{"evt_1", "evt_2"}},
		// A job enqueued before jobs carried several events.
		{DeliverArgs{MerchantID: "m", EventID: "evt_0"}, []string{"evt_0"}},
	} {
		if got := tc.args.eventIDs(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v.eventIDs() = %v, want %v", tc.args, got, tc.want)
		}
	}
	var old DeliverArgs
	if err := json.Unmarshal([]byte(`{"event_id":"evt_0","merchant_id":"m"}`), &old); err != nil ||
		!slices.Equal(old.eventIDs(), []string{"evt_0"}) || old.MerchantID != "m" {
		t.Errorf("an old job's args decode to %+v (%v)", old, err)
	}
}

// The default client checks every request, whatever SetEndpoint let
// through: http is refused before any connection, and the dialled
// address after DNS (a real name, localhost, resolved at dial time:
// what a rebinding name does).
func TestDefaultClientRefusals(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	strict := newClient(false)
	for name, tc := range map[string]struct {
		url  string
		want error
	}{
		"plain http":                  {fmt.Sprintf("http://127.0.0.1:%d/", port), errNotHTTPS},
		"localhost, resolved at dial": {fmt.Sprintf("https://localhost:%d/", port), errNonPublic},
		"loopback literal":            {fmt.Sprintf("https://127.0.0.1:%d/", port), errNonPublic},
		"mapped benchmark":            {"https://[::ffff:198.18.0.1]:1/", errNonPublic},
		"nat64":                       {"https://[64:ff9b::a00:1]:1/", errNonPublic},
		"this network":                {"https://0.0.0.1:1/", errNonPublic},
	} {
		res, err := strict.Get(tc.url)
		if err == nil {
			_ = res.Body.Close()
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests through the strict client", n)
	}
	// The refusals are the filter's, not a broken client: the permissive
	// one reaches the same server.
	loose := newClient(true)
	loose.Transport.(*http.Transport).TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	res, err := loose.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("allow-private client: %v", err)
	}
	_ = res.Body.Close()
	if hits.Load() != 1 {
		t.Errorf("allow-private client: server got %d requests, want 1", hits.Load())
	}
}

// TestPostErrorNamesNoURL: a delivery that fails in transport says what
// failed without the endpoint's URL, whose path or query may hold the
// merchant's secret (the error reaches logs, the job's errors and spans).
func TestPostErrorNamesNoURL(t *testing.T) {
	t.Parallel()
	w := &DeliverWorker{cfg: WorkerConfig{Client: newClient(false), Timeout: 5 * time.Second}}
	_, _, err := w.post(context.Background(), "https://127.0.0.1:1/hooks/s3cret-path?token=s3cret-query", "sig", []byte(`{}`))
	if !errors.Is(err, errNonPublic) {
		t.Fatalf("err = %v, want the address refusal", err)
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret") || strings.Contains(msg, "127.0.0.1:1/") {
		t.Errorf("the error names the URL: %q", msg)
	}
}
