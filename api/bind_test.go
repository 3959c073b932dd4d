package api

import (
	"errors"
	"testing"
)

// TestBindRefusals: what FuzzBind found, pinned as cases.
func TestBindRefusals(t *testing.T) {
	type body struct {
		URL  string `json:"url"`
		CVV2 string `json:"cvv2"`
	}
	for _, tc := range []struct {
		name, body, code, field string
	}{
		{"one object", `{"url":"a"}`, "", ""},
		{"one object and spaces", " {\"url\":\"a\"} \n", "", ""},
		{"a closing brace after the object", `{}}`, "malformed_json", ""},
		{"a bracket and a second object after it", `{"url":"a"}]{"url":"b"}`, "malformed_json", ""},
		{"a second object", `{"url":"a"} {"url":"b"}`, "malformed_json", ""},
		{"an unknown field is named", `{"secret":"x"}`, "validation_failed", "secret"},
		{"a field name with digits", `{"cvv3":"x"}`, "validation_failed", "cvv3"},
		{"a key that needs quoting is not repeated", `{"\"":1}`, "validation_failed", "?"},
		{"a card number as a key is not repeated", `{"6222020000000000001":1}`, "validation_failed", "?"},
		{"a NUL in a value", `{"url":"a\u0000"}`, "validation_failed", "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v body
			err := bindBody([]byte(tc.body), &v)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("Bind(%s) = %v, want it accepted", tc.body, err)
				}
				return
			}
			var ans *Error
			if !errors.As(err, &ans) || ans.Code != tc.code {
				t.Fatalf("Bind(%s) = %v, want %s", tc.body, err, tc.code)
			}
			if f, _ := ans.Fields["field"].(string); f != tc.field {
				t.Fatalf("Bind(%s) names field %q, want %q", tc.body, f, tc.field)
			}
		})
	}
}
