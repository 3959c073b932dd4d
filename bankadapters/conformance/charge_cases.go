package conformance

import (
	"bytes"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// shanghai is the zone of the banks' days (China keeps UTC+8, no DST).
var shanghai = time.FixedZone("CST", 8*3600)

func (s *suite) testChargeSuccess(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	const amount = 12_345
	req := s.chargeReq(ag, amount)
	r, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("charge: %v", err)
	}
	if r.OrderNo != req.OrderNo {
		t.Fatalf("charge answered order %q, want %q", r.OrderNo, req.OrderNo)
	}
	txn := r.BankTxnNo
	if s.h.Async {
		if r.Status != bankadapters.ChargeProcessing || r.Outcome != bankadapters.OutcomeProcessing {
			t.Fatalf("async charge answered %s/%s (cause %v), want processing", r.Status, r.Outcome, r.Cause)
		}
		cb, err := s.cb.wait(t.Context(), req.OrderNo)
		if err != nil {
			t.Fatal(err)
		}
		wantSucceeded(t, cb.notice.Charge, amount)
		if cb.notice.Charge.FinishedAt.IsZero() {
			t.Error("callback without a finish time")
		}
		if txn != "" && cb.notice.Charge.BankTxnNo != txn {
			t.Errorf("callback bank txn %q, charge answered %q", cb.notice.Charge.BankTxnNo, txn)
		}
		txn = cb.notice.Charge.BankTxnNo
	} else {
		wantSucceeded(t, r, amount)
	}
	q, err := b.Query(t.Context(), req.OrderNo)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	wantSucceeded(t, q, amount)
	if q.OrderNo != req.OrderNo || q.BankTxnNo != txn || q.FinishedAt.IsZero() {
		t.Errorf("query = order %q txn %q finished %v; want order %q txn %q and a finish time",
			q.OrderNo, q.BankTxnNo, q.FinishedAt, req.OrderNo, txn)
	}
	s.wantDebits(t, a.CardNumber, req.OrderNo, 1, amount)
	s.wantBalance(t, a.CardNumber, defaultBalance-amount)
}

// testDecline charges past a card's balance or limits.
func (s *suite) testDecline(reason string) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		var (
			edit    func(*Account)
			amount  int64
			prepare int64 // a charge that succeeds first
		)
		switch reason {
		case "insufficient_funds":
			edit, amount = func(a *Account) { a.Balance = 1_000 }, 1_001
		case "single_limit":
			edit, amount = func(a *Account) { a.SingleLimit = 10_000 }, 10_001
		case "daily_limit":
			edit, prepare, amount = func(a *Account) { a.SingleLimit, a.DailyLimit = 10_000, 15_000 }, 10_000, 5_001
		default:
			t.Fatalf("conformance: no set-up for a %s decline", reason)
		}
		a, ag := s.boundAccount(t, b, edit)
		balance := s.state(t, a.CardNumber).Balance
		if prepare > 0 {
			wantSucceeded(t, s.charge(t, b, s.chargeReq(ag, prepare)), prepare)
			balance -= prepare
		}
		req := s.chargeReq(ag, amount)
		wantFailed(t, s.charge(t, b, req), bankadapters.OutcomeRetryableDecline, s.code(reason))
		s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, balance)
		// Just under the limit still works: the decline was the limit's.
		if reason != "insufficient_funds" {
			return
		}
		wantSucceeded(t, s.charge(t, b, s.chargeReq(ag, 1_000)), 1_000)
	}
}

func (s *suite) testTryTomorrow(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, func(a *Account) { a.Balance = 1_000 })
	for i := 0; i < 3; i++ {
		wantFailed(t, s.charge(t, b, s.chargeReq(ag, 5_000)), bankadapters.OutcomeRetryableDecline, s.code("insufficient_funds"))
	}
	// Affordable, but the day is over for this card.
	req := s.chargeReq(ag, 100)
	wantFailed(t, s.charge(t, b, req), bankadapters.OutcomeRetryableDecline, s.code("try_tomorrow"))
	s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)

	s.advance(t, 24*time.Hour)
	next := s.chargeReq(ag, 100)
	wantSucceeded(t, s.charge(t, b, next), 100)
	s.wantDebits(t, a.CardNumber, next.OrderNo, 1, 100)
	s.wantBalance(t, a.CardNumber, 900)
}

