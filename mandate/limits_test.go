package mandate_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

// countingBank passes calls to a real bank (banksim) and records the
// charges that reach it: how many at once at most, and when each began.
type countingBank struct {
	bankadapters.Bank
	inside, most atomic.Int32
	mu           sync.Mutex
	starts       []time.Time
}

func (b *countingBank) Charge(ctx context.Context, req bankadapters.ChargeRequest) (bankadapters.ChargeResult, error) {
	n := b.inside.Add(1)
	defer b.inside.Add(-1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	b.mu.Lock()
	b.starts = append(b.starts, time.Now())
	b.mu.Unlock()
	return b.Bank.Charge(ctx, req)
}

// TestChargeWorkersKeepTheBankLimits: a charge job sends its batch at once,
// and the bank's gate (bankadapters.WithLimit, as channels.Open wraps every
// adapter) holds its calls to the bank's concurrency and rate.
func TestChargeWorkersKeepTheBankLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit bankadapters.Limit
		check func(t *testing.T, b *countingBank)
	}{
		{"no more than Concurrent calls in flight at one bank", bankadapters.Limit{Concurrent: 2},
			func(t *testing.T, b *countingBank) {
				if most := b.most.Load(); most != 2 {
					t.Errorf("at most %d charges at the bank at once, want exactly the limit, 2", most)
				}
			}},
		{"calls beyond the burst wait for the rate", bankadapters.Limit{PerSecond: 20, Burst: 1},
			func(t *testing.T, b *countingBank) {
				b.mu.Lock()
				defer b.mu.Unlock()
				first, last := b.starts[0], b.starts[0]
				for _, s := range b.starts {
					if s.Before(first) {
						first = s
					}
					if s.After(last) {
						last = s
					}
				}
				// 1 at once, then 4 at 20/s: at least 200 ms (less a tick of slack).
				if span := last.Sub(first); span < 190*time.Millisecond {
					t.Errorf("5 charges at 20/s with burst 1 went out within %s, want ≥ 200ms", span)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var counted *countingBank
			w := newWorld(t, func(c *mandate.Config) {
				c.Banks = newLimitedBanks(c.Banks, map[string]bankadapters.Limit{"ICBC": tc.limit},
					func(b bankadapters.Bank) bankadapters.Bank { counted = &countingBank{Bank: b}; return counted })
			})
			var cards []card
			for i := range 5 {
				c := w.bindCard(t, "ICBC", 1_000_000)
				w.mandate(t, c, w.dueToday(int64(3_000+i)))
				cards = append(cards, c)
			}
			if st := w.runDue(t); st.Claimed != 5 {
				t.Fatalf("claimed %d, want 5 (one job: Config.JobBatch is 20)", st.Claimed)
			}
			if n := len(counted.starts); n != 5 {
				t.Fatalf("%d charges reached the bank, want 5", n)
			}
			tc.check(t, counted)
			for _, c := range cards {
				if l := w.ledger(t, c); len(l) != 1 {
					t.Errorf("card's ledger = %+v, want one debit", l)
				}
				w.checkBooks(t, c)
			}
		})
	}
}

// TestChargeQueuedPastItsDeadlineIsNotSent: a charge (or a rerun's query)
// that waits for the bank's one call slot beyond its job's time never
// leaves quickpay (bankadapters.ErrNotSent). Its attempt is not unknown:
// it stays processing, with no query chain, and the job's next run sends
// it under the same order number.
func TestChargeQueuedPastItsDeadlineIsNotSent(t *testing.T) {
	ctx := context.Background()
	idle := "idle_" + randHex(4) // a queue nobody works: the test runs the job
	w := newWorld(t, limitBanks(map[string]bankadapters.Limit{"ICBC": {Concurrent: 1}}),
		func(c *mandate.Config) { c.Queue, c.JobBatch = idle, 1 })
	t.Cleanup(func() { _, _ = w.Pool.Exec(ctx, `DELETE FROM river_job WHERE queue = $1`, idle) })
	c := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, c, w.dueToday(5_500))
	if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 1 {
		t.Fatalf("run = %+v, %v", st, err)
	}
	orderNo := w.oneCharge(t, m).Attempts[0].OrderNo

	// Another call holds the bank's one slot until it times out (2 s).
	bank, _ := w.cfg.Banks.Bank("ICBC")
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "timeout"})
	held := make(chan struct{})
	go func() {
		defer close(held)
		_, _ = bank.Query(ctx, "QPHELD"+randHex(6))
	}()
	w.waitFor(t, 10*time.Second, func() bool { return w.armedFaults(t) == 0 },
		func() string { return "the holding call did not reach the bank" })

	stillProcessing := func(t *testing.T) {
		t.Helper()
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeProcessing || len(ch.Attempts) != 1 || ch.Attempts[0].Status != mandate.AttemptProcessing {
			t.Errorf("charge %s with attempts %+v, want processing with its one attempt processing", ch.Status, ch.Attempts)
		}
		var queries int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'order_no' = $2`,
			mandate.QueryArgs{}.Kind(), orderNo).Scan(&queries); err != nil {
			t.Fatal(err)
		}
		if queries != 0 {
			t.Errorf("%d query jobs for an attempt the bank never saw", queries)
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Errorf("ledger = %+v, want no debit", l)
		}
	}
	for _, rerun := range []bool{false, true} {
		jctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := w.svc.Execute(jctx, []string{orderNo}, rerun)
		cancel()
		if !errors.Is(err, bankadapters.ErrNotSent) {
			t.Fatalf("job (rerun %v) queued past its time: %v, want ErrNotSent", rerun, err)
		}
		stillProcessing(t)
	}
	<-held
	// The job's next run asks the bank, which never got the order, and
	// sends it under the same number.
	if err := w.svc.Execute(ctx, []string{orderNo}, true); err != nil {
		t.Fatal(err)
	}
	ch := w.oneCharge(t, m)
	if ch.Status != mandate.ChargeSucceeded || len(ch.Attempts) != 1 || ch.Attempts[0].OrderNo != orderNo {
		t.Errorf("charge %s with attempts %+v, want succeeded under %s", ch.Status, ch.Attempts, orderNo)
	}
	w.checkBooks(t, c)
}
