package mandate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

// TestReconcileRefunds leaves two refunds pending after every query ran
// out (one the bank made, one it never got), and injects one refund
// mismatch of each kind; the day's final statement settles the pending
// ones (the second by one last query) and Reconcile finds the mismatches.
func TestReconcileRefunds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	d0 := w.today()

	// exhaust waits until r is pending after every query.
	exhaust := func(t *testing.T, r mandate.Refund) {
		t.Helper()
		w.waitFor(t, 30*time.Second, func() bool {
			var queries int
			if err := w.Pool.QueryRow(ctx, `SELECT queries FROM refunds WHERE id = $1`, r.ID).Scan(&queries); err != nil {
				t.Fatal(err)
			}
			return queries == len(testQueryBackoff)
		}, func() string { return "the refund's queries did not run out" })
		w.settle(t, true)
		if got, _ := w.svc.GetRefund(ctx, w.merchant, r.ID); got.Status != mandate.RefundPending {
			t.Fatalf("after the queries the refund is %s", got.Status)
		}
	}

	matchedCard, matchedCharge := w.paidCharge(t, "ICBC", 10_000)
	matched := w.waitRefund(t, w.refund(t, matchedCharge, 1_000, ""))
	_, tamperedCharge := w.paidCharge(t, "ICBC", 10_000)
	tampered := w.waitRefund(t, w.refund(t, tamperedCharge, 5_000, ""))
	_, declinedCharge := w.paidCharge(t, "ICBC", 10_000)
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: "decline", Code: "refund_exceeds"})
	declined := w.waitRefund(t, w.refund(t, declinedCharge, 4_000, ""))
	madeCard, madeCharge := w.paidCharge(t, "ICBC", 10_000)
	lostCard, lostCharge := w.paidCharge(t, "ICBC", 10_000)

	// Queries fail until cleared: the next two refunds stay pending.
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "error", UntilCleared: true})
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: "drop_response"})
	made := w.refund(t, madeCharge, 2_000, "")
	exhaust(t, made)
	if !strings.Contains(w.logs.String(), "refund outcome still unknown after every query; the daily statement settles it") {
		t.Fatalf("no warning that the statement must settle the refund")
	}
	w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "refund", Mode: "error"})
	lost := w.refund(t, lostCharge, 3_000, "")
	exhaust(t, lost)
	if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
		t.Fatal(err)
	}

	// missing_refund: quickpay holds the declined refund as succeeded.
	if _, err := w.Pool.Exec(ctx, `UPDATE refunds SET status = 'succeeded', failure_code = NULL WHERE id = $1`, declined.ID); err != nil {
		t.Fatal(err)
	}
	// refund_amount_mismatch: quickpay's amount is a fen more than the bank's.
	if _, err := w.Pool.Exec(ctx, `UPDATE refunds SET amount = 5001 WHERE id = $1`, tampered.ID); err != nil {
		t.Fatal(err)
	}
	// unknown_refund: a refund of the platform's debit that quickpay never sent.
	bank, _ := w.banks.Bank("ICBC")
	foreignNo := "EXTR" + strings.ToUpper(randHex(8))
	r, err := bank.Refund(ctx, bankadapters.RefundRequest{RefundNo: foreignNo, OrderNo: matchedCharge.Attempts[0].OrderNo,
		Amount: 77, Currency: "CNY"})
	if err != nil || r.Status != bankadapters.ChargeSucceeded {
		t.Fatalf("direct refund = %+v, %v", r, err)
	}

	// A statement is final once the bank's day is over: before, what it
	// lists settles, and what it lacks may yet come.
	early, err := w.svc.Reconcile(ctx, "ICBC", d0)
	if err != nil {
		t.Fatal(err)
	}
	if early.Final || early.RefundsSettled != 1 {
		t.Fatalf("reconciliation during the day = %+v", early)
	}
	if got, _ := w.svc.GetRefund(ctx, w.merchant, lost.ID); got.Status != mandate.RefundPending {
		t.Fatalf("a statement not final settled a refund it lacks: %s", got.Status)
	}
	w.setDay(d0.AddDate(0, 0, 1))
	rec, err := w.svc.Reconcile(ctx, "ICBC", d0)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("counts", func(t *testing.T) {
		// Debits: the five charges. Refunds on the statement: matched,
		// tampered, made (settled by the run during the day) and the
		// foreign one; the lost one settled by a query.
		if !rec.Final || rec.Entries != 5 || rec.Matched != 5 || rec.Refunds != 4 || rec.RefundsMatched != 2 ||
			rec.RefundsSettled != 1 || len(rec.Mismatches) != 3 {
			t.Fatalf("reconciliation = %+v", rec)
		}
	})
	t.Run("one mismatch of each kind", func(t *testing.T) {
		want := map[string]mandate.Mismatch{
			mandate.MismatchUnknownRefund: {Kind: mandate.MismatchUnknownRefund, OrderNo: foreignNo, BankAmount: 77},
			mandate.MismatchMissingRefund: {Kind: mandate.MismatchMissingRefund, OrderNo: declined.RefundNo,
				MerchantID: w.merchant, OurAmount: 4_000},
			mandate.MismatchRefundAmount: {Kind: mandate.MismatchRefundAmount, OrderNo: tampered.RefundNo,
				MerchantID: w.merchant, BankAmount: 5_000, OurAmount: 5_001},
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
		var final bool
		var refunds, matched, settled, kinds int
		if err := w.Pool.QueryRow(ctx, `SELECT final, refunds, refunds_matched, refunds_settled,
			(SELECT count(*) FROM reconciliation_mismatches WHERE run_id = r.id AND kind LIKE '%refund%')
			FROM reconciliation_runs r WHERE id = $1`, rec.RunID).Scan(&final, &refunds, &matched, &settled, &kinds); err != nil {
			t.Fatal(err)
		}
		if !final || refunds != 4 || matched != 2 || settled != 1 || kinds != 3 {
			t.Errorf("run = final %v, refunds %d, matched %d, settled %d, %d refund mismatches", final, refunds, matched, settled, kinds)
		}
	})
	t.Run("the refund the bank made succeeds from the statement", func(t *testing.T) {
		got, err := w.svc.GetRefund(ctx, w.merchant, made.ID)
		if err != nil {
			t.Fatal(err)
		}
		l := w.refundLedger(t, madeCard)
		if got.Status != mandate.RefundSucceeded || len(l) != 1 || got.BankReference != l[0].BankTxnNo ||
			!got.FinishedAt.Equal(l[0].At.Truncate(time.Second)) { // the statement's time is to the second
			t.Fatalf("refund = %+v; bank refunds %v", got, l)
		}
		if ch := w.getCharge(t, madeCharge); ch.AmountRefunded != 2_000 {
			t.Errorf("charge refunded %d", ch.AmountRefunded)
		}
		if s := w.auditSources(t, made.ID, "refund.settle"); len(s) != 1 || s[0] != "statement" {
			t.Errorf("settled by %v", s)
		}
		if got := types(refundEvents(w.events(t, w.merchant), made.ID)); len(got) != 1 || got[0] != "refund.succeeded" {
			t.Errorf("events = %v", got)
		}
		w.checkRefundBooks(t, madeCard)
	})
	t.Run("the refund the bank never got fails and gives its amount back", func(t *testing.T) {
		got, err := w.svc.GetRefund(ctx, w.merchant, lost.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != mandate.RefundFailed || got.FailureCode != "not_in_statement" {
			t.Fatalf("refund = %+v", got)
		}
		if l := w.refundLedger(t, lostCard); len(l) != 0 {
			t.Errorf("bank refunds = %v", l)
		}
		if held := w.heldSum(t, lostCharge); held != 0 {
			t.Errorf("the charge still holds %d", held)
		}
		if got := types(refundEvents(w.events(t, w.merchant), lost.ID)); len(got) != 1 || got[0] != "refund.failed" {
			t.Errorf("events = %v", got)
		}
	})
	t.Run("matched refunds keep their state", func(t *testing.T) {
		for _, r := range []mandate.Refund{matched, tampered} {
			if got, _ := w.svc.GetRefund(ctx, w.merchant, r.ID); got.Status != mandate.RefundSucceeded {
				t.Errorf("refund %s = %s", r.RefundNo, got.Status)
			}
		}
		// The foreign refund is the bank's: quickpay's books of the card
		// hold only its own.
		if l := w.refundLedger(t, matchedCard); len(l) != 2 {
			t.Errorf("bank refunds to the matched card = %v", l)
		}
	})
}
