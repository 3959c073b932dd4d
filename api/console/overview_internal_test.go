package console

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/opsview"
)

// overviewReads is a Views whose Overview answers the figures it is given,
// one read at a time when gated; other methods are not used here.
type overviewReads struct {
	Views
	mu    sync.Mutex
	calls int
	next  int64 // the UnknownAttempts the next read answers
	gate  chan struct{}
}

func (v *overviewReads) Overview(ctx context.Context, day time.Time, loc *time.Location) (opsview.Overview, error) {
	v.mu.Lock()
	v.calls++
	n, gate := v.next, v.gate
	v.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return opsview.Overview{UnknownAttempts: n}, nil
}

func (v *overviewReads) state() (calls int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls
}

// TestOverviewServedWhileRenewed: the first view of a day reads; later
// views never wait for the database: figures past OverviewTTL are shown
// while one background read renews them.
func TestOverviewServedWhileRenewed(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	views := &overviewReads{next: 1}
	c := &Console{cfg: Config{Views: views, OverviewTTL: 10 * time.Second, Now: clock, Location: time.UTC},
		log: slog.New(slog.DiscardHandler)}
	get := func() int64 {
		t.Helper()
		o, err := c.overviewCache.get(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return o.UnknownAttempts
	}

	if got := get(); got != 1 || views.state() != 1 {
		t.Fatalf("first view: %d after %d reads; want 1 after 1", got, views.state())
	}
	advance(5 * time.Second)
	if got := get(); got != 1 || views.state() != 1 {
		t.Fatalf("a view within the TTL: %d after %d reads; want the kept 1, no read", got, views.state())
	}

	// Past the TTL: the kept figures are shown at once while a read
	// (held at the gate) renews them; a second view starts no second read.
	gate := make(chan struct{})
	views.mu.Lock()
	views.next, views.gate = 2, gate
	views.mu.Unlock()
	advance(6 * time.Second)
	if got := get(); got != 1 {
		t.Fatalf("a view past the TTL showed %d; want the kept 1 while it renews", got)
	}
	if got := get(); got != 1 {
		t.Fatalf("a second view while renewing showed %d; want 1", got)
	}
	close(gate)
	deadline := time.Now().Add(10 * time.Second)
	for get() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the background read's figures never showed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := views.state(); n != 2 {
		t.Fatalf("%d reads; want 2 (one background read for both stale views)", n)
	}

	// A new day reads before it shows: yesterday's figures are not today's.
	views.mu.Lock()
	views.next, views.gate = 3, nil
	views.mu.Unlock()
	advance(24 * time.Hour)
	if got := get(); got != 3 {
		t.Fatalf("the first view of a new day showed %d; want 3 read then", got)
	}
}
