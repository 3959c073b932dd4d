package webhooks_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// BenchmarkDeliveries delivers b.N events to a local receiver that answers
// 200 at once: the River worker loads the events, decrypts the endpoint's
// secret in the HSM (audited), signs, POSTs and records each attempt. The
// events are emitted as a month-end run's settling emits them, 20 at a time
// in one EmitAll (perBatch=20: one job carries 20), and, as the baseline in
// the same run, one Emit each (perBatch=1: one job per event, as every job
// was before jobs carried several). The clock runs from the first job's
// start to the last event's recorded attempt; emitting is not measured.
//
//	QUICKPAY_DEVVAULT=$PWD/.quickpay/bin/devvault \
//	  go test -run '^$' -bench Deliveries -benchtime 5000x -count 3 ./internal/webhooks/
func BenchmarkDeliveries(b *testing.B) {
	for _, perBatch := range []int{1, 20} {
		b.Run(fmt.Sprintf("perBatch=%d", perBatch), func(b *testing.B) {
			ctx := context.Background()
			// Emitted with a client that only inserts; a working client on
			// the same queue starts once they are all in.
			e := newEnv(b, false, nil)
			m := newMerchant(b, e.pool)
			recv := newReceiver(b, func(int) int { return http.StatusOK })
			e.setEndpoint(b, m, recv.url, []string{webhooks.EventChargeSucceeded})
			for i := 0; i < b.N; i += perBatch {
				var pending []webhooks.Pending
				for j := i; j < min(b.N, i+perBatch); j++ {
					pending = append(pending, webhooks.Pending{MerchantID: m, Type: webhooks.EventChargeSucceeded,
						Data: map[string]any{"charge_id": fmt.Sprintf("chg_%d", j), "amount": 1999, "currency": "CNY"}})
				}
				if err := db.InTx(ctx, e.pool, func(tx pgx.Tx) error { return e.svc.EmitAll(ctx, tx, pending) }); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			e.startWorker(b, 10, nil)
			start := time.Now()
			deadline := start.Add(10 * time.Minute)
			for {
				var n int
				if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE merchant_id = $1`, m).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if n >= b.N {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d events delivered after 10 minutes", n, b.N)
				}
				time.Sleep(20 * time.Millisecond) // polling the outcome, not waiting for it
			}
			elapsed := time.Since(start)
			b.StopTimer()
			if got := len(recv.requests()); got != b.N {
				b.Fatalf("receiver got %d requests for %d events", got, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}
