package conformance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// --- refund helpers ------------------------------------------------------------

// refundReq refunds amount of the debit orderNo under a fresh refund number.
func (s *suite) refundReq(orderNo string, amount int64) bankadapters.RefundRequest {
	r := bankadapters.RefundRequest{RefundNo: s.gen.OrderNo("RF"), OrderNo: orderNo, Amount: amount, Currency: "CNY"}
	if s.cb != nil {
		r.NotifyURL = s.cb.url
	}
	return r
}

// settleRefund polls QueryRefund until refundNo is succeeded or failed.
// Safe to call from any goroutine.
func settleRefund(ctx context.Context, b bankadapters.Bank, refundNo string) (bankadapters.RefundResult, error) {
	return settleBy(ctx, "refund "+refundNo, func() (bankadapters.RefundResult, error) { return b.QueryRefund(ctx, refundNo) },
		func(r bankadapters.RefundResult) bankadapters.ChargeStatus { return r.Status })
}

func (s *suite) settleRefund(t *testing.T, b bankadapters.Bank, refundNo string) bankadapters.RefundResult {
	t.Helper()
	r, err := settleRefund(t.Context(), b, refundNo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// refund sends req and, for an async bank, checks the PROCESSING answer
// and settles it by QueryRefund. The result is final.
func (s *suite) refund(t *testing.T, b bankadapters.Bank, req bankadapters.RefundRequest) bankadapters.RefundResult {
	t.Helper()
	r, err := b.Refund(t.Context(), req)
	if err != nil {
		t.Fatalf("refund %s: %v", req.RefundNo, err)
	}
	if r.RefundNo != req.RefundNo {
		t.Fatalf("refund answered refund %q, want %q", r.RefundNo, req.RefundNo)
	}
	if final(r.Status) {
		// Sync banks; and what an async bank refuses up front (order conflict).
		return r
	}
	if !s.h.Async {
		t.Fatalf("sync refund answered %s/%s, want a final status (cause: %v)", r.Status, r.Outcome, r.Cause)
	}
	if r.Status != bankadapters.ChargeProcessing || r.Outcome != bankadapters.OutcomeProcessing {
		t.Fatalf("async refund answered %s/%s, want processing (cause: %v)", r.Status, r.Outcome, r.Cause)
	}
	return s.settleRefund(t, b, req.RefundNo)
}

// wantRefunded fails unless r is a success of amount refunding orderNo,
// with a bank transaction number.
func wantRefunded(t *testing.T, r bankadapters.RefundResult, orderNo string, amount int64) {
	t.Helper()
	if r.Status != bankadapters.ChargeSucceeded || r.Outcome != bankadapters.OutcomeSuccess {
		t.Fatalf("refund %s: %s/%s code %q (cause: %v), want succeeded", r.RefundNo, r.Status, r.Outcome, r.Code, r.Cause)
	}
	if r.Amount != amount || r.OrderNo != orderNo {
		t.Errorf("refund %s: %d fen of order %q, want %d of %q", r.RefundNo, r.Amount, r.OrderNo, amount, orderNo)
	}
	if r.BankTxnNo == "" {
		t.Errorf("refund %s: success without a bank transaction number", r.RefundNo)
	}
}

// wantRefundRefused fails unless r is a hard decline for reason, with the
// dialect's code for it.
func (s *suite) wantRefundRefused(t *testing.T, r bankadapters.RefundResult, reason string) {
	t.Helper()
	if r.Status != bankadapters.ChargeFailed || r.Outcome != bankadapters.OutcomeHardDecline {
		t.Fatalf("refund %s: %s/%s code %q (cause: %v), want failed/%s", r.RefundNo, r.Status, r.Outcome, r.Code, r.Cause,
			bankadapters.OutcomeHardDecline)
	}
	if r.Code != s.code(reason) || r.Reason != reason {
		t.Errorf("refund %s: code %q reason %q, want %q and %q", r.RefundNo, r.Code, r.Reason, s.code(reason), reason)
	}
}

// wantRefundUnknown fails unless r is an unknown result whose cause
// mentions each of words.
func wantRefundUnknown(t *testing.T, r bankadapters.RefundResult, words ...string) {
	t.Helper()
	wantUnknownAnswer(t, "refund "+r.RefundNo, r.Status, r.Outcome, r.Code, r.Cause, words)
}

// wantRefundNotFound fails unless the bank never received refundNo.
func wantRefundNotFound(t *testing.T, b bankadapters.Bank, refundNo string) {
	t.Helper()
	r, err := b.QueryRefund(t.Context(), refundNo)
	if !errors.Is(err, bankadapters.ErrOrderNotFound) {
		t.Fatalf("query refund %s = %s/%s, %v; want ErrOrderNotFound", refundNo, r.Status, r.Outcome, err)
	}
}

// credits returns the ledger's refunds of refundNo on card.
func (s *suite) credits(t *testing.T, card, refundNo string) []LedgerEntry {
	t.Helper()
	l, err := s.sim.Ledger(t.Context(), card)
	if err != nil {
		t.Fatal(err)
	}
	var out []LedgerEntry
	for _, e := range l {
		if e.OrderNo == refundNo && e.Type == EntryRefund {
			out = append(out, e)
		}
	}
	return out
}

// wantCredits fails unless the bank credited refundNo n times, each of
// amount and naming orderNo.
func (s *suite) wantCredits(t *testing.T, card, refundNo, orderNo string, n int, amount int64) {
	t.Helper()
	c := s.credits(t, card, refundNo)
	if len(c) != n {
		t.Fatalf("ledger has %d credits of refund %s, want %d", len(c), refundNo, n)
	}
	for _, e := range c {
		if e.Amount != amount || e.RefundOf != orderNo {
			t.Errorf("ledger credit of refund %s is %d fen of order %q, want %d of %q", refundNo, e.Amount, e.RefundOf, amount, orderNo)
		}
	}
}

// paidAccount binds a fresh card and charges it amount; it returns the
// card, its agreement and the succeeded debit's order number.
func (s *suite) paidAccount(t *testing.T, b bankadapters.Bank, amount int64) (Account, string, string) {
	t.Helper()
	a, ag := s.boundAccount(t, b, nil)
	req := s.chargeReq(ag, amount)
	wantSucceeded(t, s.charge(t, b, req), amount)
	return a, ag, req.OrderNo
}

// wantQueryRefund fails unless QueryRefund tells what r told.
func (s *suite) wantQueryRefund(t *testing.T, b bankadapters.Bank, r bankadapters.RefundResult) {
	t.Helper()
	q, err := b.QueryRefund(t.Context(), r.RefundNo)
	if err != nil {
		t.Fatalf("query refund %s: %v", r.RefundNo, err)
	}
	if q.RefundNo != r.RefundNo || q.OrderNo != r.OrderNo || q.Status != r.Status || q.Outcome != r.Outcome ||
		q.Code != r.Code || q.Reason != r.Reason || q.Amount != r.Amount || q.BankTxnNo != r.BankTxnNo {
		t.Errorf("query refund %s = %s of %q %d fen code %q reason %q txn %q; the refund said %s of %q %d fen code %q reason %q txn %q",
			r.RefundNo, q.Status, q.OrderNo, q.Amount, q.Code, q.Reason, q.BankTxnNo,
			r.Status, r.OrderNo, r.Amount, r.Code, r.Reason, r.BankTxnNo)
	}
	if q.Status == bankadapters.ChargeSucceeded && q.FinishedAt.IsZero() {
		t.Errorf("query refund %s: succeeded without a finish time", r.RefundNo)
	}
}

// --- cases -----------------------------------------------------------------------

func (s *suite) testRefundPartials(t *testing.T) {
	b := s.adapter(t, nil)
	const debit = 10_000
	a, _, orderNo := s.paidAccount(t, b, debit)
	var refunded int64
	for _, amount := range []int64{3_000, 2_000, 5_000} {
		req := s.refundReq(orderNo, amount)
		r := s.refund(t, b, req)
		wantRefunded(t, r, orderNo, amount)
		refunded += amount
		s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, amount)
		s.wantBalance(t, a.CardNumber, defaultBalance-debit+refunded)
		s.wantQueryRefund(t, b, r)
	}
	// Nothing is left of the debit.
	req := s.refundReq(orderNo, 1)
	r := s.refund(t, b, req)
	s.wantRefundRefused(t, r, "refund_exceeds")
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance)
	// The debit itself is still a succeeded debit.
	q, err := b.Query(t.Context(), orderNo)
	if err != nil {
		t.Fatalf("query the debit: %v", err)
	}
	wantSucceeded(t, q, debit)
}

