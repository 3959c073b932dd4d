package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"golang.org/x/sync/errgroup"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

// BenchmarkRefunds is the month-end run of QUICKPAY_BENCH_REFUNDS (default
// 20,000) due fixed charges, as BenchmarkMonthlyRun runs it, and then a
// refund of each of those charges through the refund worker path: every
// refund created (its refund number, job and held sum written; set-up,
// not timed) while no worker runs, then the River refund workers started
// and timed until every refund job has completed, each refund claimed,
// sent to the zero-latency in-process banksim and settled (with its
// refund.succeeded event and delivery job), a batch per job as charges
// are (Config.RefundBatch). Reported: charges/s of the
// run, refunds/s, and the ratio refunds/s ÷ charges/s (goal ≥ 0.8).
//
// Run with -benchtime 1x: the fixture is made once and b.N is ignored.
// QUICKPAY_CHARGE_WORKERS sets both queues' workers, QUICKPAY_CHARGE_BATCH
// the charge jobs' batch, QUICKPAY_REFUND_BATCH the refund jobs' (0: the
// default, Config.RefundBatch).
func BenchmarkRefunds(b *testing.B) {
	n := envInt("QUICKPAY_BENCH_REFUNDS", 20_000)
	workers := envInt("QUICKPAY_CHARGE_WORKERS", defaultChargeWorkers)
	chargeBatch := envInt("QUICKPAY_CHARGE_BATCH", 0) // 0: the configs' defaults
	refundBatch := envInt("QUICKPAY_REFUND_BATCH", 0)
	ctx := context.Background()
	st := testenv.NewStack(b)
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	merchant := testenv.Merchant(b, st.Pool)
	due := time.Now()
	b.Logf("fixture: binding %d cards at banksim and writing their mandates", n)
	t0 := time.Now()
	benchFixture(b, st, merchant, n, mandate.Schedule{}.DateAt(due))
	b.Logf("fixture ready in %s", time.Since(t0).Round(time.Second))

	bindings, err := binding.New(binding.Config{Pool: st.Pool, Vault: st.Vault, Banks: st.Banks, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	carrier, err := sms.New(sms.Config{URL: st.SimURL + "/carrier/sms"})
	if err != nil {
		b.Fatal(err)
	}
	deliver, err := webhooks.NewDeliverWorker(webhooks.WorkerConfig{Pool: st.Pool, Vault: st.Vault})
	if err != nil {
		b.Fatal(err)
	}
	// One River client for both runs; the refunds' queue is worked only
	// once they are all created (refundQueue, below).
	const refundQueue = "bench_refunds"
	chargeW, queryW, refundW := &mandate.ChargeWorker{}, &mandate.QueryWorker{}, &mandate.RefundWorker{}
	ws := river.NewWorkers()
	river.AddWorker(ws, chargeW)
	river.AddWorker(ws, queryW)
	river.AddWorker(ws, refundW)
	river.AddWorker(ws, deliver) // registered for the inserts; its queue is not worked here
	rc := &river.Config{Logger: quiet, Workers: ws, Queues: map[string]river.QueueConfig{mandate.Queue: {MaxWorkers: workers}}}
	tuneFetch(rc)
	client, err := river.NewClient(riverpgxv5.New(st.Pool), rc)
	if err != nil {
		b.Fatal(err)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: st.Pool, Vault: st.Vault, Jobs: client})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := hooks.SetEndpoint(ctx, merchant, "https://biller.example/quickpay-events", nil); err != nil {
		b.Fatal(err)
	}
	cfg := mandate.Config{Pool: st.Pool, Cards: bindings, Hasher: st.Vault, Banks: st.Banks, SMS: carrier, Jobs: client,
		Emit: hooks.EmitAll, Logger: quiet, JobBatch: chargeBatch, RefundBatch: refundBatch}
	svc, err := mandate.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Queue = refundQueue
	refunds, err := mandate.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	chargeW.Service, queryW.Service, refundW.Service = svc, svc, refunds

	// Completions: a charge job settles its batch of charges, a refund job
	// its batch of refunds (refundJobs of them, counted once they are
	// created). A failed job stops the benchmark.
	events, cancelEvents := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: 2*n + 1000,
		Kinds: []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed}})
	defer cancelEvents()
	var charged, refunded, refundJobs atomic.Int64
	chargesDone, refundsDone, failed := make(chan struct{}), make(chan struct{}), make(chan string, 1)
	go func() {
		for ev := range events {
			if ev.Kind == river.EventKindJobFailed {
				select {
				case failed <- fmt.Sprintf("%s job failed: %v", ev.Job.Kind, ev.Job.Errors):
				default:
				}
				continue
			}
			switch ev.Job.Kind {
			case mandate.ChargeArgs{}.Kind():
				var args mandate.ChargeArgs
				if err := json.Unmarshal(ev.Job.EncodedArgs, &args); err != nil {
					panic(err)
				}
				if charged.Add(int64(len(args.OrderNos))) == int64(n) {
					close(chargesDone)
				}
			case mandate.RefundArgs{}.Kind():
				var args mandate.RefundArgs
				if err := json.Unmarshal(ev.Job.EncodedArgs, &args); err != nil {
					panic(err)
				}
				if !args.Query && refunded.Add(1) == refundJobs.Load() {
					close(refundsDone)
				}
			}
		}
	}()
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = client.Stop(context.WithoutCancel(ctx)) }()
	wait := func(done <-chan struct{}, what string) {
		select {
		case <-done:
		case msg := <-failed:
			b.Fatal(msg)
		case <-time.After(10 * time.Minute):
			b.Fatalf("%s: not done after 10 minutes", what)
		}
	}

	b.ResetTimer()
	// The month-end run.
	start := time.Now()
	stats, err := svc.RunDue(ctx, due)
	if err != nil {
		b.Fatal(err)
	}
	if stats.Claimed != n {
		b.Fatalf("claimed %d charges, want %d (%+v)", stats.Claimed, n, stats)
	}
	wait(chargesDone, "charges")
	runTime := time.Since(start)

	// Set-up, not timed: a refund of each charge (a tenth of it: 199 fen
	// of 1,999), created while the refund queue is not worked.
	b.StopTimer()
	rows, err := st.Pool.Query(ctx, `SELECT id FROM charges WHERE merchant_id = $1 AND status = 'succeeded'`, merchant)
	if err != nil {
		b.Fatal(err)
	}
	chargeIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	if len(chargeIDs) != n {
		b.Fatalf("%d of %d charges succeeded", len(chargeIDs), n)
	}
	t1 := time.Now()
	var g errgroup.Group
	g.SetLimit(16)
	for _, id := range chargeIDs {
		g.Go(func() error {
			_, err := refunds.CreateRefund(ctx, merchant, id, mandate.RefundInput{Amount: 199})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var jobs int64
	if err := st.Pool.QueryRow(ctx, `SELECT count(DISTINCT job_id) FROM refunds WHERE merchant_id = $1`, merchant).
		Scan(&jobs); err != nil {
		b.Fatal(err)
	}
	refundJobs.Store(jobs)
	b.Logf("%d refunds created in %s, in batches of %d River jobs (%.1f a job)", n, time.Since(t1).Round(time.Millisecond),
		jobs, float64(n)/float64(jobs))
	b.StartTimer()

	// The worker path: from the queue being worked to every refund settled.
	refundStart := time.Now()
	if err := client.Queues().Add(refundQueue, river.QueueConfig{MaxWorkers: workers}); err != nil {
		b.Fatal(err)
	}
	wait(refundsDone, "refunds")
	refundTime := time.Since(refundStart)
	b.StopTimer()
	var succeeded int
	if err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM refunds WHERE merchant_id = $1 AND status = 'succeeded'`,
		merchant).Scan(&succeeded); err != nil {
		b.Fatal(err)
	}
	if succeeded != n {
		b.Fatalf("%d of %d refunds succeeded", succeeded, n)
	}

	chargesPerSec := float64(n) / runTime.Seconds()
	refundsPerSec := float64(n) / refundTime.Seconds()
	b.ReportMetric(chargesPerSec, "charges/s")
	b.ReportMetric(refundsPerSec, "refunds/s")
	b.ReportMetric(refundTime.Seconds(), "refund-s")
	b.ReportMetric(refundsPerSec/chargesPerSec, "ratio")
	b.ReportMetric(0, "ns/op")
}
