package mandate

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimitersHoldConcurrencyAndRate(t *testing.T) {
	t.Parallel()
	l := newLimiters(map[string]Limit{"ICBC": {Concurrent: 2}, "CCB": {PerSecond: 20, Burst: 1}})

	t.Run("no more than Concurrent calls in flight at one bank", func(t *testing.T) {
		var inFlight, peak atomic.Int32
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				release, err := l.acquire(context.Background(), "ICBC")
				if err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(2 * time.Millisecond) // hold the slot, as a bank call does
				inFlight.Add(-1)
				release()
			}()
		}
		wg.Wait()
		if p := peak.Load(); p != 2 {
			t.Fatalf("peak concurrent calls = %d, want exactly the limit, 2", p)
		}
	})

	t.Run("calls beyond the burst wait for the rate", func(t *testing.T) {
		start := time.Now()
		for range 5 {
			release, err := l.acquire(context.Background(), "CCB")
			if err != nil {
				t.Fatal(err)
			}
			release()
		}
		// 1 at once, then 4 at 20/s: at least 200 ms (less a tick of slack).
		if el := time.Since(start); el < 190*time.Millisecond {
			t.Fatalf("5 calls at 20/s with burst 1 took %s, want ≥ 200ms", el)
		}
	})

	t.Run("a bank without limits does not wait", func(t *testing.T) {
		start := time.Now()
		for range 1000 {
			release, err := l.acquire(context.Background(), "CMB")
			if err != nil {
				t.Fatal(err)
			}
			release()
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("1000 unlimited calls took %s", el)
		}
	})

	t.Run("a cancelled wait gives up with the context's error", func(t *testing.T) {
		r1, _ := l.acquire(context.Background(), "ICBC")
		r2, _ := l.acquire(context.Background(), "ICBC")
		defer r1()
		defer r2()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := l.acquire(ctx, "ICBC"); err == nil {
			t.Fatal("a third call got a slot while two were held")
		}
	})
}