func (s *suite) testRepeatOrder(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	req := s.chargeReq(ag, 4_321)
	first := s.charge(t, b, req)
	wantSucceeded(t, first, 4_321)

	again, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if s.h.Async && again.Status == bankadapters.ChargeProcessing {
		again = s.settle(t, b, req.OrderNo)
	}
	wantSucceeded(t, again, 4_321)
	if again.BankTxnNo != first.BankTxnNo {
		t.Errorf("repeat answered bank txn %q, the original was %q", again.BankTxnNo, first.BankTxnNo)
	}
	s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 4_321)
	s.wantBalance(t, a.CardNumber, defaultBalance-4_321)
}

func (s *suite) testOrderConflict(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	req := s.chargeReq(ag, 2_000)
	wantSucceeded(t, s.charge(t, b, req), 2_000)

	other := req
	other.Amount = 2_001
	r, err := b.Charge(t.Context(), other)
	if err != nil {
		t.Fatalf("charge: %v", err)
	}
	wantFailed(t, r, bankadapters.OutcomeHardDecline, s.code("order_conflict"))
	s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 2_000)
	q, err := b.Query(t.Context(), req.OrderNo)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	wantSucceeded(t, q, 2_000)
}

func (s *suite) testQueryUnknown(t *testing.T) {
	b := s.adapter(t, nil)
	wantOrderNotFound(t, b, s.gen.OrderNo("NX"))
}

func (s *suite) testUnbind(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	if err := b.Unbind(t.Context(), ag); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	ags := s.state(t, a.CardNumber).Agreements
	if len(ags) != 1 || ags[0].AgreementNo != ag || ags[0].Status == "active" {
		t.Fatalf("agreements after unbind = %+v, want %s terminated", ags, ag)
	}
	req := s.chargeReq(ag, 100)
	wantFailed(t, s.charge(t, b, req), bankadapters.OutcomeHardDecline, s.code("agreement_invalid"))
	s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
	if err := b.Unbind(t.Context(), ag); err != nil {
		t.Fatalf("second unbind: %v", err)
	}
	// Unbound, the card binds again.
	if _, err := Bind(t.Context(), b, s.sim, a, s.gen.OrderNo("BR")); err != nil {
		t.Fatalf("bind after unbind: %v", err)
	}
}

func (s *suite) testStatement(t *testing.T) {
	b := s.adapter(t, nil)
	st, ok := b.(bankadapters.Statementer)
	if !ok {
		t.Skipf("the %s adapter serves no statements", s.h.BankCode)
	}
	a, ag := s.boundAccount(t, b, func(a *Account) { a.Balance = 5_000 })
	ok1, ok2, declined := s.chargeReq(ag, 1_111), s.chargeReq(ag, 2_222), s.chargeReq(ag, 9_999)
	r1, r2 := s.charge(t, b, ok1), s.charge(t, b, ok2)
	wantSucceeded(t, r1, 1_111)
	wantSucceeded(t, r2, 2_222)
	wantFailed(t, s.charge(t, b, declined), bankadapters.OutcomeRetryableDecline, s.code("insufficient_funds"))

	debit := s.debits(t, a.CardNumber, ok1.OrderNo)
	if len(debit) != 1 {
		t.Fatalf("ledger has %d debits of the first order", len(debit))
	}
	day := debit[0].At.In(shanghai)
	// The statement is the bank's whole day, other tests' debits too:
	// it holds every debit of that day the ledger held before it was
	// asked, and none the ledger did not hold after.
	before := s.dayLedger(t, day)
	stmt, err := st.Statement(t.Context(), time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, shanghai))
	entries := stmt.Entries
	if err != nil {
		t.Fatalf("statement: %v", err)
	}
	after := s.dayLedger(t, day)
	listed := map[string]bool{}
	for _, e := range entries {
		if listed[e.OrderNo] {
			t.Errorf("statement lists order %s twice", e.OrderNo)
		}
		listed[e.OrderNo] = true
		if l, ok := after[e.OrderNo]; !ok || l.Amount != e.Amount || l.AgreementNo != e.AgreementNo || l.BankTxnNo != e.BankTxnNo ||
			l.Type != string(e.Type) || l.RefundOf != e.RefundOf {
			t.Errorf("statement entry %s %s (%d fen, txn %q) is not one of the bank's ledger that day", e.Type, e.OrderNo, e.Amount, e.BankTxnNo)
		}
	}
	for _, o := range sortedKeys(before) {
		if !listed[o] {
			t.Errorf("statement leaves out %s %s of that day", before[o].Type, o)
		}
	}
	want := map[string]bankadapters.ChargeResult{ok1.OrderNo: r1, ok2.OrderNo: r2}
	seen := map[string]int{}
	for _, e := range entries {
		if e.AgreementNo != ag {
			continue // other tests' debits that day
		}
		seen[e.OrderNo]++
		r, ok := want[e.OrderNo]
		if !ok {
			t.Errorf("statement lists order %s, which did not succeed", e.OrderNo)
			continue
		}
		if e.Type != bankadapters.EntryDebit || e.Amount != r.Amount || e.BankTxnNo != r.BankTxnNo || e.FinishedAt.IsZero() {
			t.Errorf("statement entry %s: %d fen txn %q at %v; want %d fen txn %q and a time",
				e.OrderNo, e.Amount, e.BankTxnNo, e.FinishedAt, r.Amount, r.BankTxnNo)
		}
	}
	for _, o := range sortedKeys(want) {
		if seen[o] != 1 {
			t.Errorf("statement lists order %s %d times, want once", o, seen[o])
		}
	}
	// Another day holds none of them.
	other, err := st.Statement(t.Context(), day.AddDate(0, 0, -1))
	if err != nil {
		t.Fatalf("statement of the day before: %v", err)
	}
	for _, e := range other.Entries {
		if _, ok := want[e.OrderNo]; ok {
			t.Errorf("the day before's statement lists order %s", e.OrderNo)
		}
	}
}

