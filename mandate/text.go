package mandate

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// smsLabel names a mandate to its member: its description, else its
// reference, made SMS-safe (rows may predate checkText).
func smsLabel(description, reference string) string {
	if description != "" {
		return smsText(description, MaxDescriptionLength)
	}
	return smsText(reference, MaxReferenceLength)
}

func amountText(m Mandate) string {
	var per string
	switch m.Schedule.Interval {
	case IntervalMonth:
		per = "每月"
	case IntervalWeek:
		per = "每周"
	default:
		panic(fmt.Sprintf("mandate: amount text of interval %q", m.Schedule.Interval))
	}
	switch m.AmountType {
	case AmountFixed:
		return per + yuan(m.Amount)
	case AmountVariable:
		return per + "不超过" + yuan(m.MaxAmount)
	default:
		panic(fmt.Sprintf("mandate: amount text of amount type %q", m.AmountType))
	}
}

func yuan(fen int64) string { return fmt.Sprintf("¥%d.%02d", fen/100, fen%100) }

// Merchant text that reaches a member's phone. A mandate's reference and
// description, and a charge's description, are put into the consent and
// pre-debit SMS, so they are checked on the way in: valid UTF-8, no
// control character (NUL, newline, tab, DEL, C1), no line or paragraph
// separator and no bidirectional override (which could reorder what the
// member reads), and at most these many characters. The caps keep the
// consent SMS (code, payee, label, amount, card, how to cancel) within
// three 67-character segments of a long Chinese SMS.
const (
	// MaxReferenceLength caps a mandate's reference (at least 1).
	MaxReferenceLength = 64
	// MaxDescriptionLength caps a mandate's or a charge's description.
	MaxDescriptionLength = 64
	// maxPayeeLength caps the merchant's name in an SMS; longer names are
	// cut (the name is the operator's, set at merchant creation).
	maxPayeeLength = 32
)

// checkText refuses s for field unless it is SMS-safe and has min to max
// characters. The message never repeats the value.
func checkText(field, s string, min, max int) error {
	if !utf8.ValidString(s) {
		return &FieldError{Field: field, Message: "must be UTF-8 text"}
	}
	if n := utf8.RuneCountInString(s); n < min || n > max {
		if min > 0 {
			return &FieldError{Field: field, Message: fmt.Sprintf("must be %d–%d characters", min, max)}
		}
		return &FieldError{Field: field, Message: fmt.Sprintf("must be at most %d characters", max)}
	}
	if strings.ContainsRune(s, 0) {
		return &FieldError{Field: field, Message: "must not contain a NUL character"}
	}
	if strings.IndexFunc(s, unsafeRune) >= 0 {
		return &FieldError{Field: field, Message: "must not contain control characters, line breaks or direction overrides"}
	}
	return nil
}

// unsafeRune: a rune that must not reach an SMS (see checkText).
func unsafeRune(r rune) bool {
	switch {
	case unicode.IsControl(r), r == '\u2028', r == '\u2029', r == '\u200e', r == '\u200f',
		r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069', r == utf8.RuneError:
		return true
	}
	return false
}

// smsText makes s safe for an SMS whatever it holds (rows written before
// checkText, a merchant's name): unsafe runes become spaces, runs of
// spaces one, and it is cut to max characters with an ellipsis.
func smsText(s string, max int) string {
	s = strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, ""), func(r rune) bool {
		return unsafeRune(r) || unicode.IsSpace(r)
	}), " ")
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max-1]) + "…"
	}
	return s
}

// noticeText is the pre-debit notice of n, to the card ending last4.
func noticeText(n notice, last4 string) string {
	return fmt.Sprintf("【quickpay】扣款提醒：%s将于%s从尾号%s的银行卡扣款%s。如有疑问请联系商户。",
		smsLabel(n.Description, n.reference), n.ChargeDate.Format(time.DateOnly), last4, yuan(n.Amount))
}