func (s *suite) testRefundFull(t *testing.T) {
	b := s.adapter(t, nil)
	const debit = 8_800
	a, _, orderNo := s.paidAccount(t, b, debit)
	req := s.refundReq(orderNo, debit)
	r := s.refund(t, b, req)
	wantRefunded(t, r, orderNo, debit)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, debit)
	s.wantBalance(t, a.CardNumber, defaultBalance)
	s.wantQueryRefund(t, b, r)
}

func (s *suite) testRefundRepeat(t *testing.T) {
	b := s.adapter(t, nil)
	const debit, amount = 6_000, 2_500
	a, _, orderNo := s.paidAccount(t, b, debit)
	req := s.refundReq(orderNo, amount)
	first := s.refund(t, b, req)
	wantRefunded(t, first, orderNo, amount)

	again, err := b.Refund(t.Context(), req)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if s.h.Async && again.Status == bankadapters.ChargeProcessing {
		again = s.settleRefund(t, b, req.RefundNo)
	}
	wantRefunded(t, again, orderNo, amount)
	if again.BankTxnNo != first.BankTxnNo {
		t.Errorf("repeat answered bank txn %q, the original was %q", again.BankTxnNo, first.BankTxnNo)
	}
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, amount)
	s.wantBalance(t, a.CardNumber, defaultBalance-debit+amount)
	// The repeat reserved nothing more: the rest of the debit still refunds.
	rest := s.refundReq(orderNo, debit-amount)
	wantRefunded(t, s.refund(t, b, rest), orderNo, debit-amount)
	s.wantBalance(t, a.CardNumber, defaultBalance)
}