func (s *suite) testCallbackTampered(t *testing.T) {
	b := s.adapter(t, nil)
	_, ag := s.boundAccount(t, b, nil)
	req := s.chargeReq(ag, 700)
	if _, err := b.Charge(t.Context(), req); err != nil {
		t.Fatalf("charge: %v", err)
	}
	cb, err := s.cb.wait(t.Context(), req.OrderNo)
	if err != nil {
		t.Fatal(err)
	}
	parser := b.(bankadapters.CallbackParser)
	// The genuine one parses again (the check can pass)…
	if n, err := parser.ParseCallback(cb.header, cb.body); err != nil || n.Charge.Status != bankadapters.ChargeSucceeded {
		t.Fatalf("genuine callback: %s, %v", n.Charge.Status, err)
	}
	// …an altered body does not…
	forged, changed := s.h.Dialect.SetField(cb.body, "amount", "70000", true)
	if !changed {
		t.Fatal("could not alter the callback")
	}
	if n, err := parser.ParseCallback(cb.header, forged); err == nil {
		t.Errorf("altered callback accepted: %s %d fen", n.Charge.Status, n.Charge.Amount)
	}
	// …nor a failure turned into a success…
	forged, _ = s.h.Dialect.SetField(cb.body, "status", "FAILED", false)
	if _, err := parser.ParseCallback(cb.header, forged); err == nil {
		t.Error("callback with its status altered accepted")
	}
	// …nor one without its signature.
	h, body := s.h.Dialect.Unsign(cb.header.Clone(), bytes.Clone(cb.body))
	if bytes.Equal(body, cb.body) && maps.EqualFunc(h, cb.header, slices.Equal[[]string]) {
		t.Fatal("the harness's Dialect.Unsign changed nothing")
	}
	if _, err := parser.ParseCallback(h, body); err == nil {
		t.Error("unsigned callback accepted")
	}
}

// dayLedger is the bank's debits and refunds for the platform on day
// (Asia/Shanghai), by order or refund number.
func (s *suite) dayLedger(t *testing.T, day time.Time) map[string]LedgerEntry {
	t.Helper()
	l, err := s.sim.Ledger(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := day.In(shanghai).Format(time.DateOnly)
	out := map[string]LedgerEntry{}
	for _, e := range l {
		if e.BankCode == s.h.BankCode && e.MerchantNo == s.h.MerchantNo && e.At.In(shanghai).Format(time.DateOnly) == want {
			out[e.OrderNo] = e
		}
	}
	return out
}
