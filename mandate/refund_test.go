package mandate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/mandate"
)

const msgRefundUnknown = "refund outcome unknown; settling by query"

// --- refund helpers ---

// paidCharge binds a card at bank and charges it amount today; it returns
// the card and the succeeded charge.
func (w *world) paidCharge(t *testing.T, bank string, amount int64) (card, mandate.Charge) {
	t.Helper()
	c := w.bindCard(t, bank, 1_000_000)
	m := w.mandate(t, c, w.dueToday(amount))
	w.runDue(t)
	ch := w.oneCharge(t, m)
	if ch.Status != mandate.ChargeSucceeded || ch.AmountRefunded != 0 {
		t.Fatalf("charge = %s, refunded %d; want succeeded, none refunded", ch.Status, ch.AmountRefunded)
	}
	return c, ch
}

// refund asks to refund amount of ch; the refund is pending.
func (w *world) refund(t *testing.T, ch mandate.Charge, amount int64, reason string) mandate.Refund {
	t.Helper()
	r, err := w.svc.CreateRefund(context.Background(), ch.MerchantID, ch.ID, mandate.RefundInput{Amount: amount, Reason: reason})
	if err != nil {
		t.Fatalf("refund %d of %s: %v", amount, ch.ID, err)
	}
	if r.Status != mandate.RefundPending || r.ChargeID != ch.ID || r.MandateID != ch.MandateID || r.Amount != amount ||
		r.Currency != "CNY" || !strings.HasPrefix(r.RefundNo, "QR") || r.BankCode == "" {
		t.Fatalf("new refund = %+v", r)
	}
	return r
}

// waitRefund waits until r is no longer pending and the world's jobs are
// done (none failed), and returns it.
func (w *world) waitRefund(t *testing.T, r mandate.Refund) mandate.Refund {
	t.Helper()
	w.waitFor(t, 30*time.Second, func() bool {
		var err error
		if r, err = w.svc.GetRefund(context.Background(), r.MerchantID, r.ID); err != nil {
			t.Fatal(err)
		}
		return r.Status != mandate.RefundPending
	}, func() string { return fmt.Sprintf("refund %s still pending", r.RefundNo) })
	w.settle(t, true)
	return r
}

