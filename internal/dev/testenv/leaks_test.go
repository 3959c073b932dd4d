package testenv

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
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
		{"CVV2", cvv2, `{"security_code":"` + cvv2 + `"}`},
		{"CVV2", cvv2, `{"card_code": "` + cvv2 + `"}`},
		{"CVV2", cvv2, `{"csc":` + cvv2 + `}`},
		{"CVV2", cvv2, `cvv2='` + cvv2 + `'`},
		{"CVV2", cvv2, `card_no=x&card[cvc]=` + cvv2},
		{"CVV2", cvv2, `DETAIL: Key (cvv2)=(` + cvv2 + `) already exists.`},
		{"CVV2", cvv2, `cvn2=[` + cvv2 + `]`},
		{"expiry", expiry, `{"card":{"exp":` + expiry + `}}`},
		{"expiry", expiry, `{"v":"` + expiry + `"}`},
		{"expiry", expiry, `{"detail":"{\"card_expiry\":\"` + expiry + `\"}"}`},
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
		{"expiry", expiry, `{"outcome": "failed", "bank_code": "` + expiry + `"}`},
		// Random ids and secrets that hold "exp" or "cvv" by chance, then
		// a sequence number; a query parameter; a field of another name.
		{"CVV2", cvv2, "evt_3obxmjtjtsp5bxqwmclyexpf\t" + cvv2 + "\tmch_cpyqlx"},
		{"CVV2", cvv2, "\tdjjyjzoaayqivpttzpfcruvsdxfexpvr\n" + cvv2 + "\t2026-12-07"},
		{"CVV2", cvv2, "evt_5r6dxbckdgzm6askcvvgug2i " + cvv2},
		{"CVV2", cvv2, `/v1/sys/health?drsecondarycode=` + cvv2 + `&haunhealthycode=` + cvv2},
		{"expiry", expiry, `"expires_at": "` + expiry + `-01-05"`},
	}
	for _, tc := range missed {
		if form, ok := Leak(tc.hay, strings.ToLower(tc.hay), tc.kind, tc.value); ok {
			t.Errorf("a look-alike of a %s in %q was taken for a leak %s", tc.kind, tc.hay, form)
		}
	}
}

// TestShortLeakFindsCodes: across a whole package (ScanPackage) a code is
// looked for where a leak would put it, as CVV2 and expiry are.
func TestShortLeakFindsCodes(t *testing.T) {
	t.Parallel()
	const code = "654321"
	for hay, want := range map[string]bool{
		`{"otp":"` + code + `"}`:                          true,
		`{"sms_code": ` + code + `}`:                      true,
		`confirm code=` + code:                            true,
		`{"detail":"{\"code\":\"` + code + `\"}"}`:        true,
		`{"v": "` + code + `"}`:                           true,
		"\t\\x" + hex.EncodeToString([]byte(code)) + "\t": true,
		`{"attempts": ` + code + `}`:                      false,
		"\t" + code + "\t2026-12-07":                      false,
		"evt_5r6dxbckdgzm6askotpgug2i\t" + code:           false,
	} {
		if form, got := shortLeak(hay, "OTP", code); got != want {
			t.Errorf("%q: found %v (%s), want %v", hay, got, form, want)
		}
	}
}

// TestDigestScanFindsUnkeyedDigests proves the digest scan can fail: it
// finds the request fingerprint the idempotency layer once stored, in the
// forms a dump or a log gives it, and passes over keyed digests and digests
// of other bodies.
func TestDigestScanFindsUnkeyedDigests(t *testing.T) {
	t.Parallel()
	const code = "654321"
	confirm := SentRequest{Method: "POST", Path: "/v1/bindings/bnd_1/confirm", Body: []byte(`{"otp":"` + code + `"}`)}
	old := sha256.Sum256([]byte("POST\x00/v1/bindings/bnd_1/confirm\x00" + string(confirm.Body)))
	ofBody := sha256.Sum256(confirm.Body)
	ofCode := sha256.Sum256([]byte(code))
	scan := NewDigestScan([]SentRequest{confirm}, map[string]string{code: "OTP"})
	for name, hay := range map[string]string{
		"bytea in a COPY row": "mch_1\tk-1\tPOST\t/v1/bindings/bnd_1/confirm\t\\x" + hex.EncodeToString(old[:]) + "\tdone\n",
		"upper-case hex":      strings.ToUpper(hex.EncodeToString(old[:])),
		"base64 in JSON":      `{"fp":"` + base64.StdEncoding.EncodeToString(old[:]) + `"}`,
		"base64url":           base64.RawURLEncoding.EncodeToString(old[:]),
		"raw bytes":           "x" + string(old[:]) + "y",
		"digest of the body":  `\x` + hex.EncodeToString(ofBody[:]),
		"digest of the code":  `"h":"` + hex.EncodeToString(ofCode[:]) + `"`,
	} {
		if errs := scan.Find("hay", hay); len(errs) != 1 {
			t.Errorf("%s: %d findings %v, want 1", name, len(errs), errs)
		} else if strings.Contains(errs[0].Error(), code) {
			t.Errorf("%s: the finding names the value: %v", name, errs[0])
		}
	}
	keyed := hmac.New(sha256.New, []byte("a key the dump does not hold"))
	keyed.Write([]byte("POST\x00/v1/bindings/bnd_1/confirm\x00" + string(confirm.Body)))
	other := sha256.Sum256([]byte("POST\x00/v1/bindings/bnd_1/confirm\x00" + `{"otp":"654320"}`))
	for name, hay := range map[string]string{
		"keyed MAC":           `\x0200000001` + hex.EncodeToString(keyed.Sum(nil)),
		"another body":        `\x` + hex.EncodeToString(other[:]),
		"a truncated digest":  hex.EncodeToString(old[:31]),
		"the body in a reply": string(confirm.Body[:8]),
	} {
		if errs := scan.Find("hay", hay); len(errs) != 0 {
			t.Errorf("%s: taken for an unkeyed digest: %v", name, errs)
		}
	}
}

// TestRecordBodies: the handler reads the body it was sent, and the scan
// knows it.
func TestRecordBodies(t *testing.T) {
	body := `{"card_number":"` + randomDigits(t, 19) + `"}`
	var got []byte
	h := RecordBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/bindings?x=1", strings.NewReader(body)))
	if string(got) != body {
		t.Errorf("the handler read %d bytes, want the %d sent", len(got), len(body))
	}
	n := 0
	for _, r := range Sent() {
		if r.Method == "POST" && r.Path == "/v1/bindings" && string(r.Body) == body {
			n++
		}
	}
	if n != 1 {
		t.Errorf("Sent holds the request %d times, want once", n)
	}
}

func randomDigits(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}
