package binding

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/quickpay/quickpay/internal/errs"
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

// Status is a binding's state: otp_sent → bound | failed | expired, the
// set the bindings.status CHECK holds.
type Status string

// Binding states.
const (
	StatusOTPSent Status = "otp_sent"
	StatusBound   Status = "bound"
	StatusFailed  Status = "failed"
	StatusExpired Status = "expired"
)

// Check returns an error for a value outside the set.
func (s Status) Check() error {
	switch s {
	case StatusOTPSent, StatusBound, StatusFailed, StatusExpired:
		return nil
	default:
		return fmt.Errorf("binding: unknown binding status %q", string(s))
	}
}

// CardStatus is a card's state: active → unbound | revoked, the set the
// cards.status CHECK holds.
type CardStatus string

// Card states.
const (
	CardActive  CardStatus = "active"
	CardUnbound CardStatus = "unbound"
	CardRevoked CardStatus = "revoked"
)

// Check returns an error for a value outside the set.
func (s CardStatus) Check() error {
	switch s {
	case CardActive, CardUnbound, CardRevoked:
		return nil
	default:
		return fmt.Errorf("binding: unknown card status %q", string(s))
	}
}

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
	Status         Status
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
	Status     CardStatus
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

// AAD builders: each ciphertext is bound to its table, merchant, row and
// field, so a ciphertext moved to another row does not decrypt.

// BindingAAD is the AAD of a binding's field (pan, holder_name, id_number, phone).
func BindingAAD(merchantID, bindingID, field string) []byte {
	return []byte("binding|" + merchantID + "|" + bindingID + "|" + field)
}

// MemberAAD is the AAD of a member's field (name, id_number, phone).
func MemberAAD(merchantID, memberID, field string) []byte {
	return []byte("member|" + merchantID + "|" + memberID + "|" + field)
}

// CardAgreementAAD is the AAD of a card's agreement number.
func CardAgreementAAD(merchantID, cardID string) []byte {
	return []byte("card|" + merchantID + "|" + cardID + "|agreement")
}

// Fingerprint domains of identity fields.
const (
	DomainPAN      = "pan"
	DomainName     = "name"
	DomainIDNumber = "id_number"
)

func normName(s string) string       { return strings.Join(strings.Fields(s), " ") }
func normID(s string) string         { return strings.ToUpper(s) }
func actor(merchantID string) string { return "api:" + merchantID }