// getCharge reads a charge again.
func (w *world) getCharge(t *testing.T, ch mandate.Charge) mandate.Charge {
	t.Helper()
	got, err := w.svc.GetCharge(context.Background(), ch.MerchantID, ch.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// heldSum is the charge's refunds not failed (amount_refund_held).
func (w *world) heldSum(t *testing.T, ch mandate.Charge) int64 {
	t.Helper()
	var held int64
	if err := w.Pool.QueryRow(context.Background(), `SELECT amount_refund_held FROM charges WHERE id = $1`, ch.ID).
		Scan(&held); err != nil {
		t.Fatal(err)
	}
	return held
}

// refundLedger is the refunds the bank made to c.
func (w *world) refundLedger(t *testing.T, c card) []simclient.LedgerEntry {
	t.Helper()
	var out []simclient.LedgerEntry
	for _, e := range w.ledger(t, c) {
		if e.Type == simclient.EntryRefund {
			out = append(out, e)
		}
	}
	return out
}

// checkRefundBooks compares the bank's refunds to c with quickpay's: the
// bank's are exactly the succeeded refunds of c's charges (refund number,
// amount, the debit refunded), none made twice.
func (w *world) checkRefundBooks(t *testing.T, c card) {
	t.Helper()
	type credit struct {
		amount   int64
		refundOf string
	}
	bank := map[string]credit{}
	for _, e := range w.refundLedger(t, c) {
		if _, dup := bank[e.OrderNo]; dup {
			t.Errorf("refund %s made twice", e.OrderNo)
		}
		bank[e.OrderNo] = credit{e.Amount, e.RefundOf}
	}
	rows, err := w.Pool.Query(context.Background(), `SELECT refund_no, amount, order_no FROM refunds
		WHERE card_id = $1 AND status = 'succeeded'`, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]credit{}
	var no string
	var cr credit
	if _, err := pgx.ForEachRow(rows, []any{&no, &cr.amount, &cr.refundOf}, func() error { ours[no] = cr; return nil }); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(bank, ours) {
		t.Errorf("bank refunds %v, quickpay's succeeded refunds %v", bank, ours)
	}
}

// loggedRefund reports whether the world's logs have a line with message
// msg about refund number refundNo.
func (w *world) loggedRefund(msg, refundNo string) bool {
	for _, line := range strings.Split(w.logs.String(), "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			RefundNo string `json:"refund_no"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.RefundNo == refundNo {
			return true
		}
	}
	return false
}

// refundEvents are the refund.* events about one refund.
func refundEvents(evs []event, refundID string) []event {
	var out []event
	for _, e := range evs {
		if e.Data.ID == refundID && strings.HasPrefix(e.Type, "refund.") {
			out = append(out, e)
		}
	}
	return out
}

// auditSources are the sources of a refund's audit rows of action.
func (w *world) auditSources(t *testing.T, refundID, action string) []string {
	t.Helper()
	return testenv.Strings(t, w.Pool, `SELECT details->>'source' FROM audit_log
		WHERE subject = $1 AND action = $2 ORDER BY id`, refundID, action)
}

// --- tests ---

// TestRefunds refunds a charge in two parts at ICBC, then checks what
// may not be refunded, the lists, a repeated callback and the 180 days.
func TestRefunds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c, ch := w.paidCharge(t, "ICBC", 10_000)
	debit := ch.Attempts[0].OrderNo
	var r1, r2 mandate.Refund

	t.Run("partial refunds until the charge is spent", func(t *testing.T) {
		r1 = w.waitRefund(t, w.refund(t, ch, 3_000, "damaged on arrival"))
		if r1.Status != mandate.RefundSucceeded || r1.BankReference == "" || r1.FinishedAt.IsZero() ||
			r1.FailureCode != "" || r1.Reason != "damaged on arrival" {
			t.Fatalf("first refund = %+v", r1)
		}
		if got := w.getCharge(t, ch); got.AmountRefunded != 3_000 || got.Status != mandate.ChargeSucceeded {
			t.Errorf("after the first refund the charge is %s with %d refunded", got.Status, got.AmountRefunded)
		}
		w.setNow(w.clock.Now().Add(time.Second)) // the lists order refunds by creation
		r2 = w.waitRefund(t, w.refund(t, ch, 7_000, ""))
		if r2.Status != mandate.RefundSucceeded || r2.RefundNo == r1.RefundNo {
			t.Fatalf("second refund = %+v", r2)
		}
		if got := w.getCharge(t, ch); got.AmountRefunded != 10_000 {
			t.Errorf("charge refunded %d, want 10000", got.AmountRefunded)
		}
		if _, err := w.svc.CreateRefund(ctx, w.merchant, ch.ID, mandate.RefundInput{Amount: 1}); !errors.Is(err, mandate.ErrRefundExceedsCharge) {
			t.Errorf("a refund beyond the charge: %v, want ErrRefundExceedsCharge", err)
		}
		l := w.refundLedger(t, c)
		if len(l) != 2 || l[0].OrderNo != r1.RefundNo || l[0].Amount != 3_000 || l[0].RefundOf != debit ||
			l[1].OrderNo != r2.RefundNo || l[1].Amount != 7_000 || l[1].RefundOf != debit {
			t.Errorf("bank refunds = %v", l)
		}
		w.checkRefundBooks(t, c)
		w.checkBooks(t, c)
		acct, err := w.SimCtl.Account(ctx, c.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		if acct.Balance != 1_000_000 {
			t.Errorf("balance %d after the charge and its refunds, want 1000000", acct.Balance)
		}
		evs := w.events(t, w.merchant)
		for _, r := range []mandate.Refund{r1, r2} {
			got := refundEvents(evs, r.ID)
			if len(got) != 1 || got[0].Type != "refund.succeeded" || got[0].Data.Amount != r.Amount ||
				got[0].Data.ChargeID != ch.ID || got[0].Data.Status != "succeeded" {
				t.Errorf("events of refund %s = %+v", r.RefundNo, got)
			}
		}
		if s := w.auditSources(t, r1.ID, "refund.settle"); !slices.Equal(s, []string{"refund"}) {
			t.Errorf("settle audit rows of the first refund: %v", s)
		}
	})

	t.Run("refused before the bank", func(t *testing.T) {
		other := w.newMerchant(t)
		_, unpaid := func() (card, mandate.Charge) {
			c := w.bindCard(t, "ICBC", 1) // the bank declines: no funds
			m := w.mandate(t, c, w.dueToday(500))
			w.runDue(t)
			return c, w.oneCharge(t, m)
		}()
		if unpaid.Status != mandate.ChargeRetryScheduled {
			t.Fatalf("unfunded charge = %s", unpaid.Status)
		}
		_, fresh := w.paidCharge(t, "ICBC", 800)
		cases := []struct {
			name     string
			merchant string
			charge   string
			in       mandate.RefundInput
			field    string // a *FieldError's field
			err      error
		}{
			{"zero amount", w.merchant, fresh.ID, mandate.RefundInput{}, "amount", nil},
			{"negative amount", w.merchant, fresh.ID, mandate.RefundInput{Amount: -5}, "amount", nil},
			{"reason too long", w.merchant, fresh.ID, mandate.RefundInput{Amount: 1, Reason: strings.Repeat("退", 201)}, "reason", nil},
			{"reason with a line break", w.merchant, fresh.ID, mandate.RefundInput{Amount: 1, Reason: "a\nb"}, "reason", nil},
			{"another merchant's charge", other, fresh.ID, mandate.RefundInput{Amount: 1}, "", mandate.ErrNotFound},
			{"not a charge id", w.merchant, "chg_nope", mandate.RefundInput{Amount: 1}, "", mandate.ErrNotFound},
			{"a charge not succeeded", w.merchant, unpaid.ID, mandate.RefundInput{Amount: 1}, "", mandate.ErrChargeNotRefundable},
			{"more than the charge at once", w.merchant, fresh.ID, mandate.RefundInput{Amount: 801}, "", mandate.ErrRefundExceedsCharge},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := w.svc.CreateRefund(ctx, tc.merchant, tc.charge, tc.in)
				var fe *mandate.FieldError
				switch {
				case tc.field != "":
					if !errors.As(err, &fe) || fe.Field != tc.field {
						t.Errorf("err = %v, want a field error on %s", err, tc.field)
					}
				case !errors.Is(err, tc.err):
					t.Errorf("err = %v, want %v", err, tc.err)
				}
			})
		}
		if n := w.heldSum(t, fresh); n != 0 {
			t.Errorf("refusals hold %d of the charge", n)
		}
		// The full amount in one refund is allowed.
		if r := w.waitRefund(t, w.refund(t, fresh, 800, "")); r.Status != mandate.RefundSucceeded {
			t.Errorf("full refund = %s", r.Status)
		}
	})

	t.Run("lists", func(t *testing.T) {
		all, more, err := w.svc.Refunds(ctx, w.merchant, mandate.RefundFilter{}, mandate.Page{})
		if err != nil || more || len(all) != 3 {
			t.Fatalf("refunds = %d (more %v), %v; want 3", len(all), more, err)
		}
		var seen []string
		for p := (mandate.Page{Limit: 1}); ; {
			page, more, err := w.svc.ChargeRefunds(ctx, w.merchant, ch.ID, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				seen = append(seen, r.ID)
			}
			if !more {
				break
			}
			p.StartingAfter = page[len(page)-1].ID
		}
		if !slices.Equal(seen, []string{r2.ID, r1.ID}) {
			t.Errorf("the charge's refunds, a page at a time: %v, want [%s %s] (newest first)", seen, r2.ID, r1.ID)
		}
		got, _, err := w.svc.Refunds(ctx, w.merchant, mandate.RefundFilter{ChargeID: ch.ID, Status: mandate.RefundSucceeded,
			CreatedGTE: r1.CreatedAt, CreatedLT: r2.CreatedAt}, mandate.Page{})
		if err != nil || len(got) != 1 || got[0].ID != r1.ID {
			t.Errorf("filtered = %+v, %v; want the first refund", got, err)
		}
		if got, _, err := w.svc.Refunds(ctx, w.merchant, mandate.RefundFilter{Status: mandate.RefundFailed}, mandate.Page{}); err != nil || len(got) != 0 {
			t.Errorf("failed refunds = %+v, %v", got, err)
		}
		var fe *mandate.FieldError
		if _, _, err := w.svc.Refunds(ctx, w.merchant, mandate.RefundFilter{Status: "done"}, mandate.Page{}); !errors.As(err, &fe) || fe.Field != "status" {
			t.Errorf("status done: %v", err)
		}
		if _, _, err := w.svc.Refunds(ctx, w.merchant, mandate.RefundFilter{ChargeID: "mdt_x"}, mandate.Page{}); !errors.As(err, &fe) || fe.Field != "charge_id" {
			t.Errorf("charge_id mdt_x: %v", err)
		}
		other := w.newMerchant(t)
		if _, _, err := w.svc.Refunds(ctx, other, mandate.RefundFilter{}, mandate.Page{StartingAfter: r1.ID}); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("another merchant's cursor: %v", err)
		}
		if _, _, err := w.svc.ChargeRefunds(ctx, other, ch.ID, mandate.Page{}); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("another merchant's charge: %v", err)
		}
		if _, err := w.svc.GetRefund(ctx, other, r1.ID); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("another merchant's refund: %v", err)
		}
	})

	t.Run("a callback for a settled refund changes nothing", func(t *testing.T) {
		before := len(w.events(t, w.merchant))
		ok := bankadapters.RefundResult{RefundNo: r1.RefundNo, Status: bankadapters.ChargeSucceeded,
			Outcome: bankadapters.OutcomeSuccess, Amount: r1.Amount, BankTxnNo: "other"}
		if err := w.svc.ApplyRefundResult(ctx, "ICBC", ok); err != nil {
			t.Fatal(err)
		}
		if got, _ := w.svc.GetRefund(ctx, w.merchant, r1.ID); got.BankReference != r1.BankReference || got.Status != mandate.RefundSucceeded {
			t.Errorf("refund after a repeated callback = %+v", got)
		}
		if after := len(w.events(t, w.merchant)); after != before {
			t.Errorf("%d new events", after-before)
		}
		if got := w.getCharge(t, ch); got.AmountRefunded != 10_000 {
			t.Errorf("charge refunded %d", got.AmountRefunded)
		}
		ok.RefundNo = "QRNOSUCHREFUND"
		if err := w.svc.ApplyRefundResult(ctx, "ICBC", ok); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("unknown refund number: %v", err)
		}
		ok.RefundNo = r1.RefundNo
		if err := w.svc.ApplyRefundResult(ctx, "CCB", ok); !errors.Is(err, mandate.ErrNotFound) {
			t.Errorf("the number at another bank: %v", err)
		}
	})

	t.Run("the database refuses a held sum above the charge", func(t *testing.T) {
		_, err := w.Pool.Exec(ctx, `UPDATE charges SET amount_refund_held = amount + 1 WHERE id = $1`, ch.ID)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23514" || pe.ConstraintName != "charges_refunds_within_amount" {
			t.Errorf("err = %v, want the charges_refunds_within_amount check", err)
		}
	})

	// Last: it moves the clocks.
	t.Run("a charge older than 180 days is not refundable", func(t *testing.T) {
		_, old := w.paidCharge(t, "ICBC", 900)
		w.setNow(w.clock.Now().Add(mandate.RefundWindow - time.Minute))
		if r := w.waitRefund(t, w.refund(t, old, 100, "")); r.Status != mandate.RefundSucceeded {
			t.Errorf("refund on the window's last day = %s", r.Status)
		}
		w.setNow(w.clock.Now().Add(2 * time.Minute))
		if _, err := w.svc.CreateRefund(ctx, w.merchant, old.ID, mandate.RefundInput{Amount: 100}); !errors.Is(err, mandate.ErrChargeNotRefundable) {
			t.Errorf("after 180 days: %v", err)
		}
	})
}

