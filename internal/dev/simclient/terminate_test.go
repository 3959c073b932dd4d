package simclient

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// TestAgainstBanksim drives a real banksim: ConnectPlatform registers the
// notify URLs it is given, the ledger types a debit and its refund, and
// TerminateAgreement ends an agreement whose merchant is then notified.
func TestAgainstBanksim(t *testing.T) {
	ctx := context.Background()
	s, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	c := NewClient(srv.URL)

	notices := make(chan *http.Request, 8)
	bodies := make(chan []byte, 8)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		notices <- r
		bodies <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)

	platformKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&platformKey.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	channels, err := c.ConnectPlatform(ctx, func(code string) string { return "QP" + code },
		func(context.Context, string) (string, error) { return pub, nil },
		WithNotifyURL(func(code string) string { return rcv.URL + "/callbacks/banks/" + code }))
	if err != nil {
		t.Fatal(err)
	}
	secret := channels["ICBC"]["hmac_secret"].(string)

	// A json-hmac call, signed as docs/banksim.md says.
	call := func(op string, fields map[string]any) map[string]any {
		t.Helper()
		body, _ := json.Marshal(fields)
		path := "/banks/ICBC/" + op
		ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), hex.EncodeToString(randBytes(t, 12))
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Merchant-No", "QPICBC")
		req.Header.Set("X-Timestamp", ts)
		req.Header.Set("X-Nonce", nonce)
		req.Header.Set("X-Signature", hmacHex(secret, "POST\n"+path+"\n"+ts+"\n"+nonce+"\n"+string(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out["code"] != "0000" {
			t.Fatalf("%s: %v %v", op, out, err)
		}
		return out
	}
	card := "6222020000000000017"
	if err := c.PutAccount(ctx, Account{BankCode: "ICBC", CardNumber: card, HolderName: "张三", IDNumber: "110101199003070017",
		Phone: "13800000017", Balance: 5000}); err != nil {
		t.Fatal(err)
	}
	ap := call("bind_apply", map[string]any{"request_no": "REQ1", "card_no": card, "holder_name": "张三", "id_type": "01",
		"id_no": "110101199003070017", "phone": "13800000017"})
	texts, err := c.SMS(ctx, "13800000017")
	if err != nil || len(texts) != 1 {
		t.Fatalf("texts %v %v", texts, err)
	}
	agr := call("bind_confirm", map[string]any{"bind_ref": ap["bind_ref"], "otp": texts[0].Code})["agreement_no"].(string)
	call("charge", map[string]any{"order_no": "O1", "agreement_no": agr, "amount": 1200, "currency": "CNY", "description": "t"})
	call("refund", map[string]any{"refund_no": "RF1", "order_no": "O1", "amount": 200, "currency": "CNY"})

	l, err := c.Ledger(ctx, card)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Type != EntryDebit || l[0].OrderNo != "O1" || l[0].RefundOf != "" ||
		l[1].Type != EntryRefund || l[1].OrderNo != "RF1" || l[1].RefundOf != "O1" || l[1].Amount != 200 || l[1].AgreementNo != agr {
		t.Fatalf("ledger %v", l)
	}
	if s := l[1].String(); !strings.Contains(s, "refund") || !strings.Contains(s, "of O1") || strings.Contains(s, card) {
		t.Errorf("printed refund entry %s", s)
	}

	ended, err := c.TerminateAgreement(ctx, card, "QPICBC")
	if err != nil || len(ended) != 1 || ended[0] != (Terminated{BankCode: "ICBC", MerchantNo: "QPICBC", AgreementNo: agr}) {
		t.Fatalf("TerminateAgreement = %v, %v", ended, err)
	}
	select {
	case r := <-notices:
		body := <-bodies
		h := r.Header
		if r.URL.Path != "/callbacks/banks/ICBC" || h.Get("X-Merchant-No") != "QPICBC" ||
			h.Get("X-Signature") != hmacHex(secret, "CALLBACK\n"+h.Get("X-Timestamp")+"\n"+h.Get("X-Nonce")+"\n"+string(body)) {
			t.Fatalf("notice to %s with headers %v does not verify", r.URL.Path, h)
		}
		var n struct{ Type, AgreementNo, At string }
		if err := json.Unmarshal(body, &n); err != nil || n.Type != "agreement_terminated" || !strings.Contains(string(body), agr) {
			t.Errorf("notice %s", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no agreement_terminated notice within 10 s")
	}
	if again, err := c.TerminateAgreement(ctx, card, ""); err != nil || len(again) != 0 {
		t.Errorf("terminating again: %v, %v", again, err)
	}
	unknown := "6222029999999999999"
	if _, err := c.TerminateAgreement(ctx, unknown, ""); err == nil || strings.Contains(err.Error(), unknown) {
		t.Errorf("unknown card: %v (want an error without the card number)", err)
	}
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}
