package jsonhmac

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/core"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
)

const fuzzMerchantNo = "QP0001"

// fuzzNow is the adapter's clock in the fuzz targets: the seeds' timestamp
// 1796000000 is fresh.
var fuzzNow = time.Unix(1796000000, 0)

func fuzzBank(t testing.TB) *Bank {
	t.Helper()
	b, err := New(Config{Code: "CMB", BaseURL: "http://127.0.0.1:1", MerchantNo: fuzzMerchantNo,
		Secret: []byte("fuzz-secret"), CallOptions: bankadapters.CallOptions{Retries: -1, Now: func() time.Time { return fuzzNow }}})
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
// unsigned, wrongly signed, stale or other merchant's callback is refused;
// an accepted one is the notice the body's type says, naming the body's
// numbers; refusals are fixed messages.
func FuzzJSONHMACCallback(f *testing.F) {
	for _, s := range append(answerSeeds,
		`{"order_no":"QP1","result_code":"0000","amount":1999,"bank_txn_no":"T1"}`,
		`{"type":"debit","order_no":"QP1","result_code":"4001"}`, `{"order_no":"","result_code":"0000"}`,
		`{"order_no":1,"result_code":"0000"}`,
		`{"type":"refund","order_no":"RF1","refund_of":"QP1","status":"SUCCESS","result_code":"0000","amount":500}`,
		`{"type":"refund","order_no":"","refund_of":"QP1"}`,
		`{"type":"agreement_terminated","agreement_no":"AG1","at":"2026-11-30T08:00:00+08:00"}`,
		`{"type":"agreement_terminated","agreement_no":"AG1"}`, `{"type":"credit","order_no":"QP1"}`,
		`{"type":7,"order_no":"QP1"}`) {
		f.Add(fuzzMerchantNo, "1796000000", "n1", []byte(s))
	}
	f.Add(fuzzMerchantNo, "1795999699", "n", []byte(`{"order_no":"QP1","result_code":"0000"}`))
	f.Add(fuzzMerchantNo, "1796000301", "n", []byte(`{"order_no":"QP1","result_code":"0000"}`))
	f.Add(fuzzMerchantNo, "1796000300", "n", []byte(`{"type":"agreement_terminated","agreement_no":"AG1","at":"2026-11-30T08:00:00Z"}`))
	f.Add("QP0002", "1", "n", []byte(`{"order_no":"QP1","result_code":"0000"}`))
	b := fuzzBank(f)
	fixed := map[string]bool{errCallbackNotJSON.Error(): true}
	for _, err := range core.CallbackErrors {
		fixed[err.Error()] = true
	}
	f.Fuzz(func(t *testing.T, merchantNo, ts, nonce string, body []byte) {
		h := http.Header{}
		h.Set("X-Merchant-No", merchantNo)
		h.Set("X-Timestamp", ts)
		h.Set("X-Nonce", nonce)
		if _, err := b.ParseCallback(h, body); err == nil {
			t.Fatal("an unsigned callback was accepted")
		}
		h.Set("X-Signature", b.codec.mac([]byte("CALLBACK\n"+ts+"\n"+nonce+"\n"), body))
		n, err := b.ParseCallback(h, body)
		if err != nil {
			if !fixed[err.Error()] {
				t.Fatalf("refusal %q is not one of the fixed messages", err)
			}
			return
		}
		if merchantNo != fuzzMerchantNo {
			t.Fatalf("accepted a callback for merchant number %q", merchantNo)
		}
		sec, perr := strconv.ParseInt(ts, 10, 64)
		if perr != nil || sec < fuzzNow.Unix()-300 || sec > fuzzNow.Unix()+300 {
			t.Fatalf("accepted a callback stamped %q, more than 300 s from the clock", ts)
		}
		ans, _ := flatten(body)
		switch n.Kind {
		case bankadapters.NoticeCharge:
			if (ans["type"] != "" && ans["type"] != "debit") || n.Charge.OrderNo == "" || n.Charge.OrderNo != ans["order_no"] {
				t.Fatalf("charge notice of order %q from a body of type %q order %q", n.Charge.OrderNo, ans["type"], ans["order_no"])
			}
		case bankadapters.NoticeRefund:
			if ans["type"] != "refund" || n.Refund.RefundNo == "" || n.Refund.RefundNo != ans["order_no"] || n.Refund.OrderNo != ans["refund_of"] {
				t.Fatalf("refund notice %q of order %q from a body of type %q order %q refund_of %q",
					n.Refund.RefundNo, n.Refund.OrderNo, ans["type"], ans["order_no"], ans["refund_of"])
			}
		case bankadapters.NoticeAgreementTerminated:
			if ans["type"] != "agreement_terminated" || n.AgreementNo == "" || n.AgreementNo != ans["agreement_no"] || n.At.IsZero() {
				t.Fatalf("agreement notice %q at %v from a body of type %q agreement %q", n.AgreementNo, n.At, ans["type"], ans["agreement_no"])
			}
		default:
			t.Fatalf("notice of kind %q", n.Kind)
		}
		h.Set("X-Nonce", nonce+"x")
		if _, err := b.ParseCallback(h, body); err == nil {
			t.Fatal("a callback whose nonce changed was accepted")
		}
	})
}

// FuzzJSONHMACEntries reads arbitrary statement entries: no panic; only
// successful rows come out, each a debit (type absent or debit) or a
// refund naming its debit.
func FuzzJSONHMACEntries(f *testing.F) {
	for _, s := range []string{``, `null`, `[]`,
		`[{"order_no":"QP1","agreement_no":"AG1","amount":1999,"status":"SUCCESS","bank_txn_no":"T1","finished_at":"2027-01-31T10:00:00+08:00"}]`,
		`[{"type":"refund","order_no":"RF1","refund_of":"QP1","agreement_no":"AG1","amount":500,"status":"SUCCESS"}]`,
		`[{"type":"refund","order_no":"RF1","amount":500}]`, `[{"type":"debit","order_no":"QP1","refund_of":"QP0"}]`,
		`[{"type":"chargeback","order_no":"QP1"}]`, `[{"type":1}]`,
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
			Type     string `json:"type"`
			RefundOf string `json:"refund_of"`
			Status   string `json:"status"`
		}
		if raw != "" && raw != "null" {
			if json.Unmarshal([]byte(raw), &rows) != nil {
				t.Fatalf("accepted %q, which is not an array of entries", raw)
			}
		}
		var kept []int
		for i, r := range rows {
			switch r.Type {
			case "", "debit", "refund":
			default:
				t.Fatalf("accepted a row of type %q", r.Type)
			}
			if r.Status == "" || r.Status == "SUCCESS" {
				kept = append(kept, i)
			}
		}
		if len(out) != len(kept) {
			t.Fatalf("%d entries out of %d successful rows", len(out), len(kept))
		}
		for k, e := range out {
			r := rows[kept[k]]
			switch {
			case r.Type == "refund" && (e.Type != bankadapters.EntryRefund || e.RefundOf == "" || e.RefundOf != r.RefundOf):
				t.Fatalf("refund row read as %s of %q", e.Type, e.RefundOf)
			case r.Type != "refund" && (e.Type != bankadapters.EntryDebit || e.RefundOf != ""):
				t.Fatalf("debit row read as %s of %q", e.Type, e.RefundOf)
			}
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

// TestEntriesReadTypes: refunds come out as refunds of their debit, an
// entry without a type as a debit, and a type Entries does not know fails
// the statement.
func TestEntriesReadTypes(t *testing.T) {
	c := fuzzBank(t).codec
	out, err := c.Entries(`[{"order_no":"QP1","amount":900,"status":"SUCCESS"},` +
		`{"type":"debit","order_no":"QP2","amount":800,"status":"SUCCESS"},` +
		`{"type":"refund","order_no":"RF1","refund_of":"QP1","amount":300,"status":"SUCCESS"}]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []bankadapters.StatementEntry{{Type: bankadapters.EntryDebit, OrderNo: "QP1", Amount: 900},
		{Type: bankadapters.EntryDebit, OrderNo: "QP2", Amount: 800},
		{Type: bankadapters.EntryRefund, OrderNo: "RF1", RefundOf: "QP1", Amount: 300}}
	if len(out) != len(want) {
		t.Fatalf("Entries = %+v, want %+v", out, want)
	}
	for i := range want {
		if out[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, out[i], want[i])
		}
	}
	for _, bad := range []string{`[{"type":"chargeback","order_no":"QP1","amount":5}]`,
		`[{"type":"refund","order_no":"RF1","amount":5}]`, `[{"type":"debit","order_no":"QP1","refund_of":"QP0","amount":5}]`} {
		if out, err := c.Entries(bad); err == nil {
			t.Errorf("Entries(%s) = %+v, want an error", bad, out)
		}
	}
}