// TestRefundsNeverExceedTheCharge races 20 refunds of 700 fen on a charge
// of 10,000: the database lets 14 through and refuses the rest, and the
// bank credits the card with those 14.
func TestRefundsNeverExceedTheCharge(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	c, ch := w.paidCharge(t, "ICBC", 10_000)
	const n, amount = 20, 700
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		created []mandate.Refund
		refused []error
	)
	for range n {
		wg.Go(func() {
			<-start
			r, err := w.svc.CreateRefund(ctx, w.merchant, ch.ID, mandate.RefundInput{Amount: amount})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
				return
			}
			created = append(created, r)
		})
	}
	close(start)
	wg.Wait()
	if len(created) != 10_000/amount || len(refused) != n-10_000/amount {
		t.Fatalf("%d created, %d refused; want %d and %d", len(created), len(refused), 10_000/amount, n-10_000/amount)
	}
	for _, err := range refused {
		if !errors.Is(err, mandate.ErrRefundExceedsCharge) {
			t.Errorf("refused with %v, want ErrRefundExceedsCharge", err)
		}
	}
	if held := w.heldSum(t, ch); held != int64(len(created))*amount {
		t.Errorf("held %d, want %d", held, len(created)*amount)
	}
	for _, r := range created {
		if got := w.waitRefund(t, r); got.Status != mandate.RefundSucceeded {
			t.Errorf("refund %s = %s", r.RefundNo, got.Status)
		}
	}
	if got := w.getCharge(t, ch); got.AmountRefunded != int64(len(created))*amount {
		t.Errorf("charge refunded %d, want %d", got.AmountRefunded, len(created)*amount)
	}
	var sum int64
	for _, e := range w.refundLedger(t, c) {
		sum += e.Amount
	}
	if sum != int64(len(created))*amount {
		t.Errorf("the bank refunded %d, want %d", sum, len(created)*amount)
	}
	w.checkRefundBooks(t, c)
}

