package conformance

import (
	"bytes"
	"errors"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// Refunds in transit, their callbacks and the bank's agreement notices,
// altered, replayed or late: none may come out as a result.

func (s *suite) testTamperRefundRequest(t *testing.T) {
	p := newTamperProxy(t, s.h.BaseURL, "refund", func(body []byte) ([]byte, bool) {
		return s.h.Dialect.SetField(body, "amount", "3999", true)
	}, nil)
	clean := s.adapter(t, nil)
	b := s.adapterAt(t, p.URL, nil)
	a, _, orderNo := s.paidAccount(t, clean, 4_000)
	req := s.refundReq(orderNo, 1_000)
	r, err := b.Refund(t.Context(), req)
	if p.requests.Load() != 1 {
		t.Fatalf("the proxy altered %d requests, want 1", p.requests.Load())
	}
	if err == nil && (r.Status == bankadapters.ChargeSucceeded || r.Outcome == bankadapters.OutcomeSuccess) {
		t.Fatalf("altered refund came out %s/%s", r.Status, r.Outcome)
	}
	wantRefundNotFound(t, clean, req.RefundNo)
	s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance-4_000)
}

// testTamperRefundAnswer forges the answer to a refund: to a success for a
// refund the bank refused, or (made) to a refusal for a refund it made.
func (s *suite) testTamperRefundAnswer(made bool) func(t *testing.T) {
	return func(t *testing.T) {
		const debit = 3_000
		forge, amount := s.h.Dialect.forgeCharge("SUCCESS", "success"), int64(debit+1) // refused: exceeds
		if made {
			forge, amount = s.h.Dialect.forgeCharge("FAILED", "refund_exceeds"), debit
		}
		p := newTamperProxy(t, s.h.BaseURL, "refund", nil, forge)
		clean := s.adapter(t, nil)
		b := s.adapterAt(t, p.URL, nil)
		a, _, orderNo := s.paidAccount(t, clean, debit)
		req := s.refundReq(orderNo, amount)
		r, err := b.Refund(t.Context(), req)
		if err != nil {
			t.Fatalf("refund: %v", err)
		}
		if p.answers.Load() != 1 {
			t.Fatalf("the proxy altered %d answers, want 1", p.answers.Load())
		}
		wantRefundUnknown(t, r, "signature")

		// The truth, through a clean channel.
		q := s.settleRefund(t, clean, req.RefundNo)
		if made {
			wantRefunded(t, q, orderNo, amount)
			s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 1, amount)
			s.wantBalance(t, a.CardNumber, defaultBalance)
			return
		}
		s.wantRefundRefused(t, q, "refund_exceeds")
		s.wantCredits(t, a.CardNumber, req.RefundNo, orderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, defaultBalance-debit)
	}
}

// testReplayedRefundAnswer answers a refund with the genuine, signed
// answer of an earlier refund: only the refund number in it tells.
func (s *suite) testReplayedRefundAnswer(t *testing.T) {
	p := newReplayProxy(t, s.h.BaseURL, "refund", "refund")
	clean := s.adapter(t, nil)
	b := s.adapterAt(t, p.URL, nil)
	a, _, orderNo := s.paidAccount(t, clean, 2_000)
	first := s.refundReq(orderNo, 500)
	r, err := b.Refund(t.Context(), first)
	if err != nil || r.Status == bankadapters.ChargeUnknown {
		t.Fatalf("first refund through the proxy: %s, %v (cause %v)", r.Status, err, r.Cause)
	}
	second := s.refundReq(orderNo, 5_000) // the bank refuses it: exceeds
	r, err = b.Refund(t.Context(), second)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	if p.answers.Load() != 1 {
		t.Fatalf("the proxy replayed %d answers, want 1", p.answers.Load())
	}
	wantRefundUnknown(t, r)
	s.wantRefundRefused(t, s.settleRefund(t, clean, second.RefundNo), "refund_exceeds")
	s.wantCredits(t, a.CardNumber, second.RefundNo, orderNo, 0, 0)
}

// testRefundCallbackTampered takes a genuine refund callback (a sync bank
// sends one under a processing fault) and alters it.
func (s *suite) testRefundCallbackTampered(t *testing.T) {
	b := s.adapter(t, nil)
	_, _, orderNo := s.paidAccount(t, b, 2_000)
	if !s.h.Async {
		s.fault(t, Fault{Operation: "refund", Mode: FaultProcessing})
	}
	req := s.refundReq(orderNo, 800)
	if _, err := b.Refund(t.Context(), req); err != nil {
		t.Fatalf("refund: %v", err)
	}
	cb, err := s.cb.waitFor(t.Context(), noticeKey{bankadapters.NoticeRefund, req.RefundNo})
	if err != nil {
		t.Fatal(err)
	}
	parser := b.(bankadapters.CallbackParser)
	// The genuine one parses again (the check can pass)…
	if n, err := parser.ParseCallback(cb.header, cb.body); err != nil || n.Kind != bankadapters.NoticeRefund ||
		n.Refund.Status != bankadapters.ChargeSucceeded || n.Refund.OrderNo != orderNo {
		t.Fatalf("genuine refund callback: %s %s of %q, %v", n.Kind, n.Refund.Status, n.Refund.OrderNo, err)
	}
	s.wantNoticeRefused(t, parser, cb, map[string]string{"amount": "80000", "status": "FAILED", "type": "debit", "refund_of": s.gen.OrderNo("EVIL")})
}

