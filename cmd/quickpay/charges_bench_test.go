package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/sync/errgroup"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

// BenchmarkMonthlyRun is a month's run of due fixed charges
// (QUICKPAY_BENCH_CHARGES, default 100,000; one mandate per card) against
// a zero-latency in-process banksim: RunDue claims them (order numbers and
// River jobs in one transaction per batch) and the River charge workers
// decrypt each agreement in the HSM, debit at the bank and settle (with
// the charge.succeeded event and its delivery job). Beside it, in the same
// session and database, River runs as many no-op jobs (noopWorkers). Reported: charges/s, the run's seconds, the
// process's peak RSS during the run (banksim included), no-op jobs/s and
// the ratio charges/s ÷ no-op jobs/s.
//
// BenchmarkRefunds (refunds_bench_test.go) runs this month-end run and then
// refunds each charge through the refund workers.
//
// Run with -benchtime 1x: the fixture (cards bound at banksim, rows in
// Postgres) is made once and b.N is ignored. QUICKPAY_BENCH_FIXTURE_SQL,
// if set, runs on the fixture before it is analyzed (schema experiments).
func BenchmarkMonthlyRun(b *testing.B) {
	n := envInt("QUICKPAY_BENCH_CHARGES", 100_000)
	workers := envInt("QUICKPAY_CHARGE_WORKERS", defaultChargeWorkers)
	batch := envInt("QUICKPAY_CHARGE_BATCH", 0) // 0: mandate.Config.JobBatch's default
	ctx := context.Background()
	st := testenv.NewStack(b)
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	merchant := testenv.Merchant(b, st.Pool)
	due := time.Now()
	today := mandate.Schedule{}.DateAt(due)
	b.Logf("fixture: binding %d cards at banksim and writing their mandates", n)
	t0 := time.Now()
	benchFixture(b, st, merchant, n, today)
	b.Logf("fixture ready in %s", time.Since(t0).Round(time.Second))

	bindings, err := binding.New(binding.Config{Pool: st.Pool, Vault: st.Vault, Banks: st.Banks, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	carrier, err := sms.New(sms.Config{URL: st.SimURL + "/carrier/sms"})
	if err != nil {
		b.Fatal(err)
	}
	chargeW, queryW := &mandate.ChargeWorker{}, &mandate.QueryWorker{}
	ws := river.NewWorkers()
	river.AddWorker(ws, chargeW)
	river.AddWorker(ws, queryW)
	river.AddWorker(ws, &noopWorker{})
	deliver, err := webhooks.NewDeliverWorker(webhooks.WorkerConfig{Pool: st.Pool, Vault: st.Vault})
	if err != nil {
		b.Fatal(err)
	}
	river.AddWorker(ws, deliver) // registered for the inserts; its queue is not worked here
	var completed atomic.Int64
	rc := &river.Config{Logger: quiet, Workers: ws,
		Queues: map[string]river.QueueConfig{mandate.Queue: {MaxWorkers: workers}, "noop": {MaxWorkers: noopWorkers}}}
	tuneFetch(rc) // as serve and run-due fetch
	client, err := river.NewClient(riverpgxv5.New(st.Pool), rc)
	if err != nil {
		b.Fatal(err)
	}
	// The merchant's endpoint takes every event: each charge.succeeded is
	// written to the outbox with its delivery job, as in production (the
	// deliveries' queue is not worked here).
	hooks, err := webhooks.New(webhooks.Config{Pool: st.Pool, Vault: st.Vault, Jobs: client})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := hooks.SetEndpoint(ctx, merchant, "https://biller.example/quickpay-events", nil); err != nil {
		b.Fatal(err)
	}
	svc, err := mandate.New(mandate.Config{Pool: st.Pool, Cards: bindings, Hasher: st.Vault, Banks: st.Banks,
		SMS: carrier, Jobs: client, Emit: hooks.EmitAll, Logger: quiet, JobBatch: batch})
	if err != nil {
		b.Fatal(err)
	}
	chargeW.Service, queryW.Service = svc, svc
	// A buffer for every completion: River drops events a full channel
	// cannot take, and a lost one would leave the count short forever.
	// A job that fails stops the benchmark: nothing fails against a
	// zero-latency bank, and a retried job would leave the count short.
	events, cancelEvents := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: 2*n + 1000,
		Kinds: []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed}})
	defer cancelEvents()
	done, failed := make(chan struct{}, 1), make(chan string, 1)
	var target atomic.Int64
	go func() {
		for ev := range events {
			if ev.Kind == river.EventKindJobFailed {
				select {
				case failed <- fmt.Sprintf("%s job failed: %v", ev.Job.Kind, ev.Job.Errors):
				default:
				}
				continue
			}
			// A charge job settles a batch of charges; a no-op job is one.
			var k int64
			switch ev.Job.Kind {
			case noopArgs{}.Kind():
				k = 1
			case mandate.ChargeArgs{}.Kind():
				var args mandate.ChargeArgs
				if err := json.Unmarshal(ev.Job.EncodedArgs, &args); err != nil {
					panic(err)
				}
				k = int64(len(args.OrderNos))
			}
			if k > 0 && completed.Add(k) == target.Load() {
				done <- struct{}{}
			}
		}
	}()
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = client.Stop(context.WithoutCancel(ctx)) }()

	b.ResetTimer()
	// The monthly run.
	resetPeakRSS()
	target.Store(int64(n))
	start := time.Now()
	stats, err := svc.RunDue(ctx, due)
	if err != nil {
		b.Fatal(err)
	}
	if stats.Claimed != n {
		b.Fatalf("claimed %d charges, want %d (%+v)", stats.Claimed, n, stats)
	}
	claimedIn := time.Since(start)
	select {
	case <-done:
	case msg := <-failed:
		b.Fatal(msg)
	}
	runTime := time.Since(start)
	peak := peakRSS()
	var succeeded int
	if err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM charges WHERE merchant_id = $1 AND status = 'succeeded'`,
		merchant).Scan(&succeeded); err != nil {
		b.Fatal(err)
	}
	if succeeded != n {
		b.Fatalf("%d of %d charges succeeded", succeeded, n)
	}

	// River alone: as many no-op jobs, inserted the fastest way, same workers.
	completed.Store(0)
	target.Store(int64(n))
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}, InsertOpts: &river.InsertOpts{Queue: "noop"}}
	}
	noopStart := time.Now()
	for i := 0; i < n; i += 5000 {
		if _, err := client.InsertManyFast(ctx, params[i:min(n, i+5000)]); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	noopTime := time.Since(noopStart)
	b.StopTimer()

	chargesPerSec := float64(n) / runTime.Seconds()
	noopPerSec := float64(n) / noopTime.Seconds()
	b.ReportMetric(chargesPerSec, "charges/s")
	b.ReportMetric(runTime.Seconds(), "run-s")
	b.ReportMetric(claimedIn.Seconds(), "claim-s")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MB")
	b.ReportMetric(noopPerSec, "noop-jobs/s")
	b.ReportMetric(chargesPerSec/noopPerSec, "ratio")
	b.ReportMetric(0, "ns/op")
}

// noopWorkers works the baseline's no-op jobs: River's fastest here (it
// fetches at most the free slots per fetch cooldown).
const noopWorkers = 64

type noopArgs struct{}

func (noopArgs) Kind() string { return "bench_noop" }

type noopWorker struct{ river.WorkerDefaults[noopArgs] }

func (*noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

var _ rivertype.JobArgs = noopArgs{}

// benchFixture binds n ICBC debit cards at banksim (through the adapter:
// apply, the code from the inbox, confirm) and writes, in Postgres, a member,
// card (its agreement encrypted in the HSM) and active fixed mandate due
// today for each. Card rows share one placeholder binding: they are never
// detokenized here.
func benchFixture(b *testing.B, st *testenv.Stack, merchant string, n int, today time.Time) {
	ctx := context.Background()
	info, err := st.SimCtl.Bank(ctx, "ICBC")
	if err != nil {
		b.Fatal(err)
	}
	bank, _ := st.Banks.Bank("ICBC")
	gen := conformance.NewGen()
	bindingID := ids.New("bnd")
	if _, err := st.Pool.Exec(ctx, `INSERT INTO bindings (id, merchant_id, external_user_id, status, bank_code,
		bank_name, card_type, masked_pan, last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct,
		id_number_fp, phone_ct, otp_expires_at, otp_last_sent_at) VALUES ($1, $2, 'bench', 'bound', 'ICBC', 'ICBC',
		'debit', '622202******0000', '0000', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', now(), now())`,
		bindingID, merchant); err != nil {
		b.Fatal(err)
	}
	type row struct {
		member, card, mandate, last4 string
		agreementCT                  []byte
	}
	rows := make([]row, n)
	var g errgroup.Group
	g.SetLimit(16)
	var mu sync.Mutex
	for i := range n {
		mu.Lock()
		a, err := gen.Account(info, "debit", 1_000_000_00)
		mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		g.Go(func() error {
			if err := st.Sim.PutAccount(sim.Account{BankCode: a.BankCode, CardNumber: a.CardNumber, CardType: a.CardType,
				HolderName: a.HolderName, IDNumber: a.IDNumber, Phone: a.Phone, Balance: a.Balance}); err != nil {
				return err
			}
			sess, err := bank.BindApply(ctx, bankadapters.BindRequest{RequestNo: ids.New("bnd"),
				CardNumber: sensitive.NewPAN(a.CardNumber), HolderName: a.HolderName,
				IDNumber: sensitive.NewIDNumber(a.IDNumber), Phone: a.Phone})
			if err != nil {
				return err
			}
			texts, err := st.SimCtl.SMS(ctx, a.Phone)
			if err != nil || len(texts) == 0 {
				return fmt.Errorf("no code: %v", err)
			}
			agreement, err := bank.BindConfirm(ctx, sess.BindRef, sensitive.NewOTP(texts[0].Code))
			if err != nil {
				return err
			}
			r := row{member: ids.New("mem"), card: ids.New("card"), mandate: ids.New("mdt"),
				last4: a.CardNumber[len(a.CardNumber)-4:]}
			if r.agreementCT, err = st.Vault.Encrypt(ctx, []byte(agreement), binding.CardAgreementAAD(merchant, r.card)); err != nil {
				return err
			}
			rows[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	copyRows := func(table string, cols []string, f func(r row) []any) {
		src := make([][]any, n)
		for i, r := range rows {
			src[i] = f(r)
		}
		if _, err := st.Pool.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(src)); err != nil {
			b.Fatalf("copy %s: %v", table, err)
		}
	}
	copyRows("members", []string{"id", "merchant_id", "external_id", "kind", "created_at"}, func(r row) []any {
		return []any{r.member, merchant, "ext-" + r.member, "implicit", now}
	})
	copyRows("cards", []string{"id", "merchant_id", "member_id", "status", "bank_code", "bank_name", "card_type",
		"masked_pan", "last4", "pan_ct", "pan_fp", "agreement_ct", "binding_id", "created_at", "updated_at"}, func(r row) []any {
		return []any{r.card, merchant, r.member, "active", "ICBC", "ICBC", "debit", "622202******" + r.last4, r.last4,
			[]byte{0}, []byte(r.card), r.agreementCT, bindingID, now, now}
	})
	period := today.Format("2006-01")
	copyRows("mandates", []string{"id", "merchant_id", "member_id", "card_id", "reference", "amount_type", "amount",
		"currency", "interval", "day_of_month", "start_date", "timezone", "status", "next_period", "next_charge_date",
		"otp_expires_at", "otp_last_sent_at", "created_at", "updated_at"}, func(r row) []any {
		return []any{r.mandate, merchant, r.member, r.card, "bench-" + r.mandate, "fixed", int64(1999), "CNY", "month",
			int32(today.Day()), today, mandate.DefaultTimezone, "active", period, today, now, now, now, now}
	})
	// A schema experiment (docs/benchmarks.md): SQL run on the fixture
	// before it is analyzed, e.g. dropping a constraint to weigh it.
	if x := os.Getenv("QUICKPAY_BENCH_FIXTURE_SQL"); x != "" {
		if _, err := st.Pool.Exec(ctx, x); err != nil {
			b.Fatalf("QUICKPAY_BENCH_FIXTURE_SQL: %v", err)
		}
	}
	if _, err := st.Pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}

// resetPeakRSS restarts the kernel's peak-RSS count (VmHWM) for this process.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM in KiB.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// envInt is the positive integer in the environment variable name, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