// TestRefundAtEachBank refunds at each dialect and mode: ICBC (json-hmac,
// synchronous), CCB (form-rsa, synchronous) and CMB (json-hmac, every
// refund processing, then its callback). At CMB the bank's queries fail
// until the test ends, so only the callback can settle the refund.
func TestRefundAtEachBank(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for _, bank := range []string{"ICBC", "CCB", "CMB"} {
		t.Run(bank, func(t *testing.T) {
			c, ch := w.paidCharge(t, bank, 5_000)
			async := bank == "CMB"
			if async {
				w.fault(t, simclient.Fault{BankCode: bank, Operation: "query", Mode: "error", UntilCleared: true})
				defer func() {
					if err := w.SimCtl.ClearFaults(ctx, bank); err != nil {
						t.Fatal(err)
					}
				}()
			}
			callbacks := w.refundCallbacks.Load()
			r := w.waitRefund(t, w.refund(t, ch, 1_250, "partial"))
			if r.Status != mandate.RefundSucceeded || r.BankReference == "" {
				t.Fatalf("refund = %+v", r)
			}
			if l := w.refundLedger(t, c); len(l) != 1 || l[0].Amount != 1_250 || l[0].OrderNo != r.RefundNo {
				t.Errorf("bank refunds = %v", l)
			}
			w.checkRefundBooks(t, c)
			if got := w.loggedRefund(msgRefundUnknown, r.RefundNo); got != async {
				t.Errorf("outcome open at first: %v, want %v (the bank answers processing)", got, async)
			}
			wantSource := "refund"
			if async {
				wantSource = "callback"
				if w.refundCallbacks.Load() == callbacks {
					t.Errorf("no refund callback applied")
				}
			}
			if s := w.auditSources(t, r.ID, "refund.settle"); !slices.Equal(s, []string{wantSource}) {
				t.Errorf("settled by %v, want [%s]", s, wantSource)
			}
			if got := types(refundEvents(w.events(t, w.merchant), r.ID)); !slices.Equal(got, []string{"refund.succeeded"}) {
				t.Errorf("events = %v", got)
			}
		})
	}
}

