package client

import (
	"time"

	"github.com/quickpay/quickpay/internal/webhooks/signature"
)

// SignatureHeader carries a webhook delivery's signature.
const SignatureHeader = signature.Header

// DefaultTolerance is the clock difference VerifyWebhook accepts when given
// none: it bounds how long a captured delivery can be replayed to you.
const DefaultTolerance = signature.DefaultTolerance

// Errors returned by VerifyWebhook.
var (
	ErrSignatureMalformed = signature.ErrMalformed
	ErrSignatureMismatch  = signature.ErrMismatch
	ErrSignatureExpired   = signature.ErrExpired
)

// VerifyWebhook checks a delivery's Quickpay-Signature header,
//
//	t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// against its raw body (read it whole, before any JSON decoding), with the
// endpoint's secret (the whole whsec_… string) as the HMAC key. One v1 must
// match, compared in constant time, and t must lie within tolerance of now
// (≤ 0: DefaultTolerance). Keys other than t and v1 are ignored. Dedupe
// deliveries on the event's id: they come at least once. It is the check
// quickpay's own tests make of its deliveries (package signature).
//
// Errors: ErrSignatureMalformed, ErrSignatureMismatch, ErrSignatureExpired.
func VerifyWebhook(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	return signature.Verify(secret, header, body, now, tolerance)
}
