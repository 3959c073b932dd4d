package opsview_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
)

// benchCharges is the size of BenchmarkOpsview's database. The issue's
// figure is at 1,000,000 charges (the default); a smaller one runs faster:
//
//	go test -run '^$' -bench BenchmarkOpsview -benchtime 200x ./internal/opsview/
//	go test -run '^$' -bench BenchmarkOpsview -benchtime 200x ./internal/opsview/ -opsview.charges 100000
var benchCharges = flag.Int("opsview.charges", 1_000_000, "charges BenchmarkOpsview seeds")

// recorder keeps the statements a pool runs, with their arguments, so
// that the benchmark can ask Postgres how it plans each.
type recorder struct {
	mu    sync.Mutex
	on    bool
	calls []recorded
}

type recorded struct {
	sql  string
	args []any
}

func (r *recorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.calls = append(r.calls, recorded{d.SQL, d.Args})
	}
	return ctx
}

func (r *recorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *recorder) record(on bool) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = on
	calls := r.calls
	r.calls = nil
	return calls
}

var (
	benchOnce   sync.Once
	benchSeed   opsviewtest.Seeded
	benchPool   *pgxpool.Pool
	benchRec    = &recorder{}
	benchErr    error
	benchSeeded time.Duration
)

// benchWorld seeds the package's database once with benchCharges
// charges, then vacuums and analyzes it as autovacuum would on a server.
func benchWorld(b *testing.B) (opsviewtest.Seeded, *pgxpool.Pool) {
	b.Helper()
	benchOnce.Do(func() {
		ctx := context.Background()
		benchPool, benchErr = db.Open(ctx, db.Config{URL: testenv.DatabaseURL(b), Tracer: benchRec})
		if benchErr != nil {
			return
		}
		start := time.Now()
		benchSeed, benchErr = opsviewtest.Seed(ctx, benchPool, opsviewtest.Options{Charges: *benchCharges})
		benchSeeded = time.Since(start)
		if benchErr != nil {
			return
		}
		_, benchErr = benchPool.Exec(ctx, `VACUUM (ANALYZE) merchants, members, bindings, cards, mandates, charges,
			charge_attempts, refunds, events, webhook_deliveries, river_job, audit_log`)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchSeed, benchPool
}

// bigTables are those that grow with charges: a sequential scan of one is
// a page that slows down as the business grows. The others (merchants,
// key versions, reconciliation runs and mismatches, River's jobs, which
// River prunes) stay small.
var bigTables = []string{"members", "bindings", "cards", "mandates", "charges", "charge_attempts", "refunds",
	"events", "webhook_deliveries", "audit_log"}

// seqScans returns the big tables the plan of each call reads in full.
func seqScans(ctx context.Context, pool *pgxpool.Pool, calls []recorded) ([]string, error) {
	var found []string
	for _, c := range calls {
		var plan []struct {
			Plan planNode `json:"Plan"`
		}
		var raw []byte
		if err := pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+c.sql, c.args...).Scan(&raw); err != nil {
			return nil, fmt.Errorf("explain %s: %w", c.sql, err)
		}
		if err := json.Unmarshal(raw, &plan); err != nil {
			return nil, err
		}
		var walk func(n planNode)
		walk = func(n planNode) {
			if n.NodeType == "Seq Scan" && slices.Contains(bigTables, n.Relation) {
				found = append(found, n.Relation)
			}
			for _, p := range n.Plans {
				walk(p)
			}
		}
		walk(plan[0].Plan)
	}
	return found, nil
}

type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Plans    []planNode `json:"Plans"`
}

