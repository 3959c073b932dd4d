package conformance

import (
	"strings"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
)

// A man in the middle (tamperProxy) alters bodies and keeps the
// signatures: the bank must refuse an altered request, the adapter an
// altered answer, and nothing may come out as a success.

func (s *suite) testTamperBindRequest(t *testing.T) {
	attacker := s.gen.OrderNo("EVIL")
	p := newTamperProxy(t, s.h.BaseURL, "bind_apply", func(body []byte) ([]byte, bool) {
		// A field the bank does not match against: only the signature
		// can tell.
		return s.h.Dialect.SetField(body, "request_no", attacker, false)
	}, nil)
	b := s.adapterAt(t, p.URL, nil)
	a := s.newAccount(t, "debit", nil)
	sess, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
	if p.requests.Load() != 1 {
		t.Fatalf("the proxy altered %d requests, want 1", p.requests.Load())
	}
	if err == nil {
		t.Fatalf("altered bind_apply succeeded (bind ref %q)", sess.BindRef)
	}
	if o := bankadapters.OutcomeOf(err); o == bankadapters.OutcomeSuccess {
		t.Fatalf("altered bind_apply: outcome %s", o)
	}
	s.wantTexts(t, 0, a.Phone)
	s.wantNoAgreement(t, a.CardNumber)
}

func (s *suite) testTamperChargeRequest(t *testing.T) {
	const amount = 7_731
	p := newTamperProxy(t, s.h.BaseURL, "charge", func(body []byte) ([]byte, bool) {
		return s.h.Dialect.SetField(body, "amount", "77310", true)
	}, nil)
	clean := s.adapter(t, nil)
	b := s.adapterAt(t, p.URL, nil)
	a, ag := s.boundAccount(t, clean, nil)
	req := s.chargeReq(ag, amount)
	r, err := b.Charge(t.Context(), req)
	if p.requests.Load() != 1 {
		t.Fatalf("the proxy altered %d requests, want 1", p.requests.Load())
	}
	if err == nil && (r.Status == bankadapters.ChargeSucceeded || r.Outcome == bankadapters.OutcomeSuccess) {
		t.Fatalf("altered charge came out %s/%s", r.Status, r.Outcome)
	}
	wantOrderNotFound(t, clean, req.OrderNo)
	s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance)
}

func (s *suite) testTamperBindAnswer(t *testing.T) {
	p := newTamperProxy(t, s.h.BaseURL, "bind_apply", nil, func(body []byte) ([]byte, bool) {
		return s.h.Dialect.SetField(body, "bind_ref", s.gen.OrderNo("EVIL"), false)
	})
	b := s.adapterAt(t, p.URL, nil)
	a := s.newAccount(t, "debit", nil)
	sess, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
	if p.answers.Load() != 1 {
		t.Fatalf("the proxy altered %d answers, want 1", p.answers.Load())
	}
	if err == nil {
		t.Fatalf("altered bind_apply answer accepted (bind ref %q)", sess.BindRef)
	}
	s.wantError(t, err, bankadapters.OutcomeUnavailable)
	if !strings.Contains(strings.ToLower(err.Error()), "signature") {
		t.Errorf("error %q does not name the signature", err)
	}
}

// testTamperChargeAnswer forges the answer to a charge: to a success for a
// charge the bank declined, or (made) to a decline for a debit it made.
func (s *suite) testTamperChargeAnswer(made bool) func(t *testing.T) {
	return func(t *testing.T) {
		forge := s.h.Dialect.forgeCharge("SUCCESS", "success")
		balance, amount := int64(1_000), int64(5_000) // declined
		if made {
			forge = s.h.Dialect.forgeCharge("FAILED", "insufficient_funds")
			balance, amount = defaultBalance, 5_000
		}
		p := newTamperProxy(t, s.h.BaseURL, "charge", nil, forge)
		clean := s.adapter(t, nil)
		b := s.adapterAt(t, p.URL, nil)
		a, ag := s.boundAccount(t, clean, func(a *Account) { a.Balance = balance })
		req := s.chargeReq(ag, amount)
		r, err := b.Charge(t.Context(), req)
		if err != nil {
			t.Fatalf("charge: %v", err)
		}
		if p.answers.Load() != 1 {
			t.Fatalf("the proxy altered %d answers, want 1", p.answers.Load())
		}
		wantUnknown(t, r, "signature")

		// The truth, through a clean channel.
		q := s.settle(t, clean, req.OrderNo)
		if made {
			wantSucceeded(t, q, amount)
			s.wantDebits(t, a.CardNumber, req.OrderNo, 1, amount)
			s.wantBalance(t, a.CardNumber, balance-amount)
			return
		}
		wantFailed(t, q, bankadapters.OutcomeRetryableDecline, s.code("insufficient_funds"))
		s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, balance)
	}
}

// testReplayedAnswer answers a charge with the genuine, signed answer of
// an earlier charge: the signature verifies, and only the order number
// in it tells the answer is not this charge's.
func (s *suite) testReplayedAnswer(t *testing.T) {
	p := newReplayProxy(t, s.h.BaseURL, "charge", "charge")
	clean := s.adapter(t, nil)
	b := s.adapterAt(t, p.URL, nil)
	a, ag := s.boundAccount(t, clean, func(a *Account) { a.Balance = 1_000 })
	first := s.chargeReq(ag, 100)
	r, err := b.Charge(t.Context(), first)
	if err != nil || r.Status == bankadapters.ChargeUnknown {
		t.Fatalf("first charge through the proxy: %s, %v (cause %v)", r.Status, err, r.Cause)
	}
	second := s.chargeReq(ag, 5_000) // the bank declines it
	r, err = b.Charge(t.Context(), second)
	if err != nil {
		t.Fatalf("charge: %v", err)
	}
	if p.answers.Load() != 1 {
		t.Fatalf("the proxy replayed %d answers, want 1", p.answers.Load())
	}
	wantUnknown(t, r)
	wantFailed(t, s.settle(t, clean, second.OrderNo), bankadapters.OutcomeRetryableDecline, s.code("insufficient_funds"))
	s.wantDebits(t, a.CardNumber, second.OrderNo, 0, 0)
}

// testReplayedOtherOperation answers a charge the bank made with the
// genuine, signed answer of another operation: a bind_apply refused for a
// holder name mismatch. It names no order, and must not pass for this
// charge's decline.
func (s *suite) testReplayedOtherOperation(t *testing.T) {
	p := newReplayProxy(t, s.h.BaseURL, "bind_apply", "charge")
	clean := s.adapter(t, nil)
	b := s.adapterAt(t, p.URL, nil)
	a, ag := s.boundAccount(t, clean, nil)
	stranger := s.newAccount(t, "debit", nil)
	req := BindRequest(stranger, s.gen.OrderNo("BR"))
	req.HolderName += "华"
	_, err := b.BindApply(t.Context(), req)
	s.wantError(t, err, bankadapters.OutcomeElementsMismatch) // the answer the proxy keeps

	charge := s.chargeReq(ag, 3_000)
	r, err := b.Charge(t.Context(), charge)
	if err != nil {
		t.Fatalf("charge: %v", err)
	}
	if p.answers.Load() != 1 {
		t.Fatalf("the proxy replayed %d answers, want 1", p.answers.Load())
	}
	wantUnknown(t, r)
	wantSucceeded(t, s.settle(t, clean, charge.OrderNo), 3_000)
	s.wantDebits(t, a.CardNumber, charge.OrderNo, 1, 3_000)
}
