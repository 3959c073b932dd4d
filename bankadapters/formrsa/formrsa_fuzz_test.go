package formrsa

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/internal/core"
	"github.com/quickpay/quickpay/bankadapters/internal/wire"
)

// fuzzKey is the "bank's" key of the fuzz targets, made once per process.
var fuzzKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func bankSign(t *testing.T, msg string) string {
	t.Helper()
	d := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(nil, fuzzKey(), crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// FuzzFormRSADecode reads arbitrary form answers, as they come and signed
// with the bank's key (so the reading is fuzzed past the signature check).
// Properties: an answer as it comes is refused with a fixed message; a
// signed answer is accepted with each field's (first) value, ret_code as
// code; changing any signed field's value afterwards is refused.
func FuzzFormRSADecode(f *testing.F) {
	for _, s := range []string{
		"ret_code=SUCCESS&ret_msg=ok&bind_ref=BR1&timestamp=1796000000&nonce=n1&sign_type=RSA2",
		"ret_code=SUCCESS&order_no=QP1&amount=1999&status=SUCCESS&bank_txn_no=T1",
		"ret_code=E_BALANCE&ret_msg=%E4%BD%99%E9%A2%9D%E4%B8%8D%E8%B6%B3",
		"ret_code=SUCCESS&entries=QP1%7CAG1%7C1999%7CT1%7C2027-01-31T10%3A00%3A00%2B08%3A00",
		"a=1&a=2", "a=1%26b%3D2", "a=1&b=2", "=x", "a=", "a", "%zz", "a=1;b=2", "sign=AAAA", "",
		"ret_code=SUCCESS&sign=" + strings.Repeat("A", 344),
	} {
		f.Add(s, true, uint8(0))
		f.Add(s, false, uint8(1))
	}
	c := &codec{bankKey: &fuzzKey().PublicKey}
	fixed := []string{"answer is not form-encoded", "answer is not signed", "answer signature does not verify"}
	f.Fuzz(func(t *testing.T, body string, sign bool, pick uint8) {
		v, perr := url.ParseQuery(body)
		if !sign || perr != nil {
			_, err := c.Decode(&wire.Response{Status: 200, Body: []byte(body)})
			if err == nil {
				t.Fatalf("an answer the bank did not sign was accepted: %q", body)
			}
			if !slices.Contains(fixed, err.Error()) {
				t.Fatalf("refusal %q is not one of the fixed messages", err)
			}
			return
		}
		v.Set("sign", bankSign(t, canonical(v)))
		signed := v.Encode()
		ans, err := c.Decode(&wire.Response{Status: 200, Body: []byte(signed)})
		if err != nil {
			t.Fatalf("a signed answer %q was refused: %v", signed, err)
		}
		for k := range v {
			if k != "code" && k != "message" && ans[k] != v.Get(k) {
				t.Fatalf("field %q = %q, want %q", k, ans[k], v.Get(k))
			}
		}
		if ans["code"] != v.Get("ret_code") || ans["message"] != v.Get("ret_msg") {
			t.Fatalf("code %q message %q, want ret_code and ret_msg", ans["code"], ans["message"])
		}
		// Change one signed field: the old signature must not verify.
		var names []string
		for k := range v {
			if k != "sign" && v.Get(k) != "" {
				names = append(names, k)
			}
		}
		if len(names) == 0 {
			return
		}
		slices.Sort(names)
		k := names[int(pick)%len(names)]
		v.Set(k, v.Get(k)+"x")
		if _, err := c.Decode(&wire.Response{Status: 200, Body: []byte(v.Encode())}); err == nil {
			t.Fatalf("field %q changed under the old signature was accepted", k)
		}
	})
}

// FuzzCanonical checks the canonical string both sides sign. It is
// deterministic (whatever the order fields are added in), ignores sign and
// empty fields, and is injective where the dialect makes it so: on fields
// whose names hold neither '&' nor '=' and whose values hold no '&', it
// reads back to exactly the signed fields. Values are raw, not encoded
// (docs/banksim.md), so outside that domain two field sets can share a
// canonical string ({a:"1&b=2"} and {a:"1", b:"2"}): see docs/decisions.md
// "Fuzzing".
func FuzzCanonical(f *testing.F) {
	f.Add("ret_code\x00SUCCESS\x00order_no\x00QP1\x00amount\x001999")
	f.Add("a\x001&b=2\x00b\x00")
	f.Add("sign\x00xyz\x00empty\x00\x00k\x00v=w")
	f.Add("\x00x\x00=\x00y")
	f.Add("")
	f.Fuzz(func(t *testing.T, data string) {
		parts := strings.Split(data, "\x00")
		fields := map[string]string{}
		var order []string
		for i := 0; i+1 < len(parts); i += 2 {
			if _, dup := fields[parts[i]]; !dup {
				order = append(order, parts[i])
			}
			fields[parts[i]] = parts[i+1]
		}
		fwd, back := url.Values{}, url.Values{}
		for _, k := range order {
			fwd.Set(k, fields[k])
		}
		for _, k := range slices.Backward(order) {
			back.Set(k, fields[k])
		}
		want := canonical(fwd)
		if got := canonical(back); got != want {
			t.Fatalf("canonical depends on insertion order: %q vs %q", want, got)
		}
		extra := url.Values{}
		for k, vs := range fwd {
			extra[k] = vs
		}
		if _, ok := fields["sign"]; !ok {
			extra.Set("sign", "c2lnbg==")
		}
		if _, ok := fields["zz_empty"]; !ok {
			extra.Set("zz_empty", "")
		}
		if got := canonical(extra); got != want {
			t.Fatalf("sign or an empty field changed the canonical string: %q vs %q", want, got)
		}

		signed := map[string]string{}
		for k, v := range fields {
			if k == "sign" || v == "" {
				continue
			}
			if strings.ContainsAny(k, "&=") || strings.Contains(v, "&") {
				return // outside the domain where the string is injective
			}
			signed[k] = v
		}
		read := map[string]string{}
		if want != "" {
			for _, pair := range strings.Split(want, "&") {
				k, v, _ := strings.Cut(pair, "=")
				read[k] = v
			}
		}
		if len(read) != len(signed) {
			t.Fatalf("%q reads back as %v, want %v", want, read, signed)
		}
		for k, v := range signed {
			if read[k] != v {
				t.Fatalf("%q reads back as %v, want %v", want, read, signed)
			}
		}
	})
}

// FuzzFormRSAEntries reads arbitrary statement lines: no panic; what is
// accepted is one entry per non-empty line of five fields (a debit) or
// seven (a debit, or a refund naming its debit).
func FuzzFormRSAEntries(f *testing.F) {
	for _, s := range []string{"", "\n\n", "QP1|AG1|1999|T1|2027-01-31T10:00:00+08:00",
		"QP1|AG1|1999|T1|2027-01-31T10:00:00+08:00\nQP2|AG1|5|T2|", "QP1|AG1|x|T1|", "a|b|c|d",
		"QP1|AG1|1999|T1|2027-01-31T10:00:00+08:00|debit|", "RF1|AG1|500|T2|2027-01-31T11:00:00+08:00|refund|QP1",
		"RF1|AG1|500|T2||refund|", "QP1|AG1|5|T1||debit|QP0", "QP1|AG1|5|T1||chargeback|", "QP1|AG1|5|T1|||",
		"|||||", "QP1|AG1|-5|T1|\r\n", "QP1|AG1|99999999999999999999|T1|"} {
		f.Add(s)
	}
	c := &codec{}
	fixed := []error{errEntryFields, errEntryAmount, errEntryType, errEntryRefundOf, errEntryDebitRefundOf}
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := c.Entries(raw)
		if err != nil {
			if !slices.Contains(fixed, err) {
				t.Fatalf("refusal %q is not one of the fixed messages", err)
			}
			return
		}
		var lines [][]string
		for line := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
			if line != "" {
				lines = append(lines, strings.Split(line, "|"))
			}
		}
		if len(out) != len(lines) {
			t.Fatalf("%d entries for %d lines", len(out), len(lines))
		}
		for i, f := range lines {
			e := out[i]
			switch {
			case len(f) == 5 || (len(f) == 7 && (f[5] == "" || f[5] == "debit")):
				if e.Type != bankadapters.EntryDebit || e.RefundOf != "" || (len(f) == 7 && f[6] != "") {
					t.Fatalf("line %q read as %s of %q", strings.Join(f, "|"), e.Type, e.RefundOf)
				}
			case len(f) == 7 && f[5] == "refund":
				if e.Type != bankadapters.EntryRefund || e.RefundOf == "" || e.RefundOf != f[6] {
					t.Fatalf("line %q read as %s of %q", strings.Join(f, "|"), e.Type, e.RefundOf)
				}
			default:
				t.Fatalf("accepted line %q, which has neither 5 fields nor 7 of a known type", strings.Join(f, "|"))
			}
			if e.OrderNo != f[0] || e.AgreementNo != f[1] || e.BankTxnNo != f[3] {
				t.Fatalf("line %q read as %+v", strings.Join(f, "|"), e)
			}
		}
	})
}

