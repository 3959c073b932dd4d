package conformance

import (
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/sensitive"
)

func (s *suite) testBindHappy(cardType string) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a := s.newAccount(t, cardType, nil)
		sess, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
		if err != nil {
			t.Fatalf("bind_apply: %v", err)
		}
		if sess.BindRef == "" {
			t.Fatal("bind_apply gave no bind reference")
		}
		l := s.texts(t, a.Phone)
		if len(l) != 1 {
			t.Fatalf("%d texts after bind_apply, want 1", len(l))
		}
		if !strings.Contains(l[0].Text, s.info.Name) || !strings.Contains(l[0].Text, l[0].Code) {
			t.Errorf("the text does not carry the bank's name and the code")
		}
		ag, err := b.BindConfirm(t.Context(), sess.BindRef, sensitive.NewOTP(s.newestCode(t, a.Phone)))
		if err != nil {
			t.Fatalf("bind_confirm: %v", err)
		}
		if ag == "" {
			t.Fatal("bind_confirm gave no agreement number")
		}
		ags := s.state(t, a.CardNumber).Agreements
		if len(ags) != 1 || ags[0].AgreementNo != ag || ags[0].MerchantNo != s.h.MerchantNo || ags[0].Status != "active" {
			t.Fatalf("bank's agreements = %+v, want one active %s for merchant %s", ags, ag, s.h.MerchantNo)
		}
		// The agreement is usable.
		wantSucceeded(t, s.charge(t, b, s.chargeReq(ag, 100)), 100)
	}
}

// elementMismatch is one of the four elements (or a credit card's
// expiry/CVV2) given wrong.
type elementMismatch struct {
	name     string
	cardType string
	field    string
	edit     func(g *Gen, bank BankInfo, a Account, r *bankadapters.BindRequest)
}

var elementMismatches = []elementMismatch{
	{"holder name mismatch", "debit", bankadapters.FieldHolderName, func(_ *Gen, _ BankInfo, a Account, r *bankadapters.BindRequest) {
		r.HolderName = a.HolderName + "华"
	}},
	{"ID number mismatch", "debit", bankadapters.FieldIDNumber, func(g *Gen, _ BankInfo, _ Account, r *bankadapters.BindRequest) {
		r.IDNumber = sensitive.NewIDNumber(g.ResidentID())
	}},
	{"phone mismatch", "debit", bankadapters.FieldPhone, func(g *Gen, _ BankInfo, _ Account, r *bankadapters.BindRequest) {
		r.Phone = g.Phone()
	}},
	{"unknown card", "debit", bankadapters.FieldCardNumber, func(g *Gen, bank BankInfo, _ Account, r *bankadapters.BindRequest) {
		// A valid number of the bank's own BIN that it never issued.
		for _, bin := range bank.BINs {
			if bin.CardType == "debit" {
				r.CardNumber = sensitive.NewPAN(g.CardNumber(bin.Prefix, bin.Length))
			}
		}
	}},
	{"credit card expiry mismatch", "credit", bankadapters.FieldExpiry, func(_ *Gen, _ BankInfo, a Account, r *bankadapters.BindRequest) {
		mm := "01"
		if strings.HasPrefix(a.Expiry, "01") {
			mm = "02"
		}
		r.Expiry = sensitive.NewExpiry(mm + a.Expiry[2:])
	}},
	{"credit card CVV2 mismatch", "credit", bankadapters.FieldExpiry, func(_ *Gen, _ BankInfo, a Account, r *bankadapters.BindRequest) {
		r.CVV2 = sensitive.NewCVV2(wrongCode(a.CVV2).Reveal())
	}},
}

func (s *suite) testBindMismatch(m elementMismatch) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a := s.newAccount(t, m.cardType, nil)
		req := BindRequest(a, s.gen.OrderNo("BR"))
		m.edit(s.gen, s.info, a, &req)
		sess, err := b.BindApply(t.Context(), req)
		if err == nil {
			t.Fatalf("bind_apply with a %s succeeded (bind ref %q)", m.name, sess.BindRef)
		}
		be := s.wantError(t, err, bankadapters.OutcomeElementsMismatch)
		if be.Field != m.field {
			t.Errorf("mismatch names field %q, want %q", be.Field, m.field)
		}
		if be.Code == "" {
			t.Error("the error does not carry the bank's code")
		}
		s.wantTexts(t, 0, a.Phone, req.Phone)
		s.wantNoAgreement(t, a.CardNumber)
	}
}

func (s *suite) testBindRefusedStatus(status string) func(t *testing.T) {
	return func(t *testing.T) {
		b := s.adapter(t, nil)
		a := s.newAccount(t, "debit", func(a *Account) { a.Status = status })
		_, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
		s.wantError(t, err, bankadapters.OutcomeHardDecline)
		s.wantTexts(t, 0, a.Phone)
		s.wantNoAgreement(t, a.CardNumber)
	}
}

