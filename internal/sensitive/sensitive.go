// Package sensitive holds the types for values that must never appear in
// logs, errors, panics or JSON: card numbers, ID numbers, CVV2, card expiry
// and one-time codes.
//
// Each type redacts itself in String, Format (every fmt verb), GoString,
// MarshalJSON, MarshalText and slog's LogValue. The clear value is reachable
// only through Reveal, so every use of it is explicit and greppable.
//
// The value sits behind a pointer: fmt prints a nested pointer as an address,
// so even a sensitive value in an unexported field of a struct printed with
// %+v shows no digits.
package sensitive

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
)

// Redacted is what every sensitive value prints as.
const Redacted = "[REDACTED]"

type secret struct{ v *string }

func newSecret(s string) secret { return secret{v: &s} }

// Reveal returns the clear value. Call it only where the value is used:
// encrypting, sending it to a bank, comparing it.
func (s secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether no value is set.
func (s secret) IsZero() bool { return s.v == nil || *s.v == "" }

func (secret) String() string                  { return Redacted }
func (secret) GoString() string                { return Redacted }
func (secret) Format(f fmt.State, _ rune)      { _, _ = f.Write([]byte(Redacted)) }
func (secret) LogValue() slog.Value            { return slog.StringValue(Redacted) }
func (secret) MarshalText() ([]byte, error)    { return []byte(Redacted), nil }
func (secret) MarshalJSON() ([]byte, error)    { return []byte(`"` + Redacted + `"`), nil }
func (s *secret) UnmarshalJSON(b []byte) error { return s.unmarshal(b) }
func (s *secret) unmarshal(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		// Never echo the input: it may be the very value we protect. A type
		// error lets encoding/json name the field.
		return &json.UnmarshalTypeError{Value: "non-string", Type: reflect.TypeFor[string]()}
	}
	*s = newSecret(v)
	return nil
}

// PAN is a primary account number (card number).
type PAN struct{ secret }

// NewPAN wraps a card number.
func NewPAN(s string) PAN { return PAN{newSecret(s)} }

// Last4 returns the last four digits, which may be shown.
func (p PAN) Last4() string {
	s := p.Reveal()
	if len(s) < 4 {
		return ""
	}
	return s[len(s)-4:]
}

// Masked returns the display form: first 6 and last 4 digits, the rest as
// '*' (PCI DSS 3.4.1 allows at most first 6 + last 4).
func (p PAN) Masked() string {
	s := p.Reveal()
	if len(s) < 13 {
		return Redacted
	}
	b := []byte(s)
	for i := 6; i < len(b)-4; i++ {
		b[i] = '*'
	}
	return string(b)
}

// IDNumber is a national ID (resident identity card) number.
type IDNumber struct{ secret }

// NewIDNumber wraps an ID number.
func NewIDNumber(s string) IDNumber { return IDNumber{newSecret(s)} }

// CVV2 is a card verification value. It is never stored.
type CVV2 struct{ secret }

// NewCVV2 wraps a CVV2.
func NewCVV2(s string) CVV2 { return CVV2{newSecret(s)} }

// Expiry is a card expiry date ("MMYY"). It is never stored.
type Expiry struct{ secret }

// NewExpiry wraps a card expiry.
func NewExpiry(s string) Expiry { return Expiry{newSecret(s)} }

// OTP is a one-time code, bank-sent or quickpay's own.
type OTP struct{ secret }

// NewOTP wraps a one-time code.
func NewOTP(s string) OTP { return OTP{newSecret(s)} }

// Access says who reads a sensitive value back in clear, and why. The vault
// writes it to the audit trail with every decryption.
type Access struct {
	MerchantID string // whose data; empty for platform data
	Actor      string // "worker:charge", "api:mch_…", "cli:ops-user", …
	Subject    string // the row: "card_…"
	Reason     string // "bank charge", "support lookup", …
}
