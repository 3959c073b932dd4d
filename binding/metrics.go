package binding

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/internal/errs"
)

// OTPMetrics counts one-time codes sent and checked: the bank's codes of
// a binding and quickpay's consent codes of a mandate (package mandate
// counts its own through the same value).
//
//	quickpay_otp_sends_total{kind,outcome}          kind: bind_apply, bind_resend, consent, consent_resend
//	                                                outcome: sent, limited, refused, failed
//	quickpay_otp_verifications_total{kind,outcome}  kind: bind, consent
//	                                                outcome: ok, incorrect, expired, attempts_exceeded, failed
//
// A request refused before any code could be sent or checked (invalid
// input, not found, a state that takes no code) is not counted. A nil
// *OTPMetrics counts nothing.
type OTPMetrics struct {
	sends, verifications *prometheus.CounterVec
}

// Send kinds.
const (
	OTPKindBindApply     = "bind_apply"
	OTPKindBindResend    = "bind_resend"
	OTPKindConsent       = "consent"
	OTPKindConsentResend = "consent_resend"
)

// OTPKindBind is the verification kind of a binding's code; a mandate's
// consent code is OTPKindConsent, sent and checked.
const OTPKindBind = "bind"

// Send outcomes.
const (
	OTPSent    = "sent"    // the bank or the carrier was asked to text the code
	OTPLimited = "limited" // an abuse limit or the resend rules refused it
	OTPRefused = "refused" // the bank refused the card or its elements, or the session ended
	OTPFailed  = "failed"  // the bank or the carrier did not answer, or quickpay failed
)

// Verification outcomes.
const (
	OTPOK               = "ok"
	OTPIncorrect        = "incorrect"
	OTPExpired          = "expired"
	OTPAttemptsExceeded = "attempts_exceeded"
	// OTPFailed: the bank did not answer, or quickpay failed.
)

// NewOTPMetrics registers the counters on reg.
func NewOTPMetrics(reg prometheus.Registerer) (*OTPMetrics, error) {
	m := &OTPMetrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_otp_sends_total",
			Help: "One-time codes sent, or refused before sending, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_otp_verifications_total",
			Help: "One-time codes checked, by kind and outcome.",
		}, []string{"kind", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.sends, m.verifications} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Send counts a send of kind; an empty outcome counts nothing.
func (m *OTPMetrics) Send(kind, outcome string) {
	if m != nil && outcome != "" {
		m.sends.WithLabelValues(kind, outcome).Inc()
	}
}

// Verify counts a check of kind; an empty outcome counts nothing.
func (m *OTPMetrics) Verify(kind, outcome string) {
	if m != nil && outcome != "" {
		m.verifications.WithLabelValues(kind, outcome).Inc()
	}
}

// sent counts a bind apply or resend by what it returned: a binding
// waiting for its code was texted one; a binding answered otherwise
// without an error (a card bound already) was not.
func (m *OTPMetrics) sent(kind string, b Binding, err error) {
	if err == nil && b.Status != StatusOTPSent {
		return
	}
	m.Send(kind, SendOutcome(err))
}

// SendOutcome classifies what a send of a code returned (binding's errors
// and those binding and mandate share); "" for a request refused before
// any send could be tried.
func SendOutcome(err error) string {
	var mismatch *ElementsMismatchError
	var identity *IdentityMismatchError
	switch {
	case err == nil:
		return OTPSent
	case errors.Is(err, ErrRateLimited), errors.Is(err, errs.ErrResendTooSoon), errors.Is(err, errs.ErrResendLimit):
		return OTPLimited
	case errors.As(err, &mismatch), errors.As(err, &identity), errors.Is(err, ErrCardDeclined),
		errors.Is(err, ErrCardBoundElsewhere), errors.Is(err, errs.ErrOTPAttemptsExceeded), errors.Is(err, ErrBindingExpired):
		return OTPRefused
	case errors.Is(err, errs.ErrInvalid), errors.Is(err, ErrNotFound), errors.Is(err, ErrMemberExists),
		errors.Is(err, ErrCardUnsupported), errors.Is(err, ErrBindingNotPending):
		return ""
	default:
		// ErrBankUnavailable, a database or HSM failure.
		return OTPFailed
	}
}

// VerifyOutcome classifies what a check of a code returned; "" for a
// request refused before any check (invalid input, not found, a state
// that takes no code).
func VerifyOutcome(err error) string {
	switch {
	case err == nil:
		return OTPOK
	case errors.Is(err, errs.ErrOTPIncorrect):
		return OTPIncorrect
	case errors.Is(err, errs.ErrOTPAttemptsExceeded):
		return OTPAttemptsExceeded
	case errors.Is(err, ErrBindingExpired):
		return OTPExpired
	case errors.Is(err, errs.ErrInvalid), errors.Is(err, ErrNotFound), errors.Is(err, ErrBindingNotPending):
		return ""
	default:
		// ErrBankUnavailable, a refusal of the card at confirm, a database
		// or HSM failure.
		return OTPFailed
	}
}
