package mandate_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

// TestReconcile injects one mismatch of each kind between banksim's
// statement and quickpay's attempts, and leaves two attempts unknown after
// every query ran out (one the bank made, one it never got): Reconcile
// finds the mismatches, settles the unknowns, and records the run.
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	d0 := w.today()

	// chargeOne charges a fresh ICBC card once, under the given faults.
	chargeOne := func(t *testing.T, amount int64, faults ...simclient.Fault) (card, mandate.Mandate) {
		t.Helper()
		c := w.bindCard(t, "ICBC", 1_000_000)
		m := w.mandate(t, c, w.dueToday(amount))
		for _, f := range faults {
			f.BankCode = "ICBC"
			w.fault(t, f)
		}
		if _, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil {
			t.Fatal(err)
		}
		return c, m
	}
	// exhaust waits until m's only attempt is unknown after every query.
	exhaust := func(t *testing.T, m mandate.Mandate) mandate.Charge {
		t.Helper()
		var ch mandate.Charge
		w.waitFor(t, 30*time.Second, func() bool {
			var queries int
			ch = w.oneCharge(t, m)
			if len(ch.Attempts) == 1 {
				if err := w.Pool.QueryRow(ctx, `SELECT queries FROM charge_attempts WHERE order_no = $1`,
					ch.Attempts[0].OrderNo).Scan(&queries); err != nil {
					t.Fatal(err)
				}
			}
			return queries == len(testQueryBackoff)
		}, func() string { return "the attempt's queries did not run out" })
		w.settle(t, false)
		if ch = w.oneCharge(t, m); ch.Status != mandate.ChargeUnknown || ch.Attempts[0].Status != mandate.AttemptUnknown {
			t.Fatalf("after the queries: charge %s, attempt %s", ch.Status, ch.Attempts[0].Status)
		}
		return ch
	}

	matchedCard, matched := chargeOne(t, 10_000)
	w.settle(t, true)
	tamperedCard, tampered := chargeOne(t, 20_000)
	w.settle(t, true)
	_, declined := chargeOne(t, 30_000, simclient.Fault{Operation: "charge", Mode: "decline", Code: "insufficient_funds"})
	w.settle(t, true)

	// Queries fail until cleared: the next two attempts stay unknown.
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "error", UntilCleared: true})
	madeCard, made := chargeOne(t, 40_000, simclient.Fault{Operation: "charge", Mode: "drop_response"})
	madeCharge := exhaust(t, made)
	if !strings.Contains(w.logs.String(), "the daily statement settles it") {
		t.Fatalf("no warning that the statement must settle the attempt")
	}
	lostCard, lost := chargeOne(t, 50_000, simclient.Fault{Operation: "charge", Mode: "error"})
	lostCharge := exhaust(t, lost)
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}

	// missing_debit: quickpay holds a declined attempt as succeeded.
	declinedCharge := w.oneCharge(t, declined)
	if declinedCharge.Status != mandate.ChargeRetryScheduled {
		t.Fatalf("declined charge = %s", declinedCharge.Status)
	}
	missingNo := declinedCharge.Attempts[0].OrderNo
	if _, err := w.Pool.Exec(ctx, `UPDATE charge_attempts SET status = 'succeeded' WHERE order_no = $1`, missingNo); err != nil {
		t.Fatal(err)
	}
	// amount_mismatch: quickpay's amount is a fen more than the bank's.
	tamperedNo := w.oneCharge(t, tampered).Attempts[0].OrderNo
	if _, err := w.Pool.Exec(ctx, `UPDATE charge_attempts SET amount = 20001 WHERE order_no = $1`, tamperedNo); err != nil {
		t.Fatal(err)
	}
	// unknown_debit: a debit under the platform's agreement that quickpay
	// never sent.
	bank, _ := w.banks.Bank("ICBC")
	ref := binding.CardRef{MerchantID: w.merchant, CardID: matchedCard.ID}
	got, err := w.bindings.Agreements(ctx, []binding.CardRef{ref}, "test", "reconciliation test")
	if err != nil || got[ref].Err != nil {
		t.Fatal(err, got[ref].Err)
	}
	agreement := got[ref].Agreement
	foreignNo := "EXT" + strings.ToUpper(randHex(8))
	r, err := bank.Charge(ctx, bankadapters.ChargeRequest{OrderNo: foreignNo, AgreementNo: agreement, Amount: 777,
		Currency: "CNY", Description: "not quickpay's"})
	if err != nil || r.Status != bankadapters.ChargeSucceeded {
		t.Fatalf("direct debit = %+v, %v", r, err)
	}

	rec, err := w.svc.Reconcile(ctx, "ICBC", d0)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("counts", func(t *testing.T) {
		// On the statement: matched, tampered, made and the foreign debit.
		if rec.Entries != 4 || rec.Matched != 2 || rec.Settled != 2 || len(rec.Mismatches) != 3 {
			t.Fatalf("reconciliation = entries %d, matched %d, settled %d, mismatches %+v",
				rec.Entries, rec.Matched, rec.Settled, rec.Mismatches)
		}
	})
	t.Run("one mismatch of each kind", func(t *testing.T) {
		want := map[string]mandate.Mismatch{
			mandate.MismatchUnknownDebit: {Kind: mandate.MismatchUnknownDebit, OrderNo: foreignNo, BankAmount: 777},
			mandate.MismatchMissingDebit: {Kind: mandate.MismatchMissingDebit, OrderNo: missingNo, MerchantID: w.merchant, OurAmount: 30_000},
			mandate.MismatchAmount: {Kind: mandate.MismatchAmount, OrderNo: tamperedNo, MerchantID: w.merchant,
				BankAmount: 20_000, OurAmount: 20_001},
		}
		for _, m := range rec.Mismatches {
			if want[m.Kind] != m {
				t.Errorf("mismatch %+v, want %+v", m, want[m.Kind])
			}
			delete(want, m.Kind)
		}
		if len(want) != 0 {
			t.Errorf("not found: %v", want)
		}
	})
	t.Run("recorded", func(t *testing.T) {
		var bankCode string
		var day time.Time
		var entries, matched, settled, mismatches int
		if err := w.Pool.QueryRow(ctx, `SELECT bank_code, bank_day, entries, matched, settled, mismatches
			FROM reconciliation_runs WHERE id = $1`, rec.RunID).Scan(&bankCode, &day, &entries, &matched, &settled, &mismatches); err != nil {
			t.Fatal(err)
		}
		if bankCode != "ICBC" || !day.Equal(d0) || entries != 4 || matched != 2 || settled != 2 || mismatches != 3 {
			t.Errorf("run row = %s %s %d %d %d %d", bankCode, day, entries, matched, settled, mismatches)
		}
		rows, err := w.Pool.Query(ctx, `SELECT kind || ' ' || order_no || ' ' || coalesce(merchant_id, '-') || ' ' ||
			coalesce(bank_amount::text, '-') || ' ' || coalesce(our_amount::text, '-') FROM reconciliation_mismatches
			WHERE run_id = $1 AND bank_code = 'ICBC' AND bank_day = $2 ORDER BY kind`, rec.RunID, d0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		var line string
		for rows.Next() {
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			got = append(got, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"amount_mismatch " + tamperedNo + " " + w.merchant + " 20000 20001",
			"missing_debit " + missingNo + " " + w.merchant + " - 30000",
			"unknown_debit " + foreignNo + " - 777 -",
		}
		if !slices.Equal(got, want) {
			t.Errorf("mismatch rows\n got %q\nwant %q", got, want)
		}
	})
	t.Run("unknown attempt the bank made settles as succeeded", func(t *testing.T) {
		ch := w.oneCharge(t, made)
		if ch.ID != madeCharge.ID || ch.Status != mandate.ChargeSucceeded || ch.Attempts[0].Status != mandate.AttemptSucceeded {
			t.Fatalf("charge = %s, attempt %s", ch.Status, ch.Attempts[0].Status)
		}
		if got := types(chargeEvents(w.events(t, w.merchant), ch.ID)); !slices.Equal(got, []string{"charge.succeeded"}) {
			t.Errorf("events = %v", got)
		}
		w.checkBooks(t, madeCard)
	})
	t.Run("unknown attempt the bank never got fails and is retried", func(t *testing.T) {
		ch := w.oneCharge(t, lost)
		if ch.ID != lostCharge.ID || ch.Status != mandate.ChargeRetryScheduled || ch.Attempts[0].Status != mandate.AttemptFailed ||
			ch.Attempts[0].FailureCode != "not_in_statement" {
			t.Fatalf("charge = %s, attempt %+v", ch.Status, ch.Attempts[0])
		}
		if l := w.ledger(t, lostCard); len(l) != 0 {
			t.Fatalf("ledger = %+v", l)
		}
	})
	t.Run("matched and tampered charges keep their state", func(t *testing.T) {
		for _, m := range []mandate.Mandate{matched, tampered} {
			if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeSucceeded {
				t.Errorf("charge %s = %s", ch.ID, ch.Status)
			}
		}
		if l := w.ledger(t, tamperedCard); len(l) != 1 || l[0].Amount != 20_000 {
			t.Errorf("tampered card's ledger = %+v", l)
		}
	})
	t.Run("CCB statement matches", func(t *testing.T) {
		c := w.bindCard(t, "CCB", 1_000_000)
		w.mandate(t, c, w.dueToday(60_000))
		w.runDue(t)
		rec, err := w.svc.Reconcile(ctx, "CCB", d0)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Entries != 1 || rec.Matched != 1 || rec.Settled != 0 || len(rec.Mismatches) != 0 {
			t.Fatalf("CCB reconciliation = %+v", rec)
		}
		w.checkBooks(t, c)
	})
}

// TestReconcileLeavesSendingAttemptsToTheirJobs: an attempt whose job has
// not had its bank answer yet (here: waiting for the bank's one call slot
// behind a slow call) is absent from the statement and unknown to the
// bank's query, but is about to be sent. Reconciliation, run meanwhile by
// another process, leaves it alone: failing it would retry the charge
// under a new order number after this one debits.
func TestReconcileLeavesSendingAttemptsToTheirJobs(t *testing.T) {
	ctx := context.Background()
	// One attempt per job: two jobs contend for the bank's one slot.
	w := newWorld(t, limitBanks(map[string]bankadapters.Limit{"ICBC": {Concurrent: 1}}),
		func(c *mandate.Config) { c.JobBatch = 1 })
	cards := []card{w.bindCard(t, "ICBC", 1_000_000), w.bindCard(t, "ICBC", 1_000_000)}
	var ms []mandate.Mandate
	for i, c := range cards {
		ms = append(ms, w.mandate(t, c, w.dueToday(int64(7_000+i))))
	}
	// The first call is held until it times out (2 s), keeping the slot.
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "charge", Mode: "timeout"})
	if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 2 {
		t.Fatalf("run = %+v, %v", st, err)
	}
	w.waitFor(t, 10*time.Second, func() bool {
		var running int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE queue = $1 AND state = 'running'`,
			w.queue).Scan(&running); err != nil {
			t.Fatal(err)
		}
		return running == 2 && w.armedFaults(t) == 0
	}, func() string { return "the two charge jobs did not start" })

	reconciler, err := mandate.New(func() mandate.Config { c := w.cfg; c.Banks = w.banks; return c }())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.Reconcile(ctx, "ICBC", w.today())
	if err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the reconciliation may start after the held call
	// timed out and the second debit went through: settling that one from
	// the statement is right. Failing either would show below, as a
	// charge not succeeded with its one attempt.
	if len(rec.Mismatches) != 0 || rec.Settled > rec.Matched {
		t.Errorf("reconciliation during the calls: settled %d (%d on the statement), mismatches %+v",
			rec.Settled, rec.Matched, rec.Mismatches)
	}
	w.settle(t, true)
	for i, m := range ms {
		if ch := w.oneCharge(t, m); ch.Status != mandate.ChargeSucceeded || len(ch.Attempts) != 1 {
			t.Errorf("charge %d = %s with %d attempts", i, ch.Status, len(ch.Attempts))
		}
		w.checkBooks(t, cards[i])
	}
}

// TestReconcileAdoptsOrphanedAttempts: an attempt left processing by a
// charge job that ended without settling it is settled by reconciliation,
// failed by one last query when the bank never got it. River discards a
// job only after its last retry, about three weeks of backoff: the test
// stands in for that by marking an unworked job discarded. An attempt
// whose job still waits is left to it, and so is any within the hour.
func TestReconcileAdoptsOrphanedAttempts(t *testing.T) {
	ctx := context.Background()
	idle := "idle_" + randHex(4) // a queue nobody works
	w := newWorld(t, func(c *mandate.Config) { c.Queue, c.JobBatch = idle, 1 })
	t.Cleanup(func() { _, _ = w.Pool.Exec(ctx, `DELETE FROM river_job WHERE queue = $1`, idle) })
	orphanCard, liveCard := w.bindCard(t, "ICBC", 1_000_000), w.bindCard(t, "ICBC", 1_000_000)
	orphan := w.mandate(t, orphanCard, w.dueToday(4_100))
	live := w.mandate(t, liveCard, w.dueToday(4_200))
	if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 2 {
		t.Fatalf("run = %+v, %v", st, err)
	}
	orphanNo := w.oneCharge(t, orphan).Attempts[0].OrderNo
	tag, err := w.Pool.Exec(ctx, `UPDATE river_job SET state = 'discarded', finalized_at = now()
		WHERE queue = $1 AND args->'order_nos' @> jsonb_build_array($2::text)`, idle, orphanNo)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("discarding the orphan's job: %d rows, %v", tag.RowsAffected(), err)
	}

	// Within the hour an attempt is left to its job, whatever its state.
	if rec, err := w.svc.Reconcile(ctx, "ICBC", w.today()); err != nil || rec.Settled != 0 {
		t.Fatalf("reconciliation within the hour settled %d, %v; want none", rec.Settled, err)
	}
	w.setNow(w.clock.Now().Add(2 * time.Hour))
	rec, err := w.svc.Reconcile(ctx, "ICBC", w.today())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Settled != 1 || len(rec.Mismatches) != 0 {
		t.Errorf("reconciliation settled %d with mismatches %+v; want the orphan settled", rec.Settled, rec.Mismatches)
	}
	ch := w.oneCharge(t, orphan)
	if ch.Status == mandate.ChargeProcessing || ch.Status == mandate.ChargeUnknown || len(ch.Attempts) != 1 ||
		ch.Attempts[0].Status != mandate.AttemptFailed || ch.Attempts[0].FailureCode != "not_in_statement" {
		t.Errorf("orphan: charge %s, attempts %+v; want its attempt failed not_in_statement", ch.Status, ch.Attempts)
	}
	if lc := w.oneCharge(t, live); lc.Status != mandate.ChargeProcessing || lc.Attempts[0].Status != mandate.AttemptProcessing {
		t.Errorf("live: charge %s, attempt %s; want both left processing to their job", lc.Status, lc.Attempts[0].Status)
	}
	if l := w.ledger(t, orphanCard); len(l) != 0 {
		t.Errorf("the orphan's card was debited %d times", len(l))
	}
}

// TestDebitCountsOnTheBanksDay: an attempt claimed just before midnight
// whose debit the bank makes after it (the first request never arrived;
// the query chain re-sent it under the same order number) counts on the
// day of the debit, the day whose statement names it. Neither day's
// reconciliation finds a mismatch.
func TestDebitCountsOnTheBanksDay(t *testing.T) {
	ctx := context.Background()
	// The second query waits for the test, which moves time past midnight.
	w := newWorld(t, func(c *mandate.Config) { c.QueryBackoff = []time.Duration{20 * time.Millisecond, time.Hour} })
	c := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, c, w.dueToday(5_100))
	d0 := w.today()
	w.setNow(time.Date(d0.Year(), d0.Month(), d0.Day(), 23, 58, 0, 0, shanghai))
	orderNo := w.unknownAfterFirstQuery(t, m)

	d1 := d0.AddDate(0, 0, 1)
	w.setNow(time.Date(d1.Year(), d1.Month(), d1.Day(), 0, 5, 0, 0, shanghai))
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}
	res, err := w.jobs.JobList(ctx, river.NewJobListParams().Queues(w.queue).Kinds(mandate.QueryArgs{}.Kind()).
		States(rivertype.JobStateScheduled))
	if err != nil || len(res.Jobs) != 1 {
		t.Fatalf("scheduled queries: %d, %v; want the second", len(res.Jobs), err)
	}
	if _, err := w.jobs.JobRetry(ctx, res.Jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, 30*time.Second, func() bool { return w.oneCharge(t, m).Status == mandate.ChargeSucceeded },
		func() string { return "the re-sent debit did not settle" })

	var bankDay time.Time
	if err := w.Pool.QueryRow(ctx, `SELECT bank_day FROM charge_attempts WHERE order_no = $1`, orderNo).Scan(&bankDay); err != nil {
		t.Fatal(err)
	}
	if l := w.ledger(t, c); len(l) != 1 || !bankDay.Equal(d1) {
		t.Fatalf("%d debits, the attempt's bank day %s; want one debit, counted on %s", len(l), bankDay.Format(time.DateOnly),
			d1.Format(time.DateOnly))
	}
	for _, d := range []time.Time{d0, d1} {
		rec, err := w.svc.Reconcile(ctx, "ICBC", d)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Mismatches) != 0 {
			t.Errorf("reconciling %s: mismatches %+v", d.Format(time.DateOnly), rec.Mismatches)
		}
	}
}

// unknownAfterFirstQuery runs m's charge, due now, at an ICBC whose debit
// never arrives and whose first status query fails, and returns the
// attempt's order number once that query has been counted (the next waits
// its backoff).
func (w *world) unknownAfterFirstQuery(t *testing.T, m mandate.Mandate) string {
	t.Helper()
	ctx := context.Background()
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "charge", Mode: "timeout"})        // never arrives
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "error", Count: 3}) // first query and its retries
	if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 1 {
		t.Fatalf("run = %+v, %v", st, err)
	}
	orderNo := w.oneCharge(t, m).Attempts[0].OrderNo
	w.waitFor(t, 30*time.Second, func() bool {
		var queries int
		err := w.Pool.QueryRow(ctx, `SELECT queries FROM charge_attempts WHERE order_no = $1`, orderNo).Scan(&queries)
		return err == nil && queries == 1
	}, func() string { return "the first query did not run" })
	return orderNo
}

// TestOneQueryChainPerAttempt: a query job that runs again for a try
// already counted (River reran it after it had committed, or a second chain
// began) asks the bank but schedules no further query, so an attempt's
// queries count its chain's tries. And reconciliation leaves an unknown
// attempt whose queries are spent to a query job still waiting for it:
// that job may find nothing and re-send under the same order number.
func TestOneQueryChainPerAttempt(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, c, w.dueToday(12_300))
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "error", UntilCleared: true})
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "charge", Mode: "error"})
	if _, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil {
		t.Fatal(err)
	}
	queries := func() int {
		t.Helper()
		ch := w.oneCharge(t, m)
		if len(ch.Attempts) != 1 {
			return -1
		}
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT queries FROM charge_attempts WHERE order_no = $1`,
			ch.Attempts[0].OrderNo).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	w.waitFor(t, 30*time.Second, func() bool { return queries() == len(testQueryBackoff) },
		func() string { return "the attempt's queries did not run out" })
	w.settle(t, false)
	orderNo := w.oneCharge(t, m).Attempts[0].OrderNo
	tries := func(try int) int {
		t.Helper()
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'order_no' = $2
			AND (args->>'try')::int = $3`, mandate.QueryArgs{}.Kind(), orderNo, try).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if _, err := w.jobs.Insert(ctx, mandate.QueryArgs{OrderNo: orderNo, MerchantID: c.Merchant, Try: 1},
		&river.InsertOpts{Queue: w.queue}); err != nil {
		t.Fatal(err)
	}
	w.settle(t, false)
	if n := queries(); n != len(testQueryBackoff) {
		t.Errorf("queries after a try ran again = %d, want %d", n, len(testQueryBackoff))
	}
	if n := tries(2); n != 1 {
		t.Errorf("%d jobs of try 2, want 1: the rerun of try 1 began a second chain", n)
	}

	// The bank answers again (it never got the order), but a query job is
	// still to come.
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}
	waiting, err := w.jobs.Insert(ctx, mandate.QueryArgs{OrderNo: orderNo, MerchantID: c.Merchant, Try: len(testQueryBackoff) - 1},
		&river.InsertOpts{Queue: w.queue, ScheduledAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := w.svc.Reconcile(ctx, "ICBC", w.today())
	if err != nil {
		t.Fatal(err)
	}
	if ch := w.oneCharge(t, m); rec.Settled != 0 || ch.Attempts[0].Status != mandate.AttemptUnknown {
		t.Fatalf("with a query job waiting: settled %d, attempt %s; want it left unknown", rec.Settled, ch.Attempts[0].Status)
	}
	if _, err := w.jobs.JobCancel(ctx, waiting.Job.ID); err != nil {
		t.Fatal(err)
	}
	if rec, err = w.svc.Reconcile(ctx, "ICBC", w.today()); err != nil {
		t.Fatal(err)
	}
	if ch := w.oneCharge(t, m); rec.Settled != 1 || ch.Attempts[0].Status != mandate.AttemptFailed ||
		ch.Attempts[0].FailureCode != "not_in_statement" {
		t.Fatalf("once no job waits: settled %d, attempt %+v; want failed not_in_statement", rec.Settled, ch.Attempts[0])
	}
	if l := w.ledger(t, c); len(l) != 0 {
		t.Fatalf("ledger = %+v, want no debit", l)
	}
}

// TestReconcileSettlesAnUnknownAttemptWhoseChainEnded: an unknown attempt
// whose query chain stopped before its last query (its waiting job was
// cancelled, or River discarded a job that kept failing) is settled by
// reconciliation once its claim is older than any chain could run, and
// failed by a last query when the bank never got it. Until then, while a
// query job is live for it, or within the hour after one that ran ended
// (it may have re-sent), it is left alone. River's states are written
// directly: a discard takes weeks of retries.
func TestReconcileSettlesAnUnknownAttemptWhoseChainEnded(t *testing.T) {
	ctx := context.Background()
	// The second query waits an hour: the chain stops there.
	w := newWorld(t, func(c *mandate.Config) { c.QueryBackoff = []time.Duration{20 * time.Millisecond, time.Hour} })
	c := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, c, w.dueToday(6_100))
	orderNo := w.unknownAfterFirstQuery(t, m)
	// River marks the first query's job completed a moment after its work
	// commits: until then it is live, and reconciliation rightly waits.
	w.settle(t, false)
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}
	// The second query's job; ran: when it last ended (else it never ran).
	setJob := func(state rivertype.JobState, ran time.Time) {
		t.Helper()
		var attempted, finalized *time.Time
		if !ran.IsZero() {
			attempted, finalized = &ran, &ran
		}
		if state != rivertype.JobStateCancelled && state != rivertype.JobStateDiscarded {
			finalized = nil
		} else if finalized == nil {
			now := w.clock.Now()
			finalized = &now
		}
		tag, err := w.Pool.Exec(ctx, `UPDATE river_job SET state = $3, attempted_at = $4, finalized_at = $5
			WHERE kind = $1 AND args->>'order_no' = $2 AND (args->>'try')::int = 1`,
			mandate.QueryArgs{}.Kind(), orderNo, string(state), attempted, finalized)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("setting the second query's job %s: %d rows, %v", state, tag.RowsAffected(), err)
		}
	}
	reconcile := func() int {
		t.Helper()
		rec, err := w.svc.Reconcile(ctx, "ICBC", w.today())
		if err != nil {
			t.Fatal(err)
		}
		return rec.Settled
	}

	setJob(rivertype.JobStateCancelled, time.Time{})
	if n := reconcile(); n != 0 {
		t.Fatalf("reconciliation while a chain could still run settled %d; want none", n)
	}
	w.setNow(w.clock.Now().Add(3 * time.Hour))
	setJob(rivertype.JobStateRetryable, w.clock.Now().Add(-time.Minute))
	if n := reconcile(); n != 0 {
		t.Fatalf("reconciliation with the query job to run again settled %d; want none", n)
	}
	setJob(rivertype.JobStateDiscarded, w.clock.Now().Add(-10*time.Minute))
	if n := reconcile(); n != 0 {
		t.Fatalf("reconciliation ten minutes after the query job ended settled %d; want none", n)
	}
	setJob(rivertype.JobStateDiscarded, w.clock.Now().Add(-2*time.Hour))
	if n := reconcile(); n != 1 {
		t.Fatalf("reconciliation of the ended chain settled %d; want its attempt", n)
	}
	if ch := w.oneCharge(t, m); ch.Attempts[0].Status != mandate.AttemptFailed ||
		ch.Attempts[0].FailureCode != "not_in_statement" {
		t.Fatalf("attempt %+v; want failed not_in_statement", ch.Attempts[0])
	}
	if l := w.ledger(t, c); len(l) != 0 {
		t.Fatalf("ledger = %+v, want no debit", l)
	}
}

// TestChargeJobInTheOldFormatFails: a charge job whose args carry no
// order numbers (an older quickpay's {"attempts": [...]}, enqueued after
// migration 011 rewrote the queue) fails loudly, so River keeps it, rather
// than completing with its attempts left processing. Nothing is sent.
func TestChargeJobInTheOldFormatFails(t *testing.T) {
	ctx := context.Background()
	idle := "idle_" + randHex(4) // a queue nobody works
	w := newWorld(t, func(c *mandate.Config) { c.Queue = idle })
	t.Cleanup(func() { _, _ = w.Pool.Exec(ctx, `DELETE FROM river_job WHERE queue = $1`, idle) })
	card := w.bindCard(t, "ICBC", 1_000_000)
	m := w.mandate(t, card, w.dueToday(4_300))
	if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 1 {
		t.Fatalf("run = %+v, %v", st, err)
	}
	orderNo := w.oneCharge(t, m).Attempts[0].OrderNo
	var args mandate.ChargeArgs
	if err := json.Unmarshal([]byte(`{"attempts": [{"order_no": "`+orderNo+`", "bank_code": "ICBC"}]}`), &args); err != nil {
		t.Fatal(err)
	}
	job := &river.Job[mandate.ChargeArgs]{JobRow: &rivertype.JobRow{Attempt: 1}, Args: args}
	if err := (&mandate.ChargeWorker{Service: w.svc}).Work(ctx, job); err == nil {
		t.Fatal("a charge job without order numbers completed")
	}
	if ch := w.oneCharge(t, m); ch.Attempts[0].Status != mandate.AttemptProcessing {
		t.Errorf("attempt %s, want still processing", ch.Attempts[0].Status)
	}
	if l := w.ledger(t, card); len(l) != 0 {
		t.Errorf("the bank debited %d times, want none", len(l))
	}
}
