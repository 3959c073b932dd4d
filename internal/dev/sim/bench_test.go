package sim_test

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// BenchmarkChargeHTTP measures json-hmac charges (ICBC, synchronous) over
// loopback HTTP with a keep-alive client: each a fresh order number,
// signed, sent, answered, and the answer's signature checked.
func BenchmarkChargeHTTP(b *testing.B) { benchCharge(b, "ICBC") }

// BenchmarkChargeHTTPFormRSA is the same for form-rsa (CCB). Each charge
// costs two RSA-2048 signatures (the client's request, the bank's answer)
// and two verifications, all in this process.
func BenchmarkChargeHTTPFormRSA(b *testing.B) { benchCharge(b, "CCB") }

func benchCharge(b *testing.B, code string) {
	for _, callers := range []int{1, 32} {
		b.Run("callers="+strconv.Itoa(callers), func(b *testing.B) {
			e := newEnv(b, withConfig(func(c *sim.Config) {
				c.Now = nil // the real clock
				c.Logger = slog.New(slog.DiscardHandler)
			}))
			tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}
			e.http = &http.Client{Transport: tr}
			b.Cleanup(tr.CloseIdleConnections)
			c := e.banks[code]
			const cards = 64
			agreements := make([]string, cards)
			for i := range agreements {
				a := e.openAccount(code, "debit", 1<<50, func(a *sim.Account) { a.DailyLimit = 1 << 60 })
				agreements[i] = c.bind(a)
			}
			var seq atomic.Int64
			success := c.codeOf("success")
			charge := func() {
				n := seq.Add(1)
				w := c.build("charge", fields{OrderNo: "B-" + strconv.FormatInt(n, 10),
					AgreementNo: agreements[n%cards], Amount: 1, Currency: "CNY", Description: "bench"})
				st, hdr, raw, err := c.send(context.Background(), w)
				if err != nil {
					b.Error(err)
					return
				}
				if a := c.decode(st, hdr, raw); a.Code != success || !a.Signed {
					b.Errorf("charge answered %d %s %s", st, a.Code, a.Message)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			if callers == 1 {
				for b.Loop() {
					charge()
				}
			} else {
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						charge()
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(seq.Load())/b.Elapsed().Seconds(), "charges/s")
			if got := int64(len(e.ledger(""))); got != seq.Load() {
				b.Errorf("ledger holds %d debits after %d charges", got, seq.Load())
			}
		})
	}
}
