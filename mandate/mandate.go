package mandate

import (
	"errors"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/errs"
)

// MandateStatus is a mandate's state: pending_confirmation → active ⇄
// paused, → cancelled | expired | completed. The set is closed: the
// mandates table's CHECK mirrors it (migration 005).
type MandateStatus string

// Mandate states.
const (
	StatusPendingConfirmation MandateStatus = "pending_confirmation"
	StatusActive              MandateStatus = "active"
	StatusPaused              MandateStatus = "paused"
	StatusCancelled           MandateStatus = "cancelled"
	StatusExpired             MandateStatus = "expired"
	StatusCompleted           MandateStatus = "completed"
)

// AmountType says how a mandate's amount is set: fixed (the same each
// period) or variable (posted by the biller each period, up to a
// maximum). Mirrored by the mandates table's CHECK (migration 005).
type AmountType string

// Amount types.
const (
	AmountFixed    AmountType = "fixed"
	AmountVariable AmountType = "variable"
)

// ChargeStatus is a charge's state: scheduled → processing → succeeded |
// failed; processing → unknown → (query) → succeeded | failed; failed
// (retryable) → retry_scheduled → processing. Beyond DESIGN.md:
// processing | unknown → held, when the bank reports success for another
// amount than the one sent (its attempt is amount_mismatch): nothing is
// booked, retried or refunded until operators resolve it
// (docs/decisions.md). The set is closed: the charges table's CHECK
// mirrors it (migration 015).
type ChargeStatus string

// Charge states.
const (
	ChargeScheduled      ChargeStatus = "scheduled"
	ChargeProcessing     ChargeStatus = "processing"
	ChargeSucceeded      ChargeStatus = "succeeded"
	ChargeFailed         ChargeStatus = "failed"
	ChargeUnknown        ChargeStatus = "unknown"
	ChargeRetryScheduled ChargeStatus = "retry_scheduled"
	ChargeHeld           ChargeStatus = "held"
)

// AttemptStatus is a bank attempt's state, mirrored by the
// charge_attempts table's CHECK (migration 015).
type AttemptStatus string

// Attempt states.
const (
	AttemptProcessing AttemptStatus = "processing"
	AttemptUnknown    AttemptStatus = "unknown"
	AttemptSucceeded  AttemptStatus = "succeeded"
	AttemptFailed     AttemptStatus = "failed"
	// AttemptAmountMismatch: the bank answered success naming another
	// amount (kept in the attempt's bank_amount). Final, as succeeded and
	// failed are.
	AttemptAmountMismatch AttemptStatus = "amount_mismatch"
)

// Consent code rules: binding's, by definition (DESIGN.md: "the code rules
// match binding").
const (
	OTPValidity    = binding.OTPValidity
	OTPMaxAttempts = binding.OTPMaxAttempts
	OTPResendGap   = binding.OTPResendGap
	OTPMaxSends    = binding.OTPMaxSends
)

// Limits.
const (
	MaxAmount     int64 = 5_000_000_00 // ¥5,000,000 per charge
	MaxNoticeDays       = 30
	// CardFailuresPerDay is the banks' cap on failed debits per card per
	// day (Asia/Shanghai): quickpay never makes a 4th attempt that day.
	CardFailuresPerDay = 3
)

// DefaultRetryDays are the days after the charge date on which a charge
// declined for a retryable reason is tried again.
var DefaultRetryDays = []int{1, 3, 5}