// fuzzNow is the adapter's clock in FuzzFormRSACallback: the seeds'
// timestamp 1796000000 is fresh.
var fuzzNow = time.Unix(1796000000, 0)

const fuzzMerchantNo = "QPCCB0001"

// FuzzFormRSACallback parses arbitrary callback forms, as they come and
// signed with the bank's key. Properties: an unsigned, wrongly signed,
// stale or other merchant's callback is refused; an accepted one is the
// notice its type says, naming the form's numbers; any signed field
// changed afterwards is refused; refusals are fixed messages.
func FuzzFormRSACallback(f *testing.F) {
	for _, s := range []string{
		"order_no=QP1&status=SUCCESS&result_code=SUCCESS&amount=1999&bank_txn_no=T1&finished_at=2027-01-31T10%3A00%3A00%2B08%3A00",
		"type=debit&order_no=QP1&status=FAILED&result_code=E_BALANCE",
		"type=refund&order_no=RF1&refund_of=QP1&status=SUCCESS&result_code=SUCCESS&amount=500",
		"type=refund&refund_of=QP1", "type=agreement_terminated&agreement_no=AG1&at=2026-11-30T08%3A00%3A00%2B08%3A00",
		"type=agreement_terminated&agreement_no=AG1&at=yesterday", "type=credit&order_no=QP1", "order_no=",
		"a=1&a=2", "%zz", "",
	} {
		f.Add(s, fuzzMerchantNo, "1796000000", true, uint8(0))
		f.Add(s, fuzzMerchantNo, "1796000000", false, uint8(1))
	}
	f.Add("order_no=QP1&result_code=SUCCESS&status=SUCCESS", fuzzMerchantNo, "1795999699", true, uint8(0))
	f.Add("order_no=QP1&result_code=SUCCESS&status=SUCCESS", fuzzMerchantNo, "1796000300", true, uint8(0))
	f.Add("order_no=QP1&result_code=SUCCESS&status=SUCCESS", "QPCCB0002", "1796000000", true, uint8(2))
	c := &codec{bankKey: &fuzzKey().PublicKey, merchantNo: fuzzMerchantNo, now: func() time.Time { return fuzzNow }}
	b := &Bank{codec: c, Adapter: &core.Adapter{Code: "CCB", Codec: c, Codes: Codes, Success: "SUCCESS", OrderNotFound: "E_ORDER_NOT_FOUND"}}
	fixed := []error{errCallbackNotForm}
	fixed = append(fixed, core.CallbackErrors...)
	f.Fuzz(func(t *testing.T, body, merchantNo, ts string, sign bool, pick uint8) {
		v, perr := url.ParseQuery(body)
		if !sign || perr != nil {
			n, err := b.ParseCallback(nil, []byte(body))
			if err == nil {
				t.Fatalf("a callback the bank did not sign was accepted as %s: %q", n.Kind, body)
			}
			if !slices.Contains(fixed, err) {
				t.Fatalf("refusal %q is not one of the fixed messages", err)
			}
			return
		}
		v.Set("merchant_no", merchantNo)
		v.Set("timestamp", ts)
		v.Set("nonce", "n1")
		v.Set("sign_type", "RSA2")
		v.Set("sign", bankSign(t, canonical(v)))
		signed := v.Encode()
		n, err := b.ParseCallback(nil, []byte(signed))
		if err != nil {
			if !slices.Contains(fixed, err) {
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
		switch n.Kind {
		case bankadapters.NoticeCharge:
			if typ := v.Get("type"); (typ != "" && typ != "debit") || n.Charge.OrderNo == "" || n.Charge.OrderNo != v.Get("order_no") {
				t.Fatalf("charge notice of order %q from a form of type %q order %q", n.Charge.OrderNo, typ, v.Get("order_no"))
			}
		case bankadapters.NoticeRefund:
			if v.Get("type") != "refund" || n.Refund.RefundNo == "" || n.Refund.RefundNo != v.Get("order_no") || n.Refund.OrderNo != v.Get("refund_of") {
				t.Fatalf("refund notice %q of %q from form %q", n.Refund.RefundNo, n.Refund.OrderNo, signed)
			}
		case bankadapters.NoticeAgreementTerminated:
			if v.Get("type") != "agreement_terminated" || n.AgreementNo == "" || n.AgreementNo != v.Get("agreement_no") || n.At.IsZero() {
				t.Fatalf("agreement notice %q at %v from form %q", n.AgreementNo, n.At, signed)
			}
		default:
			t.Fatalf("notice of kind %q", n.Kind)
		}
		// Change one signed field: the old signature must not verify.
		var names []string
		for k := range v {
			if k != "sign" && v.Get(k) != "" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		k := names[int(pick)%len(names)]
		v.Set(k, v.Get(k)+"x")
		if _, err := b.ParseCallback(nil, []byte(v.Encode())); err == nil {
			t.Fatalf("field %q changed under the old signature was accepted", k)
		}
	})
}
