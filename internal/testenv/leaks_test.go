package testenv

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestLeakFindsPlantedValues proves the leak scans (TestE2E's, ScanPackage) can fail:
// it finds each kind of value in the forms a leak takes, and passes over
// the look-alikes a database and logs hold anyway.
func TestLeakFindsPlantedValues(t *testing.T) {
	t.Parallel()
	const (
		pan    = "6222021234567890128"
		idNo   = "11010119900307451X"
		code   = "654321"
		cvv2   = "208"
		expiry = "1231"
	)
	found := []struct {
		kind, value, hay string
	}{
		{"PAN", pan, `{"level":"ERROR","msg":"bind","pan":"` + pan + `"}`},
		{"PAN", pan, "\t" + pan[6:] + "\t"}, // the digits a masked PAN hides
		{"PAN", pan, `\x` + hex.EncodeToString([]byte(pan))},
		{"PAN", pan, `{"ct":"` + base64.StdEncoding.EncodeToString([]byte(pan)) + `"}`},
		{"ID number", idNo, "id " + strings.ToLower(idNo)},
		{"ID number", idNo, hex.EncodeToString([]byte(idNo))},
		{"OTP", code, `{"otp":"` + code + `"}`},
		{"OTP", code, "\t" + code + "\n"},
		{"OTP", code, "abc" + hex.EncodeToString([]byte(code)) + "def"},
		{"CVV2", cvv2, `{"cvv2":"` + cvv2 + `"}`},
		{"CVV2", cvv2, `cvv2=` + cvv2 + `&expiry=` + expiry},
		{"CVV2", cvv2, "\t\\x" + hex.EncodeToString([]byte(cvv2)) + "\t"},
		{"expiry", expiry, `{"card":{"exp":` + expiry + `}}`},
		{"expiry", expiry, `{"v":"` + expiry + `"}`},
	}
	for _, tc := range found {
		if _, ok := Leak(tc.hay, strings.ToLower(tc.hay), tc.kind, tc.value); !ok {
			t.Errorf("a %s in %q was not found", tc.kind, tc.hay)
		}
	}
	missed := []struct {
		kind, value, hay string
	}{
		{"PAN", pan, `"masked_pan":"622202*********0128","last4":"0128"`},
		{"OTP", code, `"at":"2026-01-02T03:04:05.` + code + `Z"`},
		{"OTP", code, `\x0a` + code + `ff`},
		{"OTP", code, "seq 9" + code + "0"},
		{"CVV2", cvv2, `{"status":` + cvv2 + `,"duration_ms":1.` + cvv2 + `}` + "\t" + cvv2 + "\t"},
		{"expiry", expiry, `{"last4": "` + expiry + `"}`},
	}
	for _, tc := range missed {
		if form, ok := Leak(tc.hay, strings.ToLower(tc.hay), tc.kind, tc.value); ok {
			t.Errorf("a look-alike of a %s in %q was taken for a leak %s", tc.kind, tc.hay, form)
		}
	}
}