// TestRefundFaults refunds through every banksim fault mode on operation
// refund, one refund at a time: each ends in the bank's truth, the card
// credited at most once under the refund's one number.
func TestRefundFaults(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	type want struct {
		status       mandate.RefundStatus
		failure      string
		unknownFirst bool // the first answer left the outcome open
	}
	ok := want{status: mandate.RefundSucceeded, unknownFirst: true}
	cases := []struct {
		name   string
		bank   string
		faults []simclient.Fault
		want   want
	}{
		{"timeout after the credit settles by query", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "timeout", Apply: true}}, ok},
		{"timeout before the credit is sent again under its number", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "timeout"}}, ok},
		{"bank 503 is sent again under its number", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "error"}}, ok},
		{"bank system error code settles by query", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "decline", Code: "system_error"}}, ok},
		{"processing settles by query or callback", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "processing"}}, ok},
		{"dropped answer settles by query", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "drop_response"}}, ok},
		{"dropped answer and a failing first query", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "drop_response"}, {Operation: "query", Mode: "error", Count: 3}}, ok},
		{"declined fails and gives the amount back", "ICBC",
			[]simclient.Fault{{Operation: "refund", Mode: "decline", Code: "refund_exceeds"}},
			want{status: mandate.RefundFailed, failure: bankadapters.ReasonRefundExceeds}},
		{"CCB timeout after the credit settles by query", "CCB",
			[]simclient.Fault{{Operation: "refund", Mode: "timeout", Apply: true}}, ok},
		{"CCB dropped answer settles by query", "CCB",
			[]simclient.Fault{{Operation: "refund", Mode: "drop_response"}}, ok},
		{"CMB dropped answer", "CMB",
			[]simclient.Fault{{Operation: "refund", Mode: "drop_response"}}, ok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ch := w.paidCharge(t, tc.bank, 6_000)
			for _, f := range tc.faults {
				f.BankCode = tc.bank
				w.fault(t, f)
			}
			r := w.waitRefund(t, w.refund(t, ch, 2_500, ""))
			if err := w.SimCtl.ClearFaults(ctx, tc.bank); err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.want.status || r.FailureCode != tc.want.failure {
				t.Errorf("refund = %s (%q), want %s (%q)", r.Status, r.FailureCode, tc.want.status, tc.want.failure)
			}
			if got := w.loggedRefund(msgRefundUnknown, r.RefundNo); got != tc.want.unknownFirst {
				t.Errorf("outcome open at first: %v, want %v", got, tc.want.unknownFirst)
			}
			credits := 0
			if tc.want.status == mandate.RefundSucceeded {
				credits = 1
			}
			if l := w.refundLedger(t, c); len(l) != credits {
				t.Errorf("bank refunds = %v, want %d", l, credits)
			}
			w.checkRefundBooks(t, c)
			got := w.getCharge(t, ch)
			if want := int64(credits) * 2_500; got.AmountRefunded != want || w.heldSum(t, ch) != want {
				t.Errorf("charge refunded %d, held %d; want %d both", got.AmountRefunded, w.heldSum(t, ch), want)
			}
			wantEvent := map[mandate.RefundStatus]string{mandate.RefundSucceeded: "refund.succeeded", mandate.RefundFailed: "refund.failed"}[tc.want.status]
			if evs := types(refundEvents(w.events(t, w.merchant), r.ID)); !slices.Equal(evs, []string{wantEvent}) {
				t.Errorf("events = %v, want [%s]", evs, wantEvent)
			}
			if tc.want.status == mandate.RefundFailed {
				// What the failed refund held is free again: the whole charge.
				if again := w.waitRefund(t, w.refund(t, ch, 6_000, "")); again.Status != mandate.RefundSucceeded {
					t.Errorf("full refund after a failed one = %s", again.Status)
				}
				w.checkRefundBooks(t, c)
			}
		})
	}
}

