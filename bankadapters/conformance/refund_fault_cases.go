package conformance

import (
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// Every case here arms a fault on operation refund and runs alone
// (testCase.alone). An unknown refund is settled as the domain settles it:
// by QueryRefund on its number, and when the bank never received it, by
// sending that same number again — never by a second refund number.

func (s *suite) testFaultRefundError(t *testing.T) {
	b := s.adapter(t, nil)
	a, _, orderNo := s.paidAccount(t, b, 4_000)
	s.fault(t, Fault{Operation: "refund", Mode: FaultError})
	req := s.refundReq(orderNo, 1_500)
	r, err := b.Refund(t.Context(), req)
	if err != nil {
		t.Fatalf("refund returned an error for an unanswered call: %v", err)
	}
	wantRefundUnknown(t, r, "503")
	wantRefundNotFound(t, b, req.RefundNo)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance-4_000)

	wantRefunded(t, s.refund(t, b, req), orderNo, 1_500)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, 1_500)
	s.wantBalance(t, a.CardNumber, defaultBalance-4_000+1_500)
}

// testFaultRefundTimeout: the bank holds its answer until the adapter
// gives up; with apply it has credited first.
func (s *suite) testFaultRefundTimeout(apply bool) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		short := s.adapter(t, func(o *bankadapters.CallOptions) { o.Timeout = shortTimeout })
		a, _, orderNo := s.paidAccount(t, b, 5_000)
		s.fault(t, Fault{Operation: "refund", Mode: FaultTimeout, Apply: apply})
		req := s.refundReq(orderNo, 2_500)
		start := time.Now()
		r, err := short.Refund(t.Context(), req)
		if err != nil {
			t.Fatalf("refund returned an error for an unanswered call: %v", err)
		}
		wantRefundUnknown(t, r, "timeout")
		if took := time.Since(start); took > 20*shortTimeout {
			t.Errorf("refund gave up after %v with a %v timeout", took, shortTimeout)
		}
		if apply {
			wantRefunded(t, s.settleRefund(t, b, req.RefundNo), orderNo, 2_500)
		} else {
			wantRefundNotFound(t, b, req.RefundNo)
			s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
			wantRefunded(t, s.refund(t, b, req), orderNo, 2_500)
		}
		s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, 2_500)
		s.wantBalance(t, a.CardNumber, defaultBalance-5_000+2_500)
	}
}

func (s *suite) testFaultRefundProcessing(t *testing.T) {
	b := s.adapter(t, nil)
	a, _, orderNo := s.paidAccount(t, b, 6_000)
	s.fault(t, Fault{Operation: "refund", Mode: FaultProcessing})
	req := s.refundReq(orderNo, 3_500)
	r, err := b.Refund(t.Context(), req)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	if r.Status != bankadapters.ChargeProcessing || r.Outcome != bankadapters.OutcomeProcessing {
		t.Fatalf("refund answered %s/%s (cause %v), want processing", r.Status, r.Outcome, r.Cause)
	}
	q := s.settleRefund(t, b, req.RefundNo)
	wantRefunded(t, q, orderNo, 3_500)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, 3_500)
	s.wantBalance(t, a.CardNumber, defaultBalance-6_000+3_500)
	if s.cb == nil {
		return
	}
	cb, err := s.cb.waitFor(t.Context(), noticeKey{bankadapters.NoticeRefund, req.RefundNo})
	if err != nil {
		t.Fatal(err)
	}
	wantRefunded(t, cb.notice.Refund, orderNo, 3_500)
	if cb.notice.Refund.BankTxnNo != q.BankTxnNo || cb.notice.Refund.FinishedAt.IsZero() {
		t.Errorf("refund callback: txn %q at %v; query says txn %q", cb.notice.Refund.BankTxnNo, cb.notice.Refund.FinishedAt, q.BankTxnNo)
	}
}

// testFaultRefundDecline injects one of a refund's own refusals: the bank
// records nothing, so a query finds no such refund.
func (s *suite) testFaultRefundDecline(reason string) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a, _, orderNo := s.paidAccount(t, b, 4_500)
		s.fault(t, Fault{Operation: "refund", Mode: FaultDecline, Code: reason})
		req := s.refundReq(orderNo, 4_500)
		r, err := b.Refund(t.Context(), req)
		if err != nil {
			t.Fatalf("refund: %v", err)
		}
		s.wantRefundRefused(t, r, reason)
		wantRefundNotFound(t, b, req.RefundNo)
		s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, defaultBalance-4_500)
	}
}

func (s *suite) testFaultRefundDropResponse(t *testing.T) {
	b := s.adapter(t, nil)
	a, _, orderNo := s.paidAccount(t, b, 7_000)
	s.fault(t, Fault{Operation: "refund", Mode: FaultDropResponse})
	req := s.refundReq(orderNo, 5_500)
	r, err := b.Refund(t.Context(), req)
	if err != nil {
		t.Fatalf("refund returned an error for an unanswered call: %v", err)
	}
	wantRefundUnknown(t, r)
	wantRefunded(t, s.settleRefund(t, b, req.RefundNo), orderNo, 5_500)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, 5_500)
	s.wantBalance(t, a.CardNumber, defaultBalance-7_000+5_500)
}