func (s *suite) testRefundExceeds(t *testing.T) {
	b := s.adapter(t, nil)
	const debit = 4_000
	a, _, orderNo := s.paidAccount(t, b, debit)
	req := s.refundReq(orderNo, debit+1)
	r := s.refund(t, b, req)
	s.wantRefundRefused(t, r, "refund_exceeds")
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance-debit)
	// A declined refund is recorded and queryable.
	s.wantQueryRefund(t, b, r)
	// It took nothing from the debit: the whole of it still refunds.
	wantRefunded(t, s.refund(t, b, s.refundReq(orderNo, debit)), orderNo, debit)
	s.wantBalance(t, a.CardNumber, defaultBalance)
}

// testRefundNotRefundable refunds an order number the bank never debited,
// or (declined) one whose debit it declined.
func (s *suite) testRefundNotRefundable(declined bool) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a, ag := s.boundAccount(t, b, func(a *Account) { a.Balance = 1_000 })
		orderNo := s.gen.OrderNo("NX")
		if declined {
			req := s.chargeReq(ag, 5_000)
			wantFailed(t, s.charge(t, b, req), bankadapters.OutcomeRetryableDecline, s.code("insufficient_funds"))
			orderNo = req.OrderNo
		}
		req := s.refundReq(orderNo, 500)
		r := s.refund(t, b, req)
		s.wantRefundRefused(t, r, "order_not_refundable")
		s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, 1_000)
		s.wantQueryRefund(t, b, r)
	}
}

// testRefundWindowExpired moves the bank's clock: a debit 181 days old no
// longer refunds, one of 81 days on the same card does.
func (s *suite) testRefundWindowExpired(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	old := s.chargeReq(ag, 3_000)
	wantSucceeded(t, s.charge(t, b, old), 3_000)
	s.advance(t, 100*24*time.Hour)
	young := s.chargeReq(ag, 2_000)
	wantSucceeded(t, s.charge(t, b, young), 2_000)
	s.advance(t, 81*24*time.Hour)

	req := s.refundReq(old.OrderNo, 1_000)
	r := s.refund(t, b, req)
	s.wantRefundRefused(t, r, "refund_window_expired")
	s.wantCredits(t, a.CardNumber, req.RefundNo, old.OrderNo, 0, 0)
	s.wantQueryRefund(t, b, r)

	ok := s.refundReq(young.OrderNo, 1_000)
	wantRefunded(t, s.refund(t, b, ok), young.OrderNo, 1_000)
	s.wantCredits(t, a.CardNumber, ok.RefundNo, young.OrderNo, 1, 1_000)
	s.wantBalance(t, a.CardNumber, defaultBalance-3_000-2_000+1_000)
}

func (s *suite) testRefundConflict(t *testing.T) {
	b := s.adapter(t, nil)
	const debit = 5_000
	a, ag, orderNo := s.paidAccount(t, b, debit)
	req := s.refundReq(orderNo, 1_000)
	first := s.refund(t, b, req)
	wantRefunded(t, first, orderNo, 1_000)

	// The same refund number for another amount…
	other := req
	other.Amount = 1_001
	r, err := b.Refund(t.Context(), other)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	s.wantRefundRefused(t, r, "order_conflict")
	// …for another debit…
	second := s.chargeReq(ag, 700)
	wantSucceeded(t, s.charge(t, b, second), 700)
	other = req
	other.OrderNo = second.OrderNo
	r, err = b.Refund(t.Context(), other)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	s.wantRefundRefused(t, r, "order_conflict")
	// …and a debit's order number as a refund number.
	clash := s.refundReq(orderNo, 100)
	clash.RefundNo = second.OrderNo
	r, err = b.Refund(t.Context(), clash)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	s.wantRefundRefused(t, r, "order_conflict")

	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, 1_000)
	s.wantCredits(t, a.CardNumber, second.OrderNo, orderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance-debit-700+1_000)
	s.wantQueryRefund(t, b, first)
	s.wantDebits(t, a.CardNumber, second.OrderNo, 1, 700)
}

