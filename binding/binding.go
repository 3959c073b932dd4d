// Package binding holds members (explicit and implicit), four-element card
// binding confirmed by the bank's SMS code, and cards, with their Postgres
// store.
//
// A binding starts with the four elements (holder name, ID number, card
// number, phone reserved at the bank). quickpay validates them, routes the
// card by BIN, tokenizes the card number at once, and asks the bank to text
// a code. The user's code confirms the binding at the bank, which returns an
// agreement number; the card is created, stored encrypted, and the member is
// created if the binding was implicit. CVV2 and expiry go to the bank and are
// never stored.
//
// OTP rules quickpay enforces itself: a code is valid 5 minutes; 5 wrong
// tries end the binding; resends are at least 60 s apart and at most 5 sends
// in all. Every send, try and result is audited.
package binding

import (
	"errors"
	"github.com/quickpay/quickpay/internal/errs"
	"time"
)

// OTP rules.
const (
	OTPValidity    = 5 * time.Minute
	OTPMaxAttempts = 5
	OTPResendGap   = 60 * time.Second
	OTPMaxSends    = 5
)

// Member kinds.
const (
	KindExplicit = "explicit"
	KindImplicit = "implicit"
)

// Binding states: otp_sent → bound | failed | expired.
const (
	StatusOTPSent = "otp_sent"
	StatusBound   = "bound"
	StatusFailed  = "failed"
	StatusExpired = "expired"
)

// Card states: active → unbound | revoked.
const (
	CardActive  = "active"
	CardUnbound = "unbound"
	CardRevoked = "revoked"
)

// Member is a payment-platform member of one merchant.
type Member struct {
	ID         string
	MerchantID string
	ExternalID string
	Kind       string
	CreatedAt  time.Time
}

// CardInfo is what may be shown of a card.
type CardInfo struct {
	BankCode  string
	BankName  string
	CardType  string
	MaskedPAN string
	Last4     string
}

// Binding is one attempt to bind a card.
type Binding struct {
	ID             string
	MerchantID     string
	MemberID       string // empty for an implicit binding until it is bound
	ExternalUserID string
	Status         string
	Card           CardInfo
	CardID         string
	OTPExpiresAt   time.Time
	OTPAttempts    int
	OTPSends       int
	OTPLastSentAt  time.Time
	FailureCode    string
	CreatedAt      time.Time
	// Existing is set when the card was already bound to this member: no
	// bank call was made and CardID is the existing card.
	Existing bool
}

// AttemptsLeft is how many wrong codes the binding still takes.
func (b Binding) AttemptsLeft() int { return max(0, OTPMaxAttempts-b.OTPAttempts) }

// ResendAfter is the earliest time a resend is allowed.
func (b Binding) ResendAfter() time.Time { return b.OTPLastSentAt.Add(OTPResendGap) }

// Card is a bound card.
type Card struct {
	ID         string
	MerchantID string
	MemberID   string
	Status     string
	CardInfo
	CreatedAt time.Time
}

// Errors. The API maps each to a status and code in one table.
var (
	ErrNotFound            = errors.New("not found")
	ErrMemberExists        = errors.New("a member with this external id exists")
	ErrCardUnsupported     = errors.New("card not supported")
	ErrCardBoundElsewhere  = errors.New("card is bound to another member")
	ErrBankUnavailable     = errors.New("bank unavailable")
	ErrOTPIncorrect        = errs.ErrOTPIncorrect
	ErrOTPAttemptsExceeded = errs.ErrOTPAttemptsExceeded
	ErrBindingExpired      = errors.New("binding expired")
	ErrResendTooSoon       = errs.ErrResendTooSoon
	ErrResendLimit         = errs.ErrResendLimit
	ErrBindingNotPending   = errors.New("binding is not waiting for a code")
	ErrCardDeclined        = errors.New("the bank refused the card")
)

// ElementsMismatchError: the bank refused one of the four elements.
type ElementsMismatchError struct{ Field string }

func (e *ElementsMismatchError) Error() string { return "elements mismatch: " + e.Field }

// ErrorFields implements the API's detail hook.
func (e *ElementsMismatchError) ErrorFields() map[string]any { return map[string]any{"field": e.Field} }

// IdentityMismatchError: the binding's holder or ID differs from the
// member's identity.
type IdentityMismatchError struct{ Field string }

func (e *IdentityMismatchError) Error() string { return "identity mismatch: " + e.Field }

// ErrorFields implements the API's detail hook.
func (e *IdentityMismatchError) ErrorFields() map[string]any { return map[string]any{"field": e.Field} }

// The one-time-code and input refusals are the ones mandate raises too
// (internal/errs): one type each, whichever domain refuses.
type (
	OTPIncorrectError  = errs.OTPIncorrectError
	ResendTooSoonError = errs.ResendTooSoonError
	FieldError         = errs.FieldError
)

// ErrInvalid is what every *FieldError matches.
var ErrInvalid = errs.ErrInvalid

// Sentinels for the elements and identity errors, for the API table.
var (
	ErrElementsMismatch = errors.New("elements mismatch")
	ErrIdentityMismatch = errors.New("identity mismatch")
)

// Is lets errors.Is match the sentinel.
func (e *ElementsMismatchError) Is(target error) bool { return target == ErrElementsMismatch }

// Is lets errors.Is match the sentinel.
func (e *IdentityMismatchError) Is(target error) bool { return target == ErrIdentityMismatch }
