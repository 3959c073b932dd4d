//go:build devfaults

package vaultkeys_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quickpay/quickpay/vaultkeys"
)

// TestPoolRecoversFromDevFaults fires each dev-only HSM fault (the soak's
// switch, built with -tags devfaults) under a running pool, with workers
// encrypting, decrypting and fingerprinting throughout: every operation
// must succeed, the pool having discarded what broke and logged in again.
func TestPoolRecoversFromDevFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*vaultkeys.HSM, context.Context) error
	}{
		{"all sessions closed", (*vaultkeys.HSM).DevCloseAllSessions},
		{"logged out", (*vaultkeys.HSM).DevLogout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			v := newVault(t, nil, 4)
			h := v.HSM()

			stop := make(chan struct{})
			var ops, fails atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for g := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						aad := []byte(fmt.Sprintf("g%d-%d", g, i))
						ct, err := v.Encrypt(ctx, []byte(panA), aad)
						if err == nil {
							_, err = v.Decrypt(ctx, ct, aad, access)
						}
						if err == nil {
							_, err = v.Fingerprint(ctx, vaultkeys.DomainPAN, []byte(panA))
						}
						ops.Add(1)
						if err != nil {
							fails.Add(1)
							firstErr.CompareAndSwap(nil, err)
						}
					}
				}()
			}
			for round := range 3 {
				mark := ops.Load()
				waitFor(t, func() bool { return ops.Load() > mark+30 })
				before := h.Stats()
				if err := tc.fault(h, ctx); err != nil {
					close(stop)
					wg.Wait()
					t.Fatalf("round %d: fault: %v", round, err)
				}
				mark = ops.Load()
				waitFor(t, func() bool { return ops.Load() > mark+30 })
				if after := h.Stats(); after.Logins <= before.Logins {
					t.Errorf("round %d: the pool did not log in again (before %+v, after %+v)", round, before, after)
				}
			}
			close(stop)
			wg.Wait()
			if n := fails.Load(); n > 0 {
				t.Fatalf("%d of %d operations failed across the faults; first: %v", n, ops.Load(), firstErr.Load())
			}
			if err := h.Ping(ctx); err != nil {
				t.Fatalf("ping after the faults: %v", err)
			}
			if s := h.Stats(); s.InUse != 0 || s.Idle > s.PoolCapacity {
				t.Errorf("pool out of bounds after the faults: %+v", s)
			}
		})
	}
}
