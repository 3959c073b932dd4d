// Package errs holds the errors that more than one layer raises alike: a
// refused input field, and the one-time-code rules' refusals, which binding
// (the bank's code) and mandate (the consent code) share. The API maps each
// to a status and code in its one table; none carries the refused value.
package errs

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalid is what every *FieldError matches.
var ErrInvalid = errors.New("invalid input")

// FieldError is invalid input, named by its API field
// ("schedule.day_of_month"). Its message says what is wanted and never
// repeats the value.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Is lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// ErrorFields implements the API's detail hook.
func (e *FieldError) ErrorFields() map[string]any { return map[string]any{"field": e.Field} }

// One-time-code refusals.
var (
	ErrOTPIncorrect        = errors.New("otp incorrect")
	ErrOTPAttemptsExceeded = errors.New("otp attempts exceeded")
	ErrResendTooSoon       = errors.New("otp resend too soon")
	ErrResendLimit         = errors.New("otp resend limit reached")
)

// OTPIncorrectError is ErrOTPIncorrect with the tries left.
type OTPIncorrectError struct{ AttemptsLeft int }

func (e *OTPIncorrectError) Error() string {
	return fmt.Sprintf("otp incorrect, %d attempts left", e.AttemptsLeft)
}

// Unwrap makes errors.Is(err, ErrOTPIncorrect) true.
func (e *OTPIncorrectError) Unwrap() error { return ErrOTPIncorrect }

// ErrorFields implements the API's detail hook.
func (e *OTPIncorrectError) ErrorFields() map[string]any {
	return map[string]any{"attempts_left": e.AttemptsLeft}
}

// ResendTooSoonError is ErrResendTooSoon with the time to wait.
type ResendTooSoonError struct{ RetryAfter time.Duration }

func (e *ResendTooSoonError) Error() string { return "otp resend too soon" }

// Unwrap makes errors.Is(err, ErrResendTooSoon) true.
func (e *ResendTooSoonError) Unwrap() error { return ErrResendTooSoon }

// ErrorFields implements the API's detail hook.
func (e *ResendTooSoonError) ErrorFields() map[string]any {
	return map[string]any{"retry_after": int((e.RetryAfter + time.Second - 1) / time.Second)}
}
