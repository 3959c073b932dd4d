package webhooks

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
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
