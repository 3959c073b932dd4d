package binding

import (
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ValidPAN checks a card number: 13–19 digits passing Luhn.
func ValidPAN(s string) bool {
	if len(s) < 13 || len(s) > 19 {
		return false
	}
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		d := int(c - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// provinces are the first two digits of a resident ID: GB/T 2260 province
// codes, plus 71 (Taiwan), 81 and 82 (Hong Kong, Macao) which the MPS uses.
var provinces = map[string]bool{
	"11": true, "12": true, "13": true, "14": true, "15": true,
	"21": true, "22": true, "23": true,
	"31": true, "32": true, "33": true, "34": true, "35": true, "36": true, "37": true,
	"41": true, "42": true, "43": true, "44": true, "45": true, "46": true,
	"50": true, "51": true, "52": true, "53": true, "54": true,
	"61": true, "62": true, "63": true, "64": true, "65": true,
	"71": true, "81": true, "82": true,
}

var idWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

// ValidResidentID checks an 18-character resident ID: a known province, a
// birth date between 1900 and today, and the GB 11643 check character.
func ValidResidentID(s string, today time.Time) bool {
	if len(s) != 18 {
		return false
	}
	s = strings.ToUpper(s)
	sum := 0
	for i := 0; i < 17; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		sum += int(s[i]-'0') * idWeights[i]
	}
	if "10X98765432"[sum%11] != s[17] {
		return false
	}
	if !provinces[s[:2]] {
		return false
	}
	birth, err := time.Parse("20060102", s[6:14])
	if err != nil {
		return false
	}
	return birth.Year() >= 1900 && !birth.After(today)
}

var mobileRE = regexp.MustCompile(`^1[3-9][0-9]{9}$`)

// ValidMobile checks a mainland mobile number: 1[3-9] and 9 digits.
func ValidMobile(s string) bool { return mobileRE.MatchString(s) }

// ValidName checks a holder name: 2–30 characters of letters, spaces, the
// middle dot of Chinese transliterated names (·, also •), and . - '.
func ValidName(s string) bool {
	n := utf8.RuneCountInString(s)
	if n < 2 || n > 30 || strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		switch {
		case unicode.IsLetter(r), r == ' ', r == '·', r == '•', r == '.', r == '-', r == '\'':
		default:
			return false
		}
	}
	return true
}

// ValidExpiry checks a card expiry "MMYY" that is not in the past.
func ValidExpiry(s string, today time.Time) bool {
	if len(s) != 4 {
		return false
	}
	mm, err1 := strconv.Atoi(s[:2])
	yy, err2 := strconv.Atoi(s[2:])
	if err1 != nil || err2 != nil || mm < 1 || mm > 12 {
		return false
	}
	year := 2000 + yy
	return year > today.Year() || (year == today.Year() && mm >= int(today.Month()))
}

// ValidCVV2 checks a 3-digit CVV2.
func ValidCVV2(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidOTP checks a 6-digit code.
func ValidOTP(s string) bool {
	if len(s) != 6 {
		return false
	}
	for i := 0; i < 6; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidExternalID checks a merchant's user id: 1–128 printable characters.
func ValidExternalID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