// BenchmarkOpsview times each console read at benchCharges charges and
// reports its p50 and p99 in ms. Each sub-benchmark first checks that no
// statement of its read scans a big table in full.
func BenchmarkOpsview(b *testing.B) {
	s, pool := benchWorld(b)
	b.Logf("seeded %d charges (%d attempts, %d events, %d mandates) in %v",
		s.Charges, s.Attempts, s.Events, s.Mandates, benchSeeded.Round(time.Second))
	b.Logf("seed steps: %v", s.Took)
	ctx := context.Background()
	now := s.Day.Add(8 * time.Hour)
	r := opsview.New(pool, opsview.WithClock(clock.NewFake(now)))
	m0, m1 := s.Merchants[0], s.Merchants[len(s.Merchants)-1]
	day := s.Day.AddDate(0, 0, -3)

	// deep is the cursor 20 pages into the charges of m0.
	var deep string
	for range 20 {
		_, next, err := r.Charges(ctx, opsview.ChargeFilter{MerchantID: m0}, opsview.Page{After: deep})
		if err != nil {
			b.Fatal(err)
		}
		deep = next
	}
	// The collector reads on the system clock, every scrape (no cache).
	collector := opsview.NewCollector(opsview.New(pool), opsview.CollectorConfig{CacheFor: time.Nanosecond})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector)

	page := opsview.Page{}
	cases := []struct {
		name string
		read func() error
	}{
		{"Overview", func() error { _, err := r.Overview(ctx, s.Day, nil); return err }},
		{"Collector", func() error { _, err := reg.Gather(); return err }},
		{"Search/charge_id", func() error { _, err := r.Search(ctx, s.ChargeID); return err }},
		{"Search/order_no", func() error { _, err := r.Search(ctx, s.OrderNo); return err }},
		{"Search/bank_reference", func() error { _, err := r.Search(ctx, s.BankTxnNo); return err }},
		{"CardsByFingerprints", func() error { _, err := r.CardsByFingerprints(ctx, [][]byte{s.PANFP}); return err }},
		{"Merchant", func() error { _, err := r.Merchant(ctx, m0); return err }},
		{"Member", func() error { _, err := r.Member(ctx, s.MemberID); return err }},
		{"Card", func() error { _, err := r.Card(ctx, s.CardID); return err }},
		{"Binding", func() error { _, err := r.Binding(ctx, s.BindingID); return err }},
		{"Mandate", func() error { _, err := r.Mandate(ctx, s.MandateID); return err }},
		{"Charge", func() error { _, err := r.Charge(ctx, s.ChargeID); return err }},
		{"Refund", func() error { _, err := r.Refund(ctx, s.RefundID); return err }},
		{"Event", func() error { _, err := r.Event(ctx, s.BacklogEvent); return err }},
		{"Merchants", func() error { _, _, err := r.Merchants(ctx, page); return err }},
		{"Members", func() error { _, _, err := r.Members(ctx, "", page); return err }},
		{"Members/merchant", func() error { _, _, err := r.Members(ctx, m1, page); return err }},
		{"Cards/merchant", func() error { _, _, err := r.Cards(ctx, opsview.CardFilter{MerchantID: m1}, page); return err }},
		{"Cards/member", func() error { _, _, err := r.Cards(ctx, opsview.CardFilter{MemberID: s.MemberID}, page); return err }},
		{"Bindings/merchant", func() error {
			_, _, err := r.Bindings(ctx, opsview.BindingFilter{MerchantID: m1}, page)
			return err
		}},
		{"Mandates/status", func() error {
			_, _, err := r.Mandates(ctx, opsview.MandateFilter{Status: "paused"}, page)
			return err
		}},
		{"Mandates/member", func() error {
			_, _, err := r.Mandates(ctx, opsview.MandateFilter{MemberID: s.MemberID}, page)
			return err
		}},
		{"Charges", func() error { _, _, err := r.Charges(ctx, opsview.ChargeFilter{}, page); return err }},
		{"Charges/merchant_deep", func() error {
			_, _, err := r.Charges(ctx, opsview.ChargeFilter{MerchantID: m0}, opsview.Page{After: deep})
			return err
		}},
		{"Charges/status", func() error {
			_, _, err := r.Charges(ctx, opsview.ChargeFilter{Status: "held"}, page)
			return err
		}},
		{"Charges/merchant_status", func() error {
			_, _, err := r.Charges(ctx, opsview.ChargeFilter{MerchantID: m1, Status: "failed"}, page)
			return err
		}},
		{"Charges/mandate", func() error {
			_, _, err := r.Charges(ctx, opsview.ChargeFilter{MandateID: s.MandateID}, page)
			return err
		}},
		{"Charges/bank", func() error { _, _, err := r.Charges(ctx, opsview.ChargeFilter{Bank: "CMB"}, page); return err }},
		{"Charges/day_bank_status", func() error {
			_, _, err := r.Charges(ctx, opsview.ChargeFilter{Day: day, Bank: "CCB", Status: "failed"}, page)
			return err
		}},
		{"Refunds", func() error { _, _, err := r.Refunds(ctx, opsview.RefundFilter{}, page); return err }},
		{"Refunds/status", func() error {
			_, _, err := r.Refunds(ctx, opsview.RefundFilter{Status: "pending"}, page)
			return err
		}},
		{"Refunds/charge", func() error {
			_, _, err := r.Refunds(ctx, opsview.RefundFilter{ChargeID: s.RefundCharge}, page)
			return err
		}},
		{"Events", func() error { _, _, err := r.Events(ctx, opsview.EventFilter{}, page); return err }},
		{"Events/type", func() error {
			_, _, err := r.Events(ctx, opsview.EventFilter{Type: "charge.failed"}, page)
			return err
		}},
		{"Events/merchant_type", func() error {
			_, _, err := r.Events(ctx, opsview.EventFilter{MerchantID: m1, Type: "charge.failed"}, page)
			return err
		}},
		{"UnknownAttempts", func() error { _, _, err := r.UnknownAttempts(ctx, page); return err }},
		{"Mismatches/open", func() error {
			_, _, err := r.Mismatches(ctx, opsview.MismatchFilter{OpenOnly: true}, page)
			return err
		}},
		{"Backlog", func() error { _, _, err := r.Backlog(ctx, page); return err }},
		{"Audit", func() error { _, _, err := r.Audit(ctx, opsview.AuditFilter{}, page); return err }},
		{"Audit/actor", func() error {
			_, _, err := r.Audit(ctx, opsview.AuditFilter{Actor: s.AuditActor}, page)
			return err
		}},
		{"Audit/subject", func() error {
			_, _, err := r.Audit(ctx, opsview.AuditFilter{Subject: s.CardID}, page)
			return err
		}},
		{"KeyVersions", func() error { _, err := r.KeyVersions(ctx); return err }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			benchRec.record(true)
			err := c.read()
			calls := benchRec.record(false)
			if err != nil {
				b.Fatal(err)
			}
			if seq, err := seqScans(ctx, pool, calls); err != nil {
				b.Fatal(err)
			} else if len(seq) > 0 {
				b.Errorf("%s reads %v in full", c.name, seq)
			}
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if err := c.read(); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(times)
			ms := func(q float64) float64 {
				return float64(times[min(len(times)-1, int(q*float64(len(times))))].Microseconds()) / 1000
			}
			b.ReportMetric(ms(0.50), "p50_ms")
			b.ReportMetric(ms(0.99), "p99_ms")
		})
	}
}