func (s *suite) testQueryRefundKinds(t *testing.T) {
	b := s.adapter(t, nil)
	wantRefundNotFound(t, b, s.gen.OrderNo("NX"))

	_, _, orderNo := s.paidAccount(t, b, 3_000)
	req := s.refundReq(orderNo, 300)
	wantRefunded(t, s.refund(t, b, req), orderNo, 300)
	// A debit's number asked as a refund, and a refund's as a debit, are
	// answers the adapter cannot use: never a result.
	if r, err := b.QueryRefund(t.Context(), orderNo); err == nil || errors.Is(err, bankadapters.ErrOrderNotFound) {
		t.Errorf("query refund of a debit's number = %s/%s, %v; want an error other than not found", r.Status, r.Outcome, err)
	}
	if r, err := b.Query(t.Context(), req.RefundNo); err == nil || errors.Is(err, bankadapters.ErrOrderNotFound) {
		t.Errorf("query of a refund number = %s/%s, %v; want an error other than not found", r.Status, r.Outcome, err)
	}
}

// testStatementRefunds: a refund is listed on its day with its type, the
// debit it refunds and its own transaction; that day's statement is not
// final while the day runs, the day before's is.
func (s *suite) testStatementRefunds(t *testing.T) {
	b := s.adapter(t, nil)
	st, ok := b.(bankadapters.Statementer)
	if !ok {
		t.Skipf("the %s adapter serves no statements", s.h.BankCode)
	}
	a, ag, orderNo := s.paidAccount(t, b, 5_000)
	req := s.refundReq(orderNo, 1_200)
	r := s.refund(t, b, req)
	wantRefunded(t, r, orderNo, 1_200)
	credit := s.credits(t, a.CardNumber, req.RefundNo)
	if len(credit) != 1 {
		t.Fatalf("ledger has %d credits of the refund", len(credit))
	}
	day := credit[0].At.In(shanghai)
	date := time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, shanghai)
	stmt, err := st.Statement(t.Context(), date)
	if err != nil {
		t.Fatalf("statement: %v", err)
	}
	bankNow, err := s.sim.Clock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if stmt.Final && bankNow.Before(date.AddDate(0, 0, 1)) {
		t.Errorf("the statement of %s is final while the bank's day runs (its clock says %s)", date.Format(time.DateOnly), bankNow)
	}
	var refunds, debits int
	for _, e := range stmt.Entries {
		switch {
		case e.OrderNo == req.RefundNo:
			refunds++
			if e.Type != bankadapters.EntryRefund || e.RefundOf != orderNo || e.Amount != 1_200 || e.AgreementNo != ag ||
				e.BankTxnNo != r.BankTxnNo || e.FinishedAt.IsZero() {
				t.Errorf("statement entry of the refund: %s of %q %d fen agreement match %v txn %q at %v; want refund of %q 1200 fen txn %q",
					e.Type, e.RefundOf, e.Amount, e.AgreementNo == ag, e.BankTxnNo, e.FinishedAt, orderNo, r.BankTxnNo)
			}
		case e.OrderNo == orderNo:
			debits++
			if e.Type != bankadapters.EntryDebit || e.RefundOf != "" || e.Amount != 5_000 {
				t.Errorf("statement entry of the debit: %s of %q %d fen; want a debit of 5000 fen", e.Type, e.RefundOf, e.Amount)
			}
		}
	}
	// The debit may have finished the day before (a refund right after
	// midnight); the refund is on its own day.
	if refunds != 1 || debits > 1 {
		t.Errorf("statement lists the refund %d times and the debit %d times, want 1 and at most 1", refunds, debits)
	}
	before, err := st.Statement(t.Context(), date.AddDate(0, 0, -1))
	if err != nil {
		t.Fatalf("statement of the day before: %v", err)
	}
	if !before.Final {
		t.Errorf("the statement of %s, a closed day, is not final", date.AddDate(0, 0, -1).Format(time.DateOnly))
	}
	for _, e := range before.Entries {
		if e.OrderNo == req.RefundNo {
			t.Errorf("the day before's statement lists refund %s", req.RefundNo)
		}
	}
	next, err := st.Statement(t.Context(), date.AddDate(0, 0, 1))
	if err != nil {
		t.Fatalf("statement of the day after: %v", err)
	}
	if next.Final {
		t.Errorf("the statement of %s, a day not begun, is final", date.AddDate(0, 0, 1).Format(time.DateOnly))
	}
}
