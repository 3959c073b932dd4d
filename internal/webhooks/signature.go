package webhooks

import "github.com/quickpay/quickpay/internal/webhooks/signature"

// The delivery signature (package signature, shared with api/client).
const (
	// SignatureHeader carries a delivery's signature.
	SignatureHeader = signature.Header
	// DefaultTolerance is the clock difference Verify accepts when given
	// none: it bounds how long a captured delivery can be replayed.
	DefaultTolerance = signature.DefaultTolerance
)

// Errors returned by Verify.
var (
	ErrSignatureMalformed = signature.ErrMalformed
	ErrSignatureMismatch  = signature.ErrMismatch
	ErrSignatureExpired   = signature.ErrExpired
)

// Sign returns the Quickpay-Signature value for body sent at t
// (signature.Sign).
var Sign = signature.Sign

// Verify checks a Quickpay-Signature header against the raw body
// (signature.Verify).
var Verify = signature.Verify
