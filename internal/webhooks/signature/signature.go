// Package signature signs and verifies webhook deliveries'
// Quickpay-Signature header. It is a leaf (the standard library only), so
// that quickpay's sender (internal/webhooks) and the Go client merchants
// import (api/client) share one implementation.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Header carries a webhook delivery's signature.
const Header = "Quickpay-Signature"

// DefaultTolerance is the clock difference Verify accepts when given none:
// it bounds how long a captured delivery can be replayed to a receiver.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify.
var (
	ErrMalformed = errors.New("malformed Quickpay-Signature header")
	ErrMismatch  = errors.New("no Quickpay-Signature matches the body")
	ErrExpired   = errors.New("Quickpay-Signature timestamp outside the tolerance")
)

// Sign returns the Quickpay-Signature value for body sent at t:
//
//	t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// The HMAC key is the whole secret string (whsec_… included), as bytes.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a Quickpay-Signature header against the raw body, as a
// receiver should:
//
//  1. split the header on "," into key=value pairs; take t and every v1
//     (other keys are ignored, for future schemes);
//  2. compute hex HMAC-SHA256 with the secret as key over "<t>.<raw body>";
//  3. compare it in constant time with each v1; one must match;
//  4. refuse a t further than tolerance from now (≤ 0: DefaultTolerance).
//
// Errors: ErrMalformed, ErrMismatch, ErrExpired.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformed
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrMalformed
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil {
				return ErrMalformed
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrMalformed
	}
	want := mac(secret, ts, body)
	matched := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			matched = true
		}
	}
	if !matched {
		return ErrMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrExpired
	}
	return nil
}
