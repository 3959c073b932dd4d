package jsonhmac

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
)

const fuzzMerchantNo = "QP0001"

func fuzzBank(t testing.TB) *Bank {
	t.Helper()
	b, err := New(Config{Code: "CMB", BaseURL: "http://127.0.0.1:1", MerchantNo: fuzzMerchantNo,
		Secret: []byte("fuzz-secret"), CallOptions: bankadapters.CallOptions{Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var answerSeeds = []string{
	`{"code":"0000","message":"ok","bind_ref":"BR1"}`,
	`{"code":"0000","order_no":"QP1","amount":1999,"status":"SUCCESS","bank_txn_no":"T1","finished_at":"2027-01-31T10:00:00+08:00"}`,
	`{"code":"0000","entries":[{"order_no":"QP1","amount":1999,"status":"SUCCESS"}]}`,
	`{"code":"4001","message":"余额不足"}`, `{"code":0}`, `{"code":null,"x":{"y":[1,2]}}`,
	`{"amount":1e400}`, `{"amount":-1}`, `{"a":"\u0000"}`, "{\"a\":\"\xff\"}", `{"a":1,"a":2}`,
	`[]`, `null`, `"x"`, ``, `{`, `{"a":}`, `{}  {}`,
}

// FuzzJSONHMACDecode reads arbitrary answers with a valid signature, so
// the reading itself is fuzzed, not only the refusal of bad signatures.
// Properties: a refusal is one of the codec's fixed messages (never body
// text); an accepted answer is exactly the JSON object's members, strings
// as they are; the same answer with its signature or body changed by one
// byte is refused.
func FuzzJSONHMACDecode(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add(200, "1796000000", "n1", []byte(s), uint8(0))
	}
	f.Add(500, "", "", []byte(`{"code":"9999"}`), uint8(7))
	c := fuzzBank(f).codec
	f.Fuzz(func(t *testing.T, status int, ts, nonce string, body []byte, flip uint8) {
		h := http.Header{}
		h.Set("X-Timestamp", ts)
		h.Set("X-Nonce", nonce)
		sig := c.mac([]byte(strconv.Itoa(status)+"\n"+ts+"\n"+nonce+"\n"), body)
		h.Set("X-Signature", sig)
		resp := &wire.Response{Status: status, Header: h, Body: body}
		ans, err := c.Decode(resp)

		var raw map[string]json.RawMessage
		isObject := json.Unmarshal(body, &raw) == nil
		switch {
		case err != nil && err.Error() != "answer is not a JSON object":
			t.Fatalf("a signed answer refused with %q", err)
		case err != nil && isObject:
			t.Fatalf("a signed JSON object refused")
		case err == nil && !isObject:
			t.Fatalf("accepted %q, which is not a JSON object", body)
		case err == nil:
			if len(ans) != len(raw) {
				t.Fatalf("fields %v, want the members of %s", ans, body)
			}
			for k, v := range raw {
				var s string
				if json.Unmarshal(v, &s) == nil && ans[k] != s {
					t.Fatalf("field %q = %q, want %q", k, ans[k], s)
				}
			}
		}

		// One changed byte of the signature or of the body is refused.
		bad := []byte(sig)
		bad[int(flip)%len(bad)] ^= 1
		h2 := h.Clone()
		h2.Set("X-Signature", string(bad))
		if _, err := c.Decode(&wire.Response{Status: status, Header: h2, Body: body}); err == nil {
			t.Fatal("an answer with a changed signature was accepted")
		}
		if len(body) > 0 {
			b2 := append([]byte(nil), body...)
			b2[int(flip)%len(b2)] ^= 0x20
			if _, err := c.Decode(&wire.Response{Status: status, Header: h, Body: b2}); err == nil {
				t.Fatal("a changed body was accepted under the old signature")
			}
		}
	})
}

// FuzzJSONHMACCallback parses arbitrary signed callbacks. Properties: an
// unsigned, wrongly signed or other merchant's callback is refused; an
// accepted one names the body's order_no; refusals are fixed messages.
func FuzzJSONHMACCallback(f *testing.F) {
	for _, s := range append(answerSeeds,
		`{"order_no":"QP1","result_code":"0000","amount":1999,"bank_txn_no":"T1"}`,
		`{"order_no":"QP1","result_code":"4001"}`, `{"order_no":"","result_code":"0000"}`,
		`{"order_no":1,"result_code":"0000"}`, `{"type":"agreement_terminated","agreement_no":"AG1"}`) {
		f.Add(fuzzMerchantNo, "1796000000", "n1", []byte(s))
	}
	f.Add("QP0002", "1", "n", []byte(`{"order_no":"QP1","result_code":"0000"}`))
	b := fuzzBank(f)
	fixed := []string{"callback for another merchant number", "callback signature does not verify",
		"callback body is not a charge result"}
	f.Fuzz(func(t *testing.T, merchantNo, ts, nonce string, body []byte) {
		h := http.Header{}
		h.Set("X-Merchant-No", merchantNo)
		h.Set("X-Timestamp", ts)
		h.Set("X-Nonce", nonce)
		if _, err := b.ParseCallback(h, body); err == nil {
			t.Fatal("an unsigned callback was accepted")
		}
		h.Set("X-Signature", b.codec.mac([]byte("CALLBACK\n"+ts+"\n"+nonce+"\n"), body))
		res, err := b.ParseCallback(h, body)
		if err != nil {
			if !strings.Contains(strings.Join(fixed, "|"), err.Error()) {
				t.Fatalf("refusal %q is not one of the fixed messages", err)
			}
			return
		}
		if merchantNo != fuzzMerchantNo {
			t.Fatalf("accepted a callback for merchant number %q", merchantNo)
		}
		ans, _ := flatten(body)
		if res.Charge.OrderNo == "" || res.Charge.OrderNo != ans["order_no"] {
			t.Fatalf("result names order %q, body %q", res.Charge.OrderNo, ans["order_no"])
		}
		h.Set("X-Nonce", nonce+"x")
		if _, err := b.ParseCallback(h, body); err == nil {
			t.Fatal("a callback whose nonce changed was accepted")
		}
	})
}

// FuzzJSONHMACEntries reads arbitrary statement entries: no panic, and only
// successful rows come out.
func FuzzJSONHMACEntries(f *testing.F) {
	for _, s := range []string{``, `null`, `[]`,
		`[{"order_no":"QP1","agreement_no":"AG1","amount":1999,"status":"SUCCESS","bank_txn_no":"T1","finished_at":"2027-01-31T10:00:00+08:00"}]`,
		`[{"order_no":"QP2","amount":5,"status":"FAILED"}]`, `[{"order_no":"QP3","amount":5,"status":"REVERSED"}]`,
		`[{"amount":"5"}]`, `[{"amount":1e400}]`,
		`[{"finished_at":"not a time"}]`, `{}`, `[null]`, `[[]]`} {
		f.Add(s)
	}
	c := fuzzBank(f).codec
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := c.Entries(raw)
		if err != nil {
			return
		}
		var rows []struct {
			Status string `json:"status"`
		}
		if raw != "" && raw != "null" {
			if json.Unmarshal([]byte(raw), &rows) != nil {
				t.Fatalf("accepted %q, which is not an array of entries", raw)
			}
		}
		n := 0
		for _, r := range rows {
			if r.Status == "" || r.Status == "SUCCESS" {
				n++
			}
		}
		if len(out) != n {
			t.Fatalf("%d entries out of %d successful rows", len(out), n)
		}
	})
}

// TestEntriesRefuseAnUnknownStatus: a status Entries does not know is
// neither kept as a debit nor dropped as a failure.
func TestEntriesRefuseAnUnknownStatus(t *testing.T) {
	c := fuzzBank(t).codec
	out, err := c.Entries(`[{"order_no":"QP1","amount":5,"status":"SUCCESS"},{"order_no":"QP3","amount":5,"status":"REVERSED"}]`)
	if err == nil || !strings.Contains(err.Error(), `"REVERSED"`) {
		t.Fatalf("Entries = %d entries, %v; want an error naming REVERSED", len(out), err)
	}
	out, err = c.Entries(`[{"order_no":"QP1","amount":5,"status":"SUCCESS"},{"order_no":"QP2","amount":5,"status":"FAILED"}]`)
	if err != nil || len(out) != 1 || out[0].OrderNo != "QP1" {
		t.Fatalf("Entries = %+v, %v; want QP1 alone", out, err)
	}
}