func (s *suite) testAgreementTerminated(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	cb, before, after := s.terminate(t, a, ag)
	at := cb.notice.At
	if at.Before(before.Add(-time.Second)) || at.After(after.Add(time.Second)) {
		t.Errorf("notice says the agreement ended at %v, the bank's clock read %v then %v", at, before, after)
	}
	ags := s.state(t, a.CardNumber).Agreements
	if len(ags) != 1 || ags[0].AgreementNo != ag || ags[0].Status == "active" {
		t.Errorf("agreements after the cardholder ended one = %+v, want %s terminated", ags, ag)
	}
	req := s.chargeReq(ag, 100)
	wantFailed(t, s.charge(t, b, req), bankadapters.OutcomeHardDecline, s.code("agreement_invalid"))
	s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
	// Nothing live is left to end.
	again, err := s.sim.TerminateAgreement(t.Context(), a.CardNumber, s.h.MerchantNo)
	if err != nil || len(again) != 0 {
		t.Errorf("ending the card's agreements again = %+v, %v; want none", again, err)
	}
}

func (s *suite) testAgreementNoticeTampered(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	cb, _, _ := s.terminate(t, a, ag)
	parser := b.(bankadapters.CallbackParser)
	if n, err := parser.ParseCallback(cb.header, cb.body); err != nil || n.Kind != bankadapters.NoticeAgreementTerminated || n.AgreementNo != ag {
		t.Fatalf("genuine agreement notice: %s %q, %v", n.Kind, n.AgreementNo, err)
	}
	s.wantNoticeRefused(t, parser, cb, map[string]string{
		"agreement_no": s.gen.OrderNo("AG"), "at": "2020-01-01T00:00:00+08:00", "type": "debit",
	})
}

// terminate ends agreement ag of a's card as its holder would at the bank
// and returns the verified notice the bank sent, with the bank's clock
// before and after.
func (s *suite) terminate(t *testing.T, a Account, ag string) (receivedCallback, time.Time, time.Time) {
	t.Helper()
	before, err := s.sim.Clock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ended, err := s.sim.TerminateAgreement(t.Context(), a.CardNumber, s.h.MerchantNo)
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.sim.Clock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != 1 || ended[0].AgreementNo != ag || ended[0].BankCode != s.h.BankCode || ended[0].MerchantNo != s.h.MerchantNo {
		t.Fatalf("the bank ended %+v, want agreement %s of %s at %s", ended, ag, s.h.MerchantNo, s.h.BankCode)
	}
	cb, err := s.cb.waitFor(t.Context(), noticeKey{bankadapters.NoticeAgreementTerminated, ag})
	if err != nil {
		t.Fatal(err)
	}
	return cb, before, after
}

// wantNoticeRefused fails unless parser refuses the genuine callback cb
// with any one of edits applied, without its signature, and when its
// timestamp is more than bankadapters.CallbackWindow from the adapter's
// clock either way (a replay).
func (s *suite) wantNoticeRefused(t *testing.T, parser bankadapters.CallbackParser, cb receivedCallback, edits map[string]string) {
	t.Helper()
	for _, k := range sortedKeys(edits) {
		forged, changed := s.h.Dialect.SetField(cb.body, k, edits[k], k == "amount")
		if !changed {
			t.Fatalf("could not alter the notice's %s", k)
		}
		if n, err := parser.ParseCallback(cb.header, forged); err == nil {
			t.Errorf("notice with %s altered accepted as %s", k, n.Kind)
		}
	}
	h, body := s.h.Dialect.Unsign(cb.header.Clone(), bytes.Clone(cb.body))
	if bytes.Equal(body, cb.body) && maps.EqualFunc(h, cb.header, slices.Equal[[]string]) {
		t.Fatal("the harness's Dialect.Unsign changed nothing")
	}
	if n, err := parser.ParseCallback(h, body); err == nil {
		t.Errorf("unsigned notice accepted as %s", n.Kind)
	}
	for _, skew := range []time.Duration{bankadapters.CallbackWindow + 5*time.Second, -bankadapters.CallbackWindow - 5*time.Second} {
		late := s.adapter(t, func(o *bankadapters.CallOptions) {
			o.Now = func() time.Time { return time.Now().Add(skew) }
		}).(bankadapters.CallbackParser)
		n, err := late.ParseCallback(http.Header(cb.header).Clone(), bytes.Clone(cb.body))
		if !errors.Is(err, bankadapters.ErrStaleCallback) {
			t.Errorf("notice parsed %v from its timestamp: %s, %v; want ErrStaleCallback", skew, n.Kind, err)
		}
	}
}