// Mandate is a biller's standing order on one card.
type Mandate struct {
	ID          string
	MerchantID  string
	MemberID    string
	CardID      string
	Reference   string
	Description string
	AmountType  AmountType
	Amount      int64 // fixed
	MaxAmount   int64 // variable
	Currency    string
	Schedule    Schedule
	NoticeDays  int
	Status      MandateStatus
	// StatusReason says why a mandate is paused, cancelled, expired or
	// completed: "merchant", "card_unbound", "card_revoked" (the bank
	// answered agreement_invalid or card_closed), "card_frozen",
	// "order_conflict", "consent_expired", "consent_not_sent" (the
	// carrier refused the consent text), "otp_attempts_exceeded",
	// "end_date", "max_charges".
	StatusReason string
	// NextPeriod and NextChargeDate are the next period to charge; empty
	// once the mandate can charge no more.
	NextPeriod     string
	NextChargeDate time.Time
	ChargesCount   int
	OTPExpiresAt   time.Time
	OTPAttempts    int
	OTPSends       int
	OTPLastSentAt  time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// AttemptsLeft is how many wrong codes the consent still takes.
func (m Mandate) AttemptsLeft() int { return max(0, OTPMaxAttempts-m.OTPAttempts) }

// ResendAfter is the earliest time a resend is allowed.
func (m Mandate) ResendAfter() time.Time { return m.OTPLastSentAt.Add(OTPResendGap) }

// Charge is one period's debit of a mandate.
type Charge struct {
	ID          string
	MerchantID  string
	MandateID   string
	Period      string
	ChargeDate  time.Time
	Amount      int64
	Currency    string
	Description string
	Status      ChargeStatus
	// NextAttemptAt is when the charge will next be tried (scheduled,
	// retry_scheduled); zero otherwise.
	NextAttemptAt time.Time
	NoticeSentAt  time.Time
	Retries       int
	FailureCode   string
	BankReference string
	// AmountRefunded is the fen of the charge's succeeded refunds.
	AmountRefunded int64
	Attempts       []Attempt
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Attempt is one bank debit of a charge, under its own order number.
type Attempt struct {
	OrderNo     string
	BankCode    string
	Amount      int64
	Status      AttemptStatus
	FailureCode string
	CreatedAt   time.Time
	FinishedAt  time.Time
}

// Errors. The API maps each to a status and code in one table.
var (
	ErrNotFound            = errors.New("not found")
	ErrCardNotActive       = errors.New("card is not active")
	ErrInvalidState        = errors.New("mandate state does not allow this")
	ErrOTPIncorrect        = errs.ErrOTPIncorrect
	ErrOTPAttemptsExceeded = errs.ErrOTPAttemptsExceeded
	ErrConsentExpired      = errors.New("consent code expired")
	ErrResendTooSoon       = errs.ErrResendTooSoon
	ErrResendLimit         = errs.ErrResendLimit
	ErrAmountOverMax       = errors.New("amount over the mandate's max_amount")
	ErrNotVariable         = errors.New("mandate is not variable")
	ErrPeriodCharged       = errors.New("period already has a charge")
	ErrSMSUnavailable      = errors.New("sms carrier unavailable")
	ErrInvalid             = errs.ErrInvalid
)

// The one-time-code and input refusals are binding's too (internal/errs):
// one type each, whichever domain refuses.
type (
	FieldError         = errs.FieldError
	OTPIncorrectError  = errs.OTPIncorrectError
	ResendTooSoonError = errs.ResendTooSoonError
)

// MandateEvent is the data of a mandate.* event: the mandate as the API
// shows it, in brief (api/openapi.yaml, Event.data).
type MandateEvent struct {
	MandateID      string        `json:"mandate_id"`
	CardID         string        `json:"card_id"`
	MemberID       string        `json:"member_id"`
	Reference      string        `json:"reference"`
	Status         MandateStatus `json:"status"`
	StatusReason   *string       `json:"status_reason"`
	NextChargeDate *string       `json:"next_charge_date"` // YYYY-MM-DD
}

// ChargeEvent is the data of a charge.* event: the charge as the API
// shows it, without its attempts (api/openapi.yaml, Event.data).
type ChargeEvent struct {
	ChargeID      string       `json:"charge_id"`
	MandateID     string       `json:"mandate_id"`
	Period        string       `json:"period"`
	ChargeDate    string       `json:"charge_date"` // YYYY-MM-DD
	Amount        int64        `json:"amount"`
	Currency      string       `json:"currency"`
	Status        ChargeStatus `json:"status"`
	FailureCode   *string      `json:"failure_code"`
	NextAttemptAt *string      `json:"next_attempt_at"` // RFC 3339
	BankReference *string      `json:"bank_reference"`
}

func mandateEvent(m Mandate) MandateEvent {
	if m.Status == StatusPaused {
		m.NextChargeDate = time.Time{} // as Get shows it (view)
	}
	return MandateEvent{MandateID: m.ID, CardID: m.CardID, MemberID: m.MemberID, Reference: m.Reference,
		Status: m.Status, StatusReason: nullable(m.StatusReason), NextChargeDate: nullable(dateString(m.NextChargeDate))}
}

func chargeEvent(c Charge) ChargeEvent {
	return ChargeEvent{ChargeID: c.ID, MandateID: c.MandateID, Period: c.Period, ChargeDate: dateString(c.ChargeDate),
		Amount: c.Amount, Currency: c.Currency, Status: c.Status, FailureCode: nullable(c.FailureCode),
		NextAttemptAt: nullableTime(c.NextAttemptAt), BankReference: nullable(c.BankReference)}
}

func dateString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.DateOnly)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullableTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return nullable(t.UTC().Format(time.RFC3339))
}
