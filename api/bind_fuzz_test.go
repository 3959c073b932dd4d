package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// bodyKinds are the request bodies the API decodes with Bind, one per
// shape: the handlers' own request types.
var bodyKinds = []struct {
	name string
	new  func() any
	// roundTrip: the type marshals back to what it decoded (no redacting
	// sensitive fields), so decode ∘ encode must be the identity.
	roundTrip bool
}{
	{"webhook endpoint", func() any { return new(setEndpointRequest) }, true},
	{"mandate", func() any { return new(createMandateRequest) }, true},
	{"mandate charge", func() any { return new(postChargeRequest) }, true},
	{"member", func() any { return new(createMemberRequest) }, false},
	{"binding", func() any { return new(createBindingRequest) }, false},
	{"otp", func() any { return new(otpRequest) }, false},
	{"no body", nil, false}, // BindEmpty: the body-less POSTs
}

// fuzzEcho makes the contexts of bindBody (an Echo per call would be most
// of the cost of an execution).
var fuzzEcho = echo.New()

// bindBody runs Bind (or BindEmpty for a nil into) over body as a request
// would.
func bindBody(body []byte, into any) error {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	c := fuzzEcho.NewContext(req, httptest.NewRecorder())
	if into == nil {
		return BindEmpty(c)
	}
	return Bind(c, into)
}

// FuzzBind decodes arbitrary bodies as every request body type. Beyond not
// panicking:
//   - a refusal is an *Error answering 400 malformed_json or
//     validation_failed (naming a field), or 413 — never an unknown error,
//     which would answer 500;
//   - a refusal's answer repeats no string value of the body (a body
//     carries card numbers, CVV2 and codes; only key names may be named);
//   - what is accepted is one well-formed JSON object;
//   - for types without sensitive fields, encoding what was decoded and
//     decoding it again gives the same value.
func FuzzBind(f *testing.F) {
	for i := range bodyKinds {
		k := uint8(i)
		for _, s := range []string{
			`{}`, `null`, `[]`, `"x"`, `1`, `{"url":"https://a.example/h","events":["charge.failed"]}`,
			`{"card_id":"card_x","schedule":{"interval":"month","day_of_month":31,"start_date":"2027-01-31"}}`,
			`{"amount":1999,"period":"2027-01"}`, `{"amount":1e400}`, `{"amount":"1999"}`,
			`{"card_number":"6222020000000000001","cvv2":"123","expiry":"1230"}`,
			`{"card_number":6222020000000000001}`, `{"otp":"123456"}`, `{"otp":123456}`,
			`{"secret":"6222020000000000001"}`, `{"url":"a","url":"b"}`, `{"a":1} {"b":2}`,
			"{\"url\":\"\xff\xfe\"}", `{"schedule":{"nope":1}}`, `{"events":[1]}`, ``, ` `,
		} {
			f.Add(k, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := bodyKinds[int(kind)%len(bodyKinds)]
		var into any
		if k.new != nil {
			into = k.new()
		}
		err := bindBody(body, into)
		if err != nil {
			checkRefusal(t, k.name, body, err)
			return
		}
		trimmed := bytes.TrimSpace(body)
		if k.new == nil && len(trimmed) == 0 {
			return // no body at all
		}
		if !json.Valid(body) || trimmed[0] != '{' {
			t.Fatalf("%s: accepted a body that is not one JSON object: %q", k.name, body)
		}
		if !k.roundTrip {
			return
		}
		enc, err := json.Marshal(into)
		if err != nil {
			t.Fatalf("%s: marshal what was decoded: %v", k.name, err)
		}
		again := k.new()
		if err := bindBody(enc, again); err != nil {
			t.Fatalf("%s: %s does not decode again: %v", k.name, enc, err)
		}
		if !reflect.DeepEqual(into, again) {
			t.Fatalf("%s: round trip changed the value: %+v → %s → %+v", k.name, into, enc, again)
		}
	})
}

// checkRefusal checks Bind's refusal of body.
func checkRefusal(t *testing.T, kind string, body []byte, err error) {
	t.Helper()
	var ans *Error
	if !errors.As(err, &ans) {
		t.Fatalf("%s: refusal is %T %v, not an API error (it would answer 500)", kind, err, err)
	}
	switch {
	case ans.Status == http.StatusRequestEntityTooLarge && ans.Code == "body_too_large":
	case ans.Status == http.StatusBadRequest && ans.Code == "malformed_json":
	case ans.Status == http.StatusBadRequest && ans.Code == "validation_failed":
		f, _ := ans.Fields["field"].(string)
		if ans.Message == "unknown field" {
			// The key itself is named when it looks like a field name,
			// else "?" (a key is input, and may be a card number).
			keys, _ := stringsOf(body)
			if !slices.ContainsFunc(keys, func(k string) bool { return k == f || f == "?" && !fieldNameRE.MatchString(k) }) {
				t.Fatalf("%s: unknown field %q is none of the body's keys %q", kind, f, keys)
			}
		} else if f == "" {
			t.Fatalf("%s: validation_failed names no field: %+v", kind, ans)
		}
	default:
		t.Fatalf("%s: unexpected refusal %d %s", kind, ans.Status, ans.Code)
	}
	if _, err := json.Marshal(errorBody(ans, "rid")); err != nil {
		t.Fatalf("%s: the answer does not marshal: %v", kind, err)
	}
	// Code and message are constants; only the members can carry input.
	keys, vals := stringsOf(body)
	for name, member := range ans.Fields {
		m := fmt.Sprint(member)
		for _, v := range vals {
			if len(v) >= 4 && strings.Contains(m, v) && !containsAny(keys, v) {
				t.Fatalf("%s: the answer's %s %q repeats the body's value %q", kind, name, m, v)
			}
		}
	}
}

// stringsOf returns the object keys and string values anywhere in body,
// read leniently (a body Bind refuses may still be JSON).
func stringsOf(body []byte) (keys, vals []string) {
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				keys = append(keys, k)
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			vals = append(vals, x)
		case json.Number:
			vals = append(vals, x.String())
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		var v any
		if dec.Decode(&v) != nil {
			return keys, vals
		}
		walk(v)
	}
}

func containsAny(keys []string, v string) bool {
	for _, k := range keys {
		if strings.Contains(k, v) {
			return true
		}
	}
	return false
}
