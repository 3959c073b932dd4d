package conformance

import (
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// Every case here arms a fault at the bank and runs alone (testCase.alone);
// Run clears the bank's faults after each.

func (s *suite) testFaultChargeError(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	s.fault(t, Fault{Operation: "charge", Mode: FaultError})
	req := s.chargeReq(ag, 1_500)
	r, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("charge returned an error for an unanswered call: %v", err)
	}
	wantUnknown(t, r, "503")
	wantOrderNotFound(t, b, req.OrderNo)
	s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
	s.wantBalance(t, a.CardNumber, defaultBalance)
}

// testFaultTimeout: the bank holds its answer until the adapter gives up;
// with apply it has debited first.
func (s *suite) testFaultTimeout(apply bool) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		short := s.adapter(t, func(o *bankadapters.CallOptions) { o.Timeout = shortTimeout })
		a, ag := s.boundAccount(t, b, nil)
		s.fault(t, Fault{Operation: "charge", Mode: FaultTimeout, Apply: apply})
		req := s.chargeReq(ag, 2_500)
		start := time.Now()
		r, err := short.Charge(t.Context(), req)
		if err != nil {
			t.Fatalf("charge returned an error for an unanswered call: %v", err)
		}
		wantUnknown(t, r, "timeout")
		if took := time.Since(start); took > 20*shortTimeout {
			t.Errorf("charge gave up after %v with a %v timeout", took, shortTimeout)
		}
		if apply {
			wantSucceeded(t, s.settle(t, b, req.OrderNo), 2_500)
			s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 2_500)
			s.wantBalance(t, a.CardNumber, defaultBalance-2_500)
			return
		}
		wantOrderNotFound(t, b, req.OrderNo)
		s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
		// The caller settles an unknown charge on the same order number.
		wantSucceeded(t, s.charge(t, b, req), 2_500)
		s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 2_500)
		s.wantBalance(t, a.CardNumber, defaultBalance-2_500)
	}
}

func (s *suite) testFaultProcessing(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	s.fault(t, Fault{Operation: "charge", Mode: FaultProcessing})
	req := s.chargeReq(ag, 3_500)
	r, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("charge: %v", err)
	}
	if r.Status != bankadapters.ChargeProcessing || r.Outcome != bankadapters.OutcomeProcessing {
		t.Fatalf("charge answered %s/%s (cause %v), want processing", r.Status, r.Outcome, r.Cause)
	}
	wantSucceeded(t, s.settle(t, b, req.OrderNo), 3_500)
	s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 3_500)
}

// faultDeclines are the declines injected on charge and the class each
// must come out as.
var faultDeclines = []struct {
	reason  string
	outcome bankadapters.Outcome
}{
	{"insufficient_funds", bankadapters.OutcomeRetryableDecline},
	{"daily_limit", bankadapters.OutcomeRetryableDecline},
	{"card_frozen", bankadapters.OutcomeHardDecline},
	{"agreement_invalid", bankadapters.OutcomeHardDecline},
	{"id_mismatch", bankadapters.OutcomeHardDecline}, // an elements mismatch (DESIGN.md, "Charging")
}

func (s *suite) testFaultDecline(reason string, outcome bankadapters.Outcome) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a, ag := s.boundAccount(t, b, nil)
		s.fault(t, Fault{Operation: "charge", Mode: FaultDecline, Code: reason})
		req := s.chargeReq(ag, 4_500)
		r, err := b.Charge(t.Context(), req)
		if err != nil {
			t.Fatalf("charge: %v", err)
		}
		wantFailed(t, r, outcome, s.code(reason))
		wantOrderNotFound(t, b, req.OrderNo)
		s.wantDebits(t, a.CardNumber, req.OrderNo, 0, 0)
		s.wantBalance(t, a.CardNumber, defaultBalance)
	}
}

func (s *suite) testFaultDropResponse(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	s.fault(t, Fault{Operation: "charge", Mode: FaultDropResponse})
	req := s.chargeReq(ag, 5_500)
	r, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("charge returned an error for an unanswered call: %v", err)
	}
	wantUnknown(t, r)
	wantSucceeded(t, s.settle(t, b, req.OrderNo), 5_500)
	s.wantDebits(t, a.CardNumber, req.OrderNo, 1, 5_500)
	s.wantBalance(t, a.CardNumber, defaultBalance-5_500)
}

func (s *suite) testFaultQueryError(t *testing.T) {
	b := s.adapter(t, func(o *bankadapters.CallOptions) { o.Retries = 2 })
	once := s.adapter(t, func(o *bankadapters.CallOptions) { o.Retries = -1 })
	_, ag := s.boundAccount(t, b, nil)
	req := s.chargeReq(ag, 6_500)
	wantSucceeded(t, s.charge(t, b, req), 6_500)

	// Without retries the fault shows: it does fire on query.
	s.fault(t, Fault{Operation: "query", Mode: FaultError})
	_, err := once.Query(t.Context(), req.OrderNo)
	s.wantError(t, err, bankadapters.OutcomeUnavailable)

	// With them, query is idempotent and the retry answers.
	s.fault(t, Fault{Operation: "query", Mode: FaultError})
	q, err := b.Query(t.Context(), req.OrderNo)
	if err != nil {
		t.Fatalf("query with a retry left: %v", err)
	}
	wantSucceeded(t, q, 6_500)
}

func (s *suite) testFaultBindApplyError(t *testing.T) {
	b := s.adapter(t, func(o *bankadapters.CallOptions) { o.Retries = 2 })
	a := s.newAccount(t, "debit", nil)
	s.fault(t, Fault{Operation: "bind_apply", Mode: FaultError})
	_, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
	s.wantError(t, err, bankadapters.OutcomeUnavailable)
	// A retry would have found the fault spent and texted a code.
	s.wantTexts(t, 0, a.Phone)
	s.wantNoAgreement(t, a.CardNumber)
	// The card was fine: the next attempt texts exactly one code.
	if _, err := Bind(t.Context(), b, s.sim, a, s.gen.OrderNo("BR")); err != nil {
		t.Fatalf("bind after the fault: %v", err)
	}
}
