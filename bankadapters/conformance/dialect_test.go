package conformance

import (
	"net/http"
	"strings"
	"testing"
)

func TestDialectCheckNamesWhatIsMissing(t *testing.T) {
	codes := map[string]string{}
	for _, r := range Reasons {
		codes[r] = "C" + r
	}
	full := Dialect{Name: "test-dialect", Codes: codes, CodeField: "code", SetField: SetJSONField,
		Unsign: func(h http.Header, b []byte) (http.Header, []byte) { return h, b }}
	if err := full.check(); err != nil {
		t.Fatalf("complete Dialect: %v", err)
	}
	partial := full
	partial.Codes = map[string]string{"success": "0"}
	partial.Unsign = nil
	err := partial.check()
	if err == nil {
		t.Fatal("a Dialect without Unsign and most codes passed the check")
	}
	for _, want := range []string{"Unsign", "Codes[insufficient_funds]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check = %v, does not name %s", err, want)
		}
	}
	if err := (Dialect{}).check(); err == nil || !strings.Contains(err.Error(), "Name") {
		t.Errorf("zero Dialect: check = %v, want it to name Name", err)
	}
}

func TestDialectCodeOfAnUnlistedReasonPanics(t *testing.T) {
	d := Dialect{Codes: map[string]string{"made_up": "X"}}
	defer func() {
		if recover() == nil {
			t.Error("code of a reason outside Reasons did not panic")
		}
	}()
	d.code("made_up")
}

func TestSetField(t *testing.T) {
	for _, tc := range []struct {
		name, body, key, value string
		numeric, changed       bool
		want                   string
	}{
		{"json string", `{"code":"0000","amount":5}`, "code", "4001", false, true, `{"amount":5,"code":"4001"}`},
		{"json number", `{"amount":5}`, "amount", "7", true, true, `{"amount":7}`},
		{"json same value", `{"code":"0000"}`, "code", "0000", false, false, `{"code":"0000"}`},
		{"json not an object", `a=b`, "code", "1", false, false, `a=b`},
		{"form", `ret_code=SUCCESS&sign=x`, "sign", "", false, true, `ret_code=SUCCESS&sign=`},
		{"form same value", `ret_code=SUCCESS`, "ret_code", "SUCCESS", false, false, `ret_code=SUCCESS`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := SetJSONField
			if strings.HasPrefix(tc.name, "form") {
				set = SetFormField
			}
			got, changed := set([]byte(tc.body), tc.key, tc.value, tc.numeric)
			if string(got) != tc.want || changed != tc.changed {
				t.Errorf("= %s, %v; want %s, %v", got, changed, tc.want, tc.changed)
			}
		})
	}
}