func (s *suite) testAlreadyBound(t *testing.T) {
	b := s.adapter(t, nil)
	a, ag := s.boundAccount(t, b, nil)
	_, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
	s.wantError(t, err, bankadapters.OutcomeAlreadyBound)
	s.wantTexts(t, 1, a.Phone) // the first binding's only
	if ags := s.state(t, a.CardNumber).Agreements; len(ags) != 1 || ags[0].AgreementNo != ag {
		t.Errorf("agreements = %+v, want only %s", ags, ag)
	}
}

// apply starts a binding of a and returns its reference and code.
func (s *suite) apply(t *testing.T, b bankadapters.Bank, a Account) (string, string) {
	t.Helper()
	sess, err := b.BindApply(t.Context(), BindRequest(a, s.gen.OrderNo("BR")))
	if err != nil {
		t.Fatalf("bind_apply: %v", err)
	}
	return sess.BindRef, s.newestCode(t, a.Phone)
}

func (s *suite) testOTPWrongThenRight(t *testing.T) {
	b := s.adapter(t, nil)
	a := s.newAccount(t, "debit", nil)
	ref, code := s.apply(t, b, a)
	_, err := b.BindConfirm(t.Context(), ref, wrongCode(code))
	s.wantError(t, err, bankadapters.OutcomeOTPWrong)
	s.wantNoAgreement(t, a.CardNumber)
	ag, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	if err != nil || ag == "" {
		t.Fatalf("right code after a wrong one: %q, %v", ag, err)
	}
}

func (s *suite) testOTPAttemptsExceeded(t *testing.T) {
	b := s.adapter(t, nil)
	a := s.newAccount(t, "debit", nil)
	ref, code := s.apply(t, b, a)
	for i := 1; i <= 4; i++ {
		_, err := b.BindConfirm(t.Context(), ref, wrongCode(code))
		s.wantError(t, err, bankadapters.OutcomeOTPWrong)
	}
	_, err := b.BindConfirm(t.Context(), ref, wrongCode(code))
	s.wantError(t, err, bankadapters.OutcomeOTPAttemptsExceeded)
	// The session is dead: the right code no longer binds.
	_, err = b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	s.wantError(t, err, bankadapters.OutcomeOTPAttemptsExceeded)
	s.wantNoAgreement(t, a.CardNumber)
}

func (s *suite) testOTPExpired(t *testing.T) {
	b := s.adapter(t, nil)
	a := s.newAccount(t, "debit", nil)
	ref, code := s.apply(t, b, a)
	s.advance(t, 6*time.Minute)
	_, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	s.wantError(t, err, bankadapters.OutcomeOTPExpired)
	s.wantNoAgreement(t, a.CardNumber)
}

func (s *suite) testResendReplaces(t *testing.T) {
	b := s.adapter(t, nil)
	a := s.newAccount(t, "debit", nil)
	ref, old := s.apply(t, b, a)
	fresh := old
	for i := 0; i < 3 && fresh == old; i++ { // a fresh code equals the old one 1 in 10⁶
		if err := b.BindResend(t.Context(), ref); err != nil {
			t.Fatalf("bind_resend: %v", err)
		}
		fresh = s.newestCode(t, a.Phone)
	}
	if fresh == old {
		t.Fatal("bind_resend sent the same code three times")
	}
	if n := len(s.texts(t, a.Phone)); n < 2 {
		t.Fatalf("%d texts after a resend, want at least 2", n)
	}
	_, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(old))
	s.wantError(t, err, bankadapters.OutcomeOTPWrong)
	ag, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(fresh))
	if err != nil || ag == "" {
		t.Fatalf("the resent code: %q, %v", ag, err)
	}
}

func (s *suite) testConfirmTwice(t *testing.T) {
	b := s.adapter(t, nil)
	a := s.newAccount(t, "debit", nil)
	ref, code := s.apply(t, b, a)
	ag, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	if err != nil {
		t.Fatalf("bind_confirm: %v", err)
	}
	// A platform that lost the answer confirms again with the same code
	// and learns the same agreement; no second one is made.
	again, err := b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	if err != nil || again != ag {
		t.Fatalf("a confirmed session confirmed again with its code: %q, %v; want the agreement %s", again, err, ag)
	}
	if ags := s.state(t, a.CardNumber).Agreements; len(ags) != 1 || ags[0].AgreementNo != ag {
		t.Errorf("agreements = %+v, want only %s", ags, ag)
	}
	// Another code learns nothing: the session is finished.
	other := "000000"
	if code == other {
		other = "000001"
	}
	_, err = b.BindConfirm(t.Context(), ref, sensitive.NewOTP(other))
	s.wantError(t, err, bankadapters.OutcomeOTPExpired)
	// Once the agreement has ended, the repeat answers nothing either.
	if err := b.Unbind(t.Context(), ag); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	_, err = b.BindConfirm(t.Context(), ref, sensitive.NewOTP(code))
	s.wantError(t, err, bankadapters.OutcomeOTPExpired)
}
