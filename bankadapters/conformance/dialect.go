package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/quickpay/quickpay/bankadapters"
)

// Dialect is what the suite needs to know of a wire dialect to read a
// bank's codes and to alter its messages in transit. The suite names no
// dialect: each adapter's tests pass their own (jsonhmac_test.go,
// formrsa_test.go), so a new dialect is a new adapter package with a new
// Dialect in its tests, and no change here.
type Dialect struct {
	// Name is the dialect as banksim names it (GET /sim/banks). Run fails
	// unless the bank under test speaks it.
	Name bankadapters.Dialect
	// Codes maps each reason of Reasons to the dialect's result code for
	// it (docs/banksim.md, "Result codes"): "insufficient_funds" → "4001".
	Codes map[string]string
	// CodeField names an answer's result code field: "code".
	CodeField string
	// SetField sets one field of a request, answer or callback body,
	// adding it if absent; numeric writes a number where the encoding
	// tells numbers from strings. It reports whether the body changed,
	// false also for a body not in the dialect's encoding. SetJSONField and
	// SetFormField fit.
	SetField func(body []byte, key, value string, numeric bool) ([]byte, bool)
	// Unsign returns a callback with its signature taken off, so the
	// suite can check the adapter refuses it. It must not change its
	// arguments.
	Unsign func(header http.Header, body []byte) (http.Header, []byte)
}

// Reasons are the results whose codes the suite checks an adapter
// reports (a Dialect's Codes keys): banksim's reason names.
var Reasons = []string{
	"success", "processing", "sign_invalid", "id_mismatch", "card_frozen", "insufficient_funds",
	"single_limit", "daily_limit", "agreement_invalid", "try_tomorrow", "order_conflict",
	"order_not_refundable", "refund_window_expired", "refund_exceeds",
}

// refundReasons are a refund's own refusals, each a hard decline whose
// bankadapters Reason is its name.
var refundReasons = []string{"order_not_refundable", "refund_window_expired", "refund_exceeds"}

// check reports what d lacks.
func (d Dialect) check() error {
	var missing []string
	if d.Name == "" {
		missing = append(missing, "Name")
	}
	if d.CodeField == "" {
		missing = append(missing, "CodeField")
	}
	if d.SetField == nil {
		missing = append(missing, "SetField")
	}
	if d.Unsign == nil {
		missing = append(missing, "Unsign")
	}
	for _, r := range Reasons {
		if d.Codes[r] == "" {
			missing = append(missing, "Codes["+r+"]")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("conformance: Dialect %q lacks %s", d.Name, strings.Join(missing, ", "))
	}
	return nil
}

// code is reason's code in d. A reason outside Reasons is a defect in the
// suite: it panics.
func (d Dialect) code(reason string) string {
	if !slices.Contains(Reasons, reason) {
		panic("conformance: reason " + reason + " is not in Reasons")
	}
	return d.Codes[reason]
}

// forgeCharge rewrites a charge or refund answer to claim status with
// reason's code.
func (d Dialect) forgeCharge(status, reason string) func([]byte) ([]byte, bool) {
	return func(body []byte) ([]byte, bool) {
		b1, c1 := d.SetField(body, "status", status, false)
		b2, c2 := d.SetField(b1, d.CodeField, d.code(reason), false)
		return b2, c1 || c2
	}
}

// SetJSONField is Dialect.SetField for bodies that are one JSON object.
func SetJSONField(body []byte, key, value string, numeric bool) ([]byte, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return body, false
	}
	raw := json.RawMessage(value)
	if !numeric {
		raw, _ = json.Marshal(value)
	}
	if bytes.Equal(obj[key], raw) {
		return body, false
	}
	obj[key] = raw
	out, err := json.Marshal(obj)
	if err != nil {
		return body, false
	}
	return out, true
}

// SetFormField is Dialect.SetField for form-encoded bodies; numeric is
// moot (a form holds strings).
func SetFormField(body []byte, key, value string, _ bool) ([]byte, bool) {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return body, false
	}
	if v.Get(key) == value {
		return body, false
	}
	v.Set(key, value)
	return []byte(v.Encode()), true
}
