package opsview_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/opsview"
)

var shanghai = func() *time.Location {
	l, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		panic(err)
	}
	return l
}()

func sh(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04", s, shanghai)
	if err != nil {
		panic(err)
	}
	return t
}

// dayRows writes, for date (a day no seeded charge falls on), charges of
// both banks on it and beside it, and refunds created on it and just
// outside it in Shanghai's day.
func dayRows(w world, date string) {
	next := sh(date+" 00:00").AddDate(0, 0, 1).Format(time.DateOnly)
	prev := sh(date+" 00:00").AddDate(0, 0, -1).Format(time.DateOnly)
	a := w.charge("ICBC", date, "succeeded", 100)
	w.charge("ICBC", date, "succeeded", 250)
	w.charge("ICBC", date, "failed", 70)
	w.charge("CCB", date, "succeeded", 999)
	w.charge("CCB", date, "scheduled", 5)
	w.charge("ICBC", next, "succeeded", 1)
	w.charge("CCB", prev, "succeeded", 1)
	order := w.attempt(a, "ICBC", "succeeded", sh(date+" 09:00"))
	w.refund(a, order, "ICBC", "failed", 40, sh(date+" 00:00"))
	w.refund(a, order, "ICBC", "pending", 10, sh(date+" 10:00"))
	w.refund(a, order, "ICBC", "succeeded", 20, sh(date+" 23:59"))
	w.refund(a, order, "ICBC", "failed", 30, sh(next+" 00:00"))
	w.refund(a, order, "ICBC", "failed", 30, sh(prev+" 23:59"))
}

