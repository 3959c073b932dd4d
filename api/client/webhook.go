package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a webhook delivery's signature.
const SignatureHeader = "Quickpay-Signature"

// DefaultTolerance is the clock difference VerifyWebhook accepts when given
// none: it bounds how long a captured delivery can be replayed to you.
const DefaultTolerance = 5 * time.Minute

// Errors returned by VerifyWebhook.
var (
	ErrSignatureMalformed = errors.New("client: malformed Quickpay-Signature header")
	ErrSignatureMismatch  = errors.New("client: no Quickpay-Signature matches the body")
	ErrSignatureExpired   = errors.New("client: Quickpay-Signature timestamp outside the tolerance")
)

// VerifyWebhook checks a delivery's Quickpay-Signature header,
//
//	t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// against its raw body (read it whole, before any JSON decoding), with the
// endpoint's secret (the whole whsec_… string) as the HMAC key. One v1 must
// match, compared in constant time, and t must lie within tolerance of now
// (≤ 0: DefaultTolerance). Keys other than t and v1 are ignored. Dedupe
// deliveries on the event's id: they come at least once.
//
// Errors: ErrSignatureMalformed, ErrSignatureMismatch, ErrSignatureExpired.
func VerifyWebhook(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureMalformed
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrSignatureMalformed
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil {
				return ErrSignatureMalformed
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrSignatureMalformed
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	matched := false
	for _, s := range sigs {
		matched = hmac.Equal(s, want) || matched
	}
	if !matched {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrSignatureExpired
	}
	return nil
}
