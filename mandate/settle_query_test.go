package mandate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/mandate"
)

// TestSettleByQuery: an operator settles a charge whose attempt is
// unknown by asking the bank now, as the query chain would later. The
// chain waits an hour here, so only the operator's query can settle.
func TestSettleByQuery(t *testing.T) {
	w := newWorld(t, func(c *mandate.Config) { c.QueryBackoff = []time.Duration{time.Hour, time.Hour, time.Hour} })
	ctx := context.Background()
	const operator = "operator:op_settle"

	// unknownCharge charges a new card of balance fen once, under the
	// faults, and returns the charge, left unknown.
	unknownCharge := func(t *testing.T, balance int64, faults ...simclient.Fault) (card, mandate.Charge) {
		t.Helper()
		c := w.bindCard(t, "ICBC", balance)
		m := w.mandate(t, c, w.dueToday(10_000))
		for _, f := range faults {
			f.BankCode = "ICBC"
			w.fault(t, f)
		}
		if st, err := w.svc.RunDue(ctx, w.clock.Now()); err != nil || st.Claimed != 1 {
			t.Fatalf("run due: %+v, %v; want 1 claimed", st, err)
		}
		w.settle(t, false)
		ch := w.oneCharge(t, m)
		if ch.Status != mandate.ChargeUnknown || len(ch.Attempts) != 1 || ch.Attempts[0].Status != mandate.AttemptUnknown {
			t.Fatalf("charge %s with attempts %+v, want unknown with one unknown attempt", ch.Status, ch.Attempts)
		}
		return c, ch
	}
	audited := func(t *testing.T, chargeID string) []string {
		t.Helper()
		return testenv.Strings(t, w.Pool, `SELECT actor || ' ' || (details->>'outcome') || ' ' || (details->>'charge_status')
			FROM audit_log WHERE action = 'charge.settle_by_query' AND subject = $1 ORDER BY id`, chargeID)
	}

	t.Run("an attempt the bank debited settles succeeded with one debit", func(t *testing.T) {
		c, ch := unknownCharge(t, 1_000_000, simclient.Fault{Operation: "charge", Mode: "timeout", Apply: true})
		got, err := w.svc.SettleByQuery(ctx, w.merchant, ch.ID, operator)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != mandate.ChargeSucceeded || len(got.Attempts) != 1 || got.Attempts[0].Status != mandate.AttemptSucceeded {
			t.Errorf("charge %s with attempts %+v, want succeeded with its one attempt", got.Status, got.Attempts)
		}
		if l := w.ledger(t, c); len(l) != 1 || l[0].OrderNo != ch.Attempts[0].OrderNo || l[0].Amount != 10_000 {
			t.Errorf("ledger = %+v, want one debit of 10000 under %s", l, ch.Attempts[0].OrderNo)
		}
		if a := audited(t, ch.ID); len(a) != 1 || a[0] != operator+" ok succeeded" {
			t.Errorf("audit = %q, want one row by the operator", a)
		}
		evs := chargeEvents(w.events(t, w.merchant), ch.ID)
		if len(evs) != 1 || evs[0].Type != "charge.succeeded" {
			t.Errorf("charge events = %v, want [charge.succeeded]", types(evs))
		}

		t.Run("again it has nothing unknown", func(t *testing.T) {
			if _, err := w.svc.SettleByQuery(ctx, w.merchant, ch.ID, operator); !errors.Is(err, mandate.ErrNothingUnknown) {
				t.Errorf("err = %v, want ErrNothingUnknown", err)
			}
			if l := w.ledger(t, c); len(l) != 1 {
				t.Errorf("%d debits, want 1", len(l))
			}
		})
	})

	t.Run("an order the bank never received is not sent from the console", func(t *testing.T) {
		// Enough money that a send would debit: the ledger shows none.
		c, ch := unknownCharge(t, 1_000_000, simclient.Fault{Operation: "charge", Mode: "timeout"})
		got, err := w.svc.SettleByQuery(ctx, w.merchant, ch.ID, operator)
		if !errors.Is(err, mandate.ErrBankHasNoOrder) {
			t.Fatalf("err = %v, want ErrBankHasNoOrder", err)
		}
		if got.Status != mandate.ChargeUnknown || len(got.Attempts) != 1 || got.Attempts[0].Status != mandate.AttemptUnknown {
			t.Errorf("charge %s with attempts %+v, want unknown as it was", got.Status, got.Attempts)
		}
		if l := w.ledger(t, c); len(l) != 0 {
			t.Errorf("ledger = %+v, want no debit", l)
		}
		var queries int
		if err := w.Pool.QueryRow(ctx, `SELECT queries FROM charge_attempts WHERE order_no = $1`,
			ch.Attempts[0].OrderNo).Scan(&queries); err != nil {
			t.Fatal(err)
		}
		if queries != 0 {
			t.Errorf("queries = %d, want 0: no answer counts no try", queries)
		}
		if a := audited(t, ch.ID); len(a) != 1 || a[0] != operator+" failed unknown" {
			t.Errorf("audit = %q, want one failed row by the operator", a)
		}
	})

	t.Run("a bank that cannot answer leaves the charge unknown and counts nothing", func(t *testing.T) {
		c, ch := unknownCharge(t, 1_000_000, simclient.Fault{Operation: "charge", Mode: "timeout", Apply: true})
		// Queries fail (the adapter retries one) until cleared.
		w.fault(t, simclient.Fault{BankCode: "ICBC", Operation: "query", Mode: "error", Count: 50})
		t.Cleanup(func() {
			if err := w.SimCtl.ClearFaults(ctx, "ICBC"); err != nil {
				t.Error(err)
			}
		})
		got, err := w.svc.SettleByQuery(ctx, w.merchant, ch.ID, operator)
		if err == nil || errors.Is(err, mandate.ErrBankHasNoOrder) {
			t.Fatalf("err = %v, want the bank's failure", err)
		}
		if got.Status != mandate.ChargeUnknown || got.Attempts[0].Status != mandate.AttemptUnknown {
			t.Errorf("charge %s, attempt %s; want both unknown", got.Status, got.Attempts[0].Status)
		}
		var queries int
		if err := w.Pool.QueryRow(ctx, `SELECT queries FROM charge_attempts WHERE order_no = $1`,
			ch.Attempts[0].OrderNo).Scan(&queries); err != nil {
			t.Fatal(err)
		}
		if queries != 0 {
			t.Errorf("queries = %d, want 0: a query that learnt nothing is not a try", queries)
		}
		if l := w.ledger(t, c); len(l) != 1 {
			t.Errorf("ledger = %+v, want the one debit the bank made", l)
		}
		if a := audited(t, ch.ID); len(a) != 1 || a[0] != operator+" failed unknown" {
			t.Errorf("audit = %q, want one failed row by the operator", a)
		}
	})

	t.Run("another merchant's charge is not found", func(t *testing.T) {
		_, ch := unknownCharge(t, 1_000_000, simclient.Fault{Operation: "charge", Mode: "timeout"})
		other := w.newMerchant(t)
		if _, err := w.svc.SettleByQuery(ctx, other, ch.ID, operator); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
		if a := audited(t, ch.ID); len(a) != 0 {
			t.Errorf("audit = %q, want none", a)
		}
	})
}