func TestOverview(t *testing.T) {
	_, r, pool := seed(t)
	ctx := context.Background()
	w := newWorld(t, pool)
	dayRows(w, "2027-03-10")

	o, err := r.Overview(ctx, sh("2027-03-10 15:00"), shanghai)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Day.Equal(sh("2027-03-10 00:00")) || !o.At.Equal(seedNow) {
		t.Errorf("Day %v At %v", o.Day, o.At)
	}
	wantCharges := []opsview.ChargeCount{
		{Status: "failed", Bank: "ICBC", Count: 1, Amount: 70},
		{Status: "scheduled", Bank: "CCB", Count: 1, Amount: 5},
		{Status: "succeeded", Bank: "CCB", Count: 1, Amount: 999},
		{Status: "succeeded", Bank: "ICBC", Count: 2, Amount: 350},
	}
	if !slices.Equal(o.Charges, wantCharges) {
		t.Errorf("Charges = %+v, want %+v", o.Charges, wantCharges)
	}
	wantRefunds := []opsview.RefundCount{
		{Status: "failed", Count: 1, Amount: 40},
		{Status: "pending", Count: 1, Amount: 10},
		{Status: "succeeded", Count: 1, Amount: 20},
	}
	if !slices.Equal(o.Refunds, wantRefunds) {
		t.Errorf("Refunds = %+v, want %+v", o.Refunds, wantRefunds)
	}

	t.Run("what waits, as rows are added", func(t *testing.T) {
		before, err := r.Overview(ctx, seedDay, shanghai)
		if err != nil {
			t.Fatal(err)
		}
		if before.UnknownAttempts == 0 || before.Backlog == 0 || before.OpenMismatches == 0 ||
			before.Mismatches <= before.OpenMismatches || len(before.Charges) == 0 {
			t.Fatalf("the seed should show unknown attempts, a backlog and open and closed mismatches: %+v", before)
		}
		old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		// Attempts: two unknown (one of them the oldest of all), and the
		// last 24 hours' calls of each bank.
		w.attempt(w.charge("ICBC", "2020-01-01", "unknown", 1), "ICBC", "unknown", old)
		w.attempt(w.charge("ICBC", "2026-11-20", "failed", 1), "ICBC", "failed", seedNow.Add(-time.Hour))
		w.attempt(w.charge("ICBC", "2026-11-20", "unknown", 1), "ICBC", "unknown", seedNow.Add(-2*time.Hour))
		w.attempt(w.charge("ICBC", "2026-11-20", "held", 1), "ICBC", "amount_mismatch", seedNow.Add(-3*time.Hour))
		w.attempt(w.charge("CCB", "2026-11-19", "succeeded", 1), "CCB", "succeeded", seedNow.Add(-23*time.Hour))
		w.attempt(w.charge("CCB", "2026-11-19", "failed", 1), "CCB", "failed", seedNow.Add(-25*time.Hour))
		// Backlog: an event waiting (the oldest of all), one given up
		// after a 500; not one answered 2xx, nor one of a completed job.
		waiting, gaveUp, answered, done := w.event(old), w.event(seedNow), w.event(seedNow), w.event(seedNow)
		w.job("retryable", waiting, answered)
		w.delivery(answered, 1, 204, seedNow)
		w.job("discarded", gaveUp)
		w.delivery(gaveUp, 1, 500, seedNow)
		w.job("completed", done)
		// Mismatches: a run finds one (open), a later run of its bank and
		// day finds none (closing it); another bank's day finds one.
		for _, run := range []struct {
			bank, day string
			found     int
		}{{"XB1", "2026-11-19", 1}, {"XB1", "2026-11-19", 0}, {"XB2", "2026-11-19", 1}} {
			var id int64
			if err := pool.QueryRow(ctx, `INSERT INTO reconciliation_runs (bank_code, bank_day, entries, matched, settled, mismatches)
				VALUES ($1, $2, 1, 0, 0, $3) RETURNING id`, run.bank, run.day, run.found).Scan(&id); err != nil {
				t.Fatal(err)
			}
			for range run.found {
				w.exec(`INSERT INTO reconciliation_mismatches (run_id, kind, bank_code, bank_day, order_no, merchant_id, bank_amount)
					VALUES ($1, 'unknown_debit', $2, $3, 'QPX', NULL, 5)`, id, run.bank, run.day)
			}
		}

		after, err := r.Overview(ctx, seedDay, shanghai)
		if err != nil {
			t.Fatal(err)
		}
		check := func(what string, got, want int64) {
			t.Helper()
			if got != want {
				t.Errorf("%s: %d, want %d", what, got, want)
			}
		}
		check("unknown attempts", after.UnknownAttempts, before.UnknownAttempts+2)
		check("mismatches", after.Mismatches, before.Mismatches+2)
		check("open mismatches", after.OpenMismatches, before.OpenMismatches+1)
		check("backlog", after.Backlog, before.Backlog+2)
		if want := seedNow.Sub(old); after.OldestUnknown != want || after.OldestUndelivered != want {
			t.Errorf("oldest unknown %v, oldest undelivered %v, want both %v", after.OldestUnknown, after.OldestUndelivered, want)
		}
		rate := func(o opsview.Overview, bank string) opsview.BankRate {
			for _, b := range o.BankRates {
				if b.Bank == bank {
					return b
				}
			}
			return opsview.BankRate{Bank: bank}
		}
		for _, c := range []struct {
			bank string
			want opsview.BankRate
		}{
			{"ICBC", opsview.BankRate{Calls: 3, Declines: 1, Unknowns: 1, Mismatches: 1}},
			{"CCB", opsview.BankRate{Calls: 1}},
		} {
			b, a := rate(before, c.bank), rate(after, c.bank)
			got := opsview.BankRate{Bank: c.bank, Calls: a.Calls - b.Calls, Declines: a.Declines - b.Declines,
				Unknowns: a.Unknowns - b.Unknowns, Mismatches: a.Mismatches - b.Mismatches}
			c.want.Bank = c.bank
			if got != c.want {
				t.Errorf("%s's last 24 hours grew by %+v, want %+v", c.bank, got, c.want)
			}
		}
		// The backlog list agrees with the count.
		var listed []opsview.Undelivered
		p := opsview.Page{Limit: opsview.MaxLimit}
		for {
			rows, next, err := r.Backlog(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			listed = append(listed, rows...)
			if next == "" {
				break
			}
			p.After = next
		}
		if int64(len(listed)) != after.Backlog {
			t.Errorf("Backlog lists %d events; the overview counts %d", len(listed), after.Backlog)
		}
		// Oldest written first (by sequence): the hand-made ones last.
		if n := len(listed); n < 2 || listed[n-2].EventID != waiting || listed[n-2].JobState != "retryable" ||
			listed[n-2].Attempts != 0 || listed[n-2].NextRetryAt == nil {
			t.Errorf("Backlog ends %+v, want the waiting event %s then the given-up one", listed[max(n-2, 0):], waiting)
		}
		if after.BacklogCapped {
			t.Errorf("a backlog of %d events is capped", after.Backlog)
		}
		i := slices.IndexFunc(listed, func(u opsview.Undelivered) bool { return u.EventID == gaveUp })
		if i < 0 {
			t.Fatalf("the given-up event %s is not in the backlog", gaveUp)
		}
		if u := listed[i]; u.JobState != "discarded" || u.Attempts != 1 || u.LastStatus != 500 || u.NextRetryAt != nil {
			t.Errorf("the given-up event in the backlog: %+v", u)
		}
	})
}

func TestOverviewBacklogCapped(t *testing.T) {
	_, r, pool := seed(t)
	ctx := context.Background()
	w := newWorld(t, pool)
	before, err := r.Overview(ctx, seedDay, shanghai)
	if err != nil {
		t.Fatal(err)
	}
	// A job naming MaxBacklogCount events (which need not exist to be
	// read): the count stops there, before the real ones of later jobs.
	fake := make([]string, opsview.MaxBacklogCount)
	for i := range fake {
		fake[i] = fmt.Sprintf("evt_fake%d", i)
	}
	w.job("retryable", fake...)
	later := w.event(seedNow)
	w.job("retryable", later)
	t.Cleanup(func() {
		w.exec(`DELETE FROM river_job WHERE args->>'merchant_id' = $1`, w.merchant)
	})
	after, err := r.Overview(ctx, seedDay, shanghai)
	if err != nil {
		t.Fatal(err)
	}
	if before.BacklogCapped || !after.BacklogCapped || after.Backlog != before.Backlog {
		t.Errorf("backlog %d capped %v, then %d capped %v; want the same count, capped", before.Backlog,
			before.BacklogCapped, after.Backlog, after.BacklogCapped)
	}
	// The list is not capped: the later job's event is on it.
	var found bool
	p := opsview.Page{Limit: opsview.MaxLimit}
	for {
		rows, next, err := r.Backlog(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		found = found || slices.ContainsFunc(rows, func(u opsview.Undelivered) bool { return u.EventID == later })
		if next == "" {
			break
		}
		p.After = next
	}
	if !found {
		t.Errorf("event %s of the job after the cap is not listed", later)
	}
}

// gather collects c into name{labels} → value.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "quickpay_") || mf.GetHelp() == "" {
			t.Errorf("metric %s: name or help", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			out[mf.GetName()+labels(m)] = m.GetGauge().GetValue()
		}
	}
	return out
}