// TestRefundsSentInBatches creates refunds through a service whose jobs
// wait in a queue no worker takes, and runs their jobs by hand: refunds
// join the batch of a job not yet started, up to RefundBatch; a started
// job's batch takes no more; and a job run again after a crash between
// its claim and its answers asks the bank about each refund before it
// sends it, so a refund the bank made is not made twice.
func TestRefundsSentInBatches(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	cfg := w.cfg
	cfg.Queue, cfg.RefundBatch = "held_"+randHex(4), 3
	held, err := mandate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, ch := w.paidCharge(t, "ICBC", 10_000)
	create := func() mandate.Refund {
		t.Helper()
		r, err := held.CreateRefund(ctx, w.merchant, ch.ID, mandate.RefundInput{Amount: 100})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// jobs returns each job's refunds, by job id.
	jobs := func() map[int64][]string {
		t.Helper()
		rows, err := w.Pool.Query(ctx, `SELECT job_id, refund_no FROM refunds WHERE charge_id = $1 ORDER BY created_at, id`, ch.ID)
		if err != nil {
			t.Fatal(err)
		}
		out := map[int64][]string{}
		var job int64
		var no string
		if _, err := pgx.ForEachRow(rows, []any{&job, &no}, func() error { out[job] = append(out[job], no); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var created []mandate.Refund
	for range 7 {
		created = append(created, create())
	}
	batches := jobs()
	var sizes []int
	for _, b := range batches {
		sizes = append(sizes, len(b))
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 3, 3}) {
		t.Fatalf("batches of %v, want [1 3 3]", sizes)
	}
	var full []int64
	var open int64
	for job, b := range batches {
		if len(b) == 3 {
			full = append(full, job)
		} else {
			open = job
		}
	}

	t.Run("a job sends its batch", func(t *testing.T) {
		if err := held.SendRefunds(ctx, full[0], false); err != nil {
			t.Fatal(err)
		}
		for _, no := range batches[full[0]] {
			var status mandate.RefundStatus
			if err := w.Pool.QueryRow(ctx, `SELECT status FROM refunds WHERE refund_no = $1`, no).Scan(&status); err != nil || status != mandate.RefundSucceeded {
				t.Errorf("refund %s = %s (%v)", no, status, err)
			}
		}
	})
	t.Run("a started job's batch takes no more", func(t *testing.T) {
		// The open batch has room: the next refund joins it; then, with it
		// started, the one after opens a new batch.
		r := create()
		if got := jobs(); len(got[open]) != 2 || !slices.Contains(got[open], r.RefundNo) {
			t.Fatalf("the open batch = %v", got[open])
		}
		if err := held.SendRefunds(ctx, open, false); err != nil {
			t.Fatal(err)
		}
		late := create()
		if got := jobs(); len(got) != 4 || slices.Contains(got[open], late.RefundNo) {
			t.Fatalf("batches after the job started: %v", got)
		}
		created = append(created, r, late)
	})
	t.Run("a job run again asks before it sends", func(t *testing.T) {
		// The crash: the job claimed its batch (committed) and the bank
		// made the first refund; the answers were lost with the process.
		crashed := full[1]
		if _, err := w.Pool.Exec(ctx, `UPDATE refunds SET sent_at = $2 WHERE job_id = $1`, crashed, w.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Pool.Exec(ctx, `DELETE FROM refund_jobs WHERE job_id = $1`, crashed); err != nil {
			t.Fatal(err)
		}
		var made mandate.Refund
		for _, r := range created {
			if r.RefundNo == batches[crashed][0] {
				made = r
			}
		}
		bank, _ := w.banks.Bank("ICBC")
		if r, err := bank.Refund(ctx, bankadapters.RefundRequest{RefundNo: made.RefundNo, OrderNo: ch.Attempts[0].OrderNo,
			Amount: 100, Currency: "CNY"}); err != nil || r.Status != bankadapters.ChargeSucceeded {
			t.Fatalf("the first run's refund = %+v, %v", r, err)
		}
		if err := held.SendRefunds(ctx, crashed, true); err != nil {
			t.Fatal(err)
		}
		for _, no := range batches[crashed] {
			want := "refund"
			if no == made.RefundNo {
				want = "query"
			}
			var id string
			if err := w.Pool.QueryRow(ctx, `SELECT id FROM refunds WHERE refund_no = $1`, no).Scan(&id); err != nil {
				t.Fatal(err)
			}
			if s := w.auditSources(t, id, "refund.settle"); !slices.Equal(s, []string{want}) {
				t.Errorf("refund %s settled by %v, want [%s]", no, s, want)
			}
		}
	})
	t.Run("each refund credited once", func(t *testing.T) {
		// The last refund's job waits in the held queue: send it too.
		for job := range jobs() {
			if err := held.SendRefunds(ctx, job, false); err != nil {
				t.Fatal(err)
			}
		}
		if l := w.refundLedger(t, c); len(l) != 9 {
			t.Errorf("%d bank refunds, want 9", len(l))
		}
		w.checkRefundBooks(t, c)
		if got := w.getCharge(t, ch); got.AmountRefunded != 900 {
			t.Errorf("charge refunded %d, want 900", got.AmountRefunded)
		}
	})
	t.Run("a refund whose job ended unsent gets a new job", func(t *testing.T) {
		orphan := create()
		var job int64
		if err := w.Pool.QueryRow(ctx, `SELECT job_id FROM refunds WHERE id = $1`, orphan.ID).Scan(&job); err != nil {
			t.Fatal(err)
		}
		if _, err := w.jobs.JobCancel(ctx, job); err != nil {
			t.Fatal(err)
		}
		// Reconciliation a while later (its job's time is long past)
		// gives it a job of the world's, whose workers send it.
		w.setNow(w.clock.Now().Add(2 * time.Hour))
		if _, err := w.svc.Reconcile(ctx, "ICBC", w.today()); err != nil {
			t.Fatal(err)
		}
		if got := w.waitRefund(t, orphan); got.Status != mandate.RefundSucceeded {
			t.Errorf("orphaned refund = %s", got.Status)
		}
		w.checkRefundBooks(t, c)
		// The cancelled job's batch is closed: no refund joins it.
		if got := jobs(); len(got[job]) != 0 {
			t.Errorf("the cancelled job still has refunds %v", got[job])
		}
		if next := create(); slices.Contains(jobs()[job], next.RefundNo) {
			t.Errorf("a new refund joined the cancelled job's batch")
		}
	})
}
