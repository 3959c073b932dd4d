package conformance

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
)

// BenchCallers are the concurrent callers BenchmarkCharges measures.
var BenchCallers = []int{1, 32}

// BenchmarkCharges measures bank's synchronous Charge against the banksim
// at baseURL, one sub-benchmark per entry of BenchCallers ("callers=32":
// b.RunParallel with 32 goroutines). Each op charges 1 yuan on a fresh
// order number, spread over 16 bound cards whose balance and limits no
// run exhausts; every op must succeed. Besides ns/op it reports ops/s.
func BenchmarkCharges(b *testing.B, bank bankadapters.Bank, baseURL string) {
	b.Helper()
	ctx := context.Background()
	c := NewClient(baseURL)
	info, err := c.Bank(ctx, bank.Code())
	if err != nil {
		b.Fatal(err)
	}
	if info.Async {
		b.Fatalf("%s settles charges asynchronously: BenchmarkCharges measures synchronous ones", bank.Code())
	}
	gen := NewGen()
	agreements := make([]string, 16)
	for i := range agreements {
		a, err := gen.Account(info, "debit", 1<<52)
		if err != nil {
			b.Fatal(err)
		}
		a.SingleLimit, a.DailyLimit = 1<<40, 1<<60
		if err := c.PutAccount(ctx, a); err != nil {
			b.Fatal(err)
		}
		if agreements[i], err = Bind(ctx, bank, c, a, gen.OrderNo("BR")); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Uint64
	charge := func() {
		ag := agreements[next.Add(1)%uint64(len(agreements))]
		r, err := bank.Charge(ctx, bankadapters.ChargeRequest{
			OrderNo: gen.OrderNo("BN"), AgreementNo: ag, Amount: 100, Currency: "CNY", Description: "bench",
		})
		if err != nil || r.Status != bankadapters.ChargeSucceeded {
			b.Errorf("charge: %s %v %v", r.Status, r.Cause, err) // Errorf: safe off the benchmark goroutine
		}
	}
	for _, callers := range BenchCallers {
		b.Run("callers="+strconv.Itoa(callers), func(b *testing.B) {
			b.ReportAllocs()
			if callers == 1 {
				for b.Loop() {
					charge()
				}
			} else {
				b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						charge()
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