func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestCollector(t *testing.T) {
	_, _, pool := seed(t)
	ctx := context.Background()
	w := newWorld(t, pool)
	dayRows(w, "2027-04-10")
	clk := clock.NewFake(sh("2027-04-10 12:00"))
	r := opsview.New(pool, opsview.WithClock(clk))
	c := opsview.NewCollector(r, opsview.CollectorConfig{})

	got := gather(t, c)
	want := map[string]float64{
		`quickpay_charges{failure_code="",status="succeeded"}`:                3,
		`quickpay_charges{failure_code="insufficient_funds",status="failed"}`: 1,
		`quickpay_charges{failure_code="",status="scheduled"}`:                1,
		`quickpay_refunds{status="failed"}`:                                   1,
		`quickpay_refunds{status="pending"}`:                                  1,
		`quickpay_refunds{status="succeeded"}`:                                1,
		`quickpay_opsview_read_ok`:                                            1,
	}
	var unknown, held, pending, mismatches int64
	var oldest time.Time
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM charge_attempts WHERE status = 'unknown'),
		(SELECT min(created_at) FROM charge_attempts WHERE status = 'unknown'),
		(SELECT count(*) FROM charges WHERE status = 'held'),
		(SELECT count(*) FROM refunds WHERE status = 'pending'),
		(SELECT count(*) FROM reconciliation_mismatches m WHERE run_id =
		   (SELECT max(id) FROM reconciliation_runs l WHERE l.bank_code = m.bank_code AND l.bank_day = m.bank_day))`).
		Scan(&unknown, &oldest, &held, &pending, &mismatches); err != nil {
		t.Fatal(err)
	}
	want["quickpay_unknown_attempts"] = float64(unknown)
	want["quickpay_unknown_attempt_oldest_age_seconds"] = clk.Now().Sub(oldest).Seconds()
	want["quickpay_charges_held"] = float64(held)
	want["quickpay_refunds_pending"] = float64(pending)
	want["quickpay_reconciliation_mismatches_open"] = float64(mismatches)
	rows, err := pool.Query(ctx, `SELECT format('quickpay_river_jobs{queue=%s,state=%s}', to_json(queue), to_json(state::text)), count(*)
		FROM river_job WHERE state <> 'completed' GROUP BY queue, state
		UNION ALL
		SELECT format('quickpay_river_jobs_errored{kind=%s,state=%s}', to_json(kind), to_json(state::text)), count(*)
		FROM river_job WHERE state IN ('retryable', 'discarded') GROUP BY kind, state`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		want[k] = float64(n)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if want[`quickpay_river_jobs{queue="webhooks",state="retryable"}`] == 0 {
		t.Fatal("the seed's backlog jobs are missing")
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, "quickpay_webhook_") {
			t.Errorf("unexpected %s = %v", k, got[k])
		}
	}
	if got["quickpay_webhook_backlog_events"] == 0 || got["quickpay_webhook_oldest_undelivered_age_seconds"] == 0 {
		t.Errorf("webhook gauges: %v, %v", got["quickpay_webhook_backlog_events"], got["quickpay_webhook_oldest_undelivered_age_seconds"])
	}

	t.Run("a read serves scrapes for 10 s", func(t *testing.T) {
		base := got["quickpay_unknown_attempts"]
		w.attempt(w.charge("CCB", "2027-04-10", "unknown", 1), "CCB", "unknown", clk.Now())
		clk.Advance(9 * time.Second)
		if n := gather(t, c)["quickpay_unknown_attempts"]; n != base {
			t.Errorf("9 s later: %v unknown attempts, want the cached %v", n, base)
		}
		clk.Advance(time.Second)
		if n := gather(t, c)["quickpay_unknown_attempts"]; n != base+1 {
			t.Errorf("10 s later: %v unknown attempts, want %v", n, base+1)
		}
	})
}
