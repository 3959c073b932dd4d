package mandate_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/mandate"
)

// TestBankSuccessForAnotherAmountIsHeld: a bank that reports success for
// another amount than the one sent (banksim's "amount" fault: it debits
// and names that amount) gets its charge held for operators — attempt
// amount_mismatch with the bank's figure, an audit row, the counter, no
// charge.succeeded, no retry — whether the answer is the charge's own
// (ICBC, synchronous) or a callback (CMB). The day's statement then shows
// it as an amount mismatch.
func TestBankSuccessForAnotherAmountIsHeld(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(w.svc)

	for _, tc := range []struct {
		name, bank string
		bankAmount int64 // 0: banksim's default, one fen more
	}{
		{"synchronous answer names more", "ICBC", 0},
		{"callback names less", "CMB", 900},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := w.bindCard(t, tc.bank, 100_000)
			m := w.mandate(t, c, w.dueToday(1_000))
			w.fault(t, simclient.Fault{BankCode: tc.bank, Operation: "charge", Mode: simclient.FaultAmount, Amount: tc.bankAmount})
			want := tc.bankAmount
			if want == 0 {
				want = 1_001
			}
			before := heldCount(t, reg, tc.bank)
			w.runDue(t)
			// A callback arrives after the charge's answer: wait for it.
			var ch mandate.Charge
			w.waitFor(t, 20*time.Second, func() bool {
				ch = w.oneCharge(t, m)
				return ch.Status != mandate.ChargeProcessing && ch.Status != mandate.ChargeUnknown
			}, func() string { return "charge still " + string(ch.Status) })

			if ch.Status != mandate.ChargeHeld || ch.FailureCode != mandate.MismatchAmount ||
				len(ch.Attempts) != 1 || ch.Attempts[0].Status != mandate.AttemptAmountMismatch || ch.Attempts[0].Amount != 1_000 {
				t.Fatalf("charge = %s (%s), attempts %+v; want held, one amount_mismatch attempt of 1000", ch.Status, ch.FailureCode, ch.Attempts)
			}
			orderNo := ch.Attempts[0].OrderNo
			var bankAmount int64
			if err := w.Pool.QueryRow(ctx, `SELECT bank_amount FROM charge_attempts WHERE order_no = $1`, orderNo).Scan(&bankAmount); err != nil || bankAmount != want {
				t.Errorf("attempt's bank_amount = %d (%v), want %d", bankAmount, err, want)
			}
			var audits int
			if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'charge.amount_mismatch'
				AND subject = $1 AND merchant_id = $2 AND details->>'outcome' = 'held' AND (details->>'amount')::bigint = 1000
				AND (details->>'bank_amount')::bigint = $3 AND details->>'order_no' = $4`, ch.ID, w.merchant, want, orderNo).Scan(&audits); err != nil || audits != 1 {
				t.Errorf("charge.amount_mismatch audit rows = %d (%v), want 1", audits, err)
			}
			if got := heldCount(t, reg, tc.bank) - before; got != 1 {
				t.Errorf("quickpay_charge_amount_mismatches_total{bank=%s} rose by %v, want 1", tc.bank, got)
			}
			if evs := types(chargeEvents(w.events(t, w.merchant), ch.ID)); slices.Contains(evs, "charge.succeeded") {
				t.Errorf("a held charge emitted %v", evs)
			}
			// The bank did debit (its error); quickpay sends nothing more.
			if l := w.ledger(t, c); len(l) != 1 || l[0].Amount != want {
				t.Errorf("bank ledger = %v, want one debit of %d", l, want)
			}
			w.setDay(w.today().AddDate(0, 0, 1))
			w.runDue(t)
			if again := w.oneCharge(t, m); again.Status != mandate.ChargeHeld || len(again.Attempts) != 1 {
				t.Errorf("next day: charge %s with %d attempts; want still held, not retried", again.Status, len(again.Attempts))
			}
			if l := w.ledger(t, c); len(l) != 1 {
				t.Errorf("bank ledger after the next day = %v, want the one debit", l)
			}

			// The statement of the charge's day names the bank's amount: an
			// amount mismatch, not an unknown debit.
			rec, err := w.svc.Reconcile(ctx, tc.bank, ch.ChargeDate)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, mm := range rec.Mismatches {
				if mm.OrderNo == orderNo {
					found = true
					if mm.Kind != mandate.MismatchAmount || mm.BankAmount != want || mm.OurAmount != 1_000 {
						t.Errorf("reconciliation: %+v, want amount_mismatch %d vs 1000", mm, want)
					}
				}
			}
			if !found {
				t.Errorf("reconciliation of %s found nothing about %s: %+v", ch.ChargeDate.Format("2006-01-02"), orderNo, rec.Mismatches)
			}
		})
	}
}

// heldCount reads quickpay_charge_amount_mismatches_total{bank}.
func heldCount(t *testing.T, reg *prometheus.Registry, bank string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "quickpay_charge_amount_mismatches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "bank" && l.GetValue() == bank {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
