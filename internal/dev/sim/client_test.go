package sim_test

// A small test-only bank client for both dialects, written from
// docs/banksim.md (not from bankadapters), and the helpers that set up a
// Sim behind a real loopback HTTP server.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// base is where real time (sim.Config.Now) stands in most tests: frozen,
// moved only by env.advanceReal. The banks' clock starts there and /sim/clock
// moves it.
var base = time.Date(2025, 3, 10, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

var (
	keysOnce             sync.Once
	bankKey, platformKey *rsa.PrivateKey
)

// testKeys returns the CCB bank key and the platform's key, generated once.
func testKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if bankKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if platformKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return bankKey, platformKey
}

func publicPEM(t testing.TB, k *rsa.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// codes is the result-code table of docs/banksim.md: reason → json-hmac
// code, form-rsa code.
var codes = map[string][2]string{
	"success":               {"0000", "SUCCESS"},
	"processing":            {"0001", "PROCESSING"},
	"sign_invalid":          {"1001", "E_SIGN"},
	"bad_request":           {"1002", "E_PARAM"},
	"merchant_unknown":      {"1003", "E_MERCHANT"},
	"name_mismatch":         {"2001", "E_NAME"},
	"id_mismatch":           {"2002", "E_IDNO"},
	"phone_mismatch":        {"2003", "E_MOBILE"},
	"card_not_found":        {"2004", "E_CARD"},
	"card_auth_mismatch":    {"2005", "E_CARD_AUTH"},
	"already_bound":         {"2006", "E_BOUND"},
	"card_frozen":           {"2007", "E_FROZEN"},
	"card_closed":           {"2008", "E_CLOSED"},
	"otp_incorrect":         {"3001", "E_SMS_CODE"},
	"otp_expired":           {"3002", "E_SMS_EXPIRED"},
	"otp_locked":            {"3003", "E_SMS_LOCKED"},
	"bind_session_unknown":  {"3004", "E_BIND_SESSION"},
	"insufficient_funds":    {"4001", "E_BALANCE"},
	"single_limit":          {"4002", "E_SINGLE_LIMIT"},
	"daily_limit":           {"4003", "E_DAY_LIMIT"},
	"agreement_invalid":     {"4004", "E_PROTOCOL"},
	"try_tomorrow":          {"4005", "E_RETRY_TOMORROW"},
	"order_not_found":       {"4006", "E_ORDER_NOT_FOUND"},
	"order_conflict":        {"4007", "E_ORDER_CONFLICT"},
	"order_not_refundable":  {"4008", "E_REFUND_ORDER"},
	"refund_window_expired": {"4009", "E_REFUND_EXPIRED"},
	"refund_exceeds":        {"4010", "E_REFUND_AMOUNT"},
	"system_error":          {"9999", "E_SYSTEM"},
}

// env is one Sim served over loopback HTTP, with a client per bank.
type env struct {
	t     testing.TB
	sim   *sim.Sim
	url   string
	http  *http.Client
	banks map[string]*bankClient // ICBC, CCB, CMB as merchant "M-<code>"
	logs  *syncBuffer
	seq   atomic.Int64
	// realNow is the Sim's real time, which requests are signed with;
	// realOffset moves it from base (unless an option gave another clock).
	realNow    func() time.Time
	realOffset atomic.Int64
}

type envOption func(*sim.Config)

func withConfig(f func(*sim.Config)) envOption { return envOption(f) }

// newEnv starts a Sim (real time frozen at base unless an option changes
// it) and registers one merchant per bank over HTTP.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	bk, pk := testKeys(t)
	e := &env{t: t, banks: map[string]*bankClient{}, logs: &syncBuffer{}}
	cfg := sim.Config{
		Now:             func() time.Time { return base.Add(time.Duration(e.realOffset.Load())) },
		AsyncDelay:      20 * time.Millisecond,
		CallbackBackoff: 10 * time.Millisecond,
		BankKeys:        map[string]*rsa.PrivateKey{"CCB": bk},
		Logger:          newJSONLogger(e.logs),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.realNow = cfg.Now
	if e.realNow == nil {
		e.realNow = time.Now
	}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	e.sim, e.url = s, srv.URL
	e.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(e.http.CloseIdleConnections)
	for _, code := range []string{"ICBC", "CCB", "CMB"} {
		e.banks[code] = e.client(code, "M-"+code)
	}
	_ = pk
	return e
}

// client registers merchantNo at bank code (a fresh secret, or the
// platform key) and returns its client.
func (e *env) client(code, merchantNo string) *bankClient {
	e.t.Helper()
	_, pk := testKeys(e.t)
	c := &bankClient{e: e, code: code, merchantNo: merchantNo}
	m := sim.Merchant{BankCode: code, MerchantNo: merchantNo}
	if code == "CCB" {
		c.form = true
		c.key = pk
		c.bankPub = e.bankPublicKey(code)
		m.PublicKeyPEM = publicPEM(e.t, &pk.PublicKey)
	} else {
		c.secret = []byte("secret-" + merchantNo + "-" + strconv.FormatInt(e.seq.Add(1), 10) + "-0123456789")
		m.HMACSecret = string(c.secret)
	}
	e.do("POST", "/sim/merchants", m, http.StatusCreated, nil)
	return c
}

func (e *env) bankPublicKey(code string) *rsa.PublicKey {
	e.t.Helper()
	var banks []struct {
		Code         string `json:"code"`
		PublicKeyPEM string `json:"public_key_pem"`
	}
	e.do("GET", "/sim/banks", nil, http.StatusOK, &banks)
	for _, b := range banks {
		if b.Code == code {
			blk, _ := pem.Decode([]byte(b.PublicKeyPEM))
			if blk == nil {
				e.t.Fatalf("%s publishes no PEM key", code)
			}
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				e.t.Fatal(err)
			}
			return k.(*rsa.PublicKey)
		}
	}
	e.t.Fatalf("bank %s not listed", code)
	return nil
}

// do calls a test-control or carrier endpoint and decodes the answer into
// out (if not nil), failing the test unless the status is want.
func (e *env) do(method, path string, body any, want int, out any) []byte {
	e.t.Helper()
	status, raw := e.try(method, path, body)
	if status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return raw
}

func (e *env) try(method, path string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			js, err := json.Marshal(body)
			if err != nil {
				e.t.Fatal(err)
			}
			rd = bytes.NewReader(js)
		}
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// Cards and accounts.

var cardSeq atomic.Int64

// newCardNumber returns a fresh card number of the bank's BIN for typ.
func newCardNumber(code, typ string) string {
	bins := map[string]map[string]struct {
		prefix string
		n      int
	}{
		"ICBC": {"debit": {"622202", 19}, "credit": {"427020", 16}},
		"CCB":  {"debit": {"621700", 19}, "credit": {"436742", 16}},
		"CMB":  {"debit": {"622588", 16}, "credit": {"439225", 16}},
	}
	b := bins[code][typ]
	n := strconv.FormatInt(cardSeq.Add(1), 10)
	return b.prefix + strings.Repeat("0", b.n-len(b.prefix)-len(n)) + n
}

// openAccount creates an account at code over HTTP and returns it.
func (e *env) openAccount(code, typ string, balance int64, mods ...func(*sim.Account)) sim.Account {
	e.t.Helper()
	n := cardSeq.Add(1)
	a := sim.Account{
		BankCode: code, CardNumber: newCardNumber(code, typ), CardType: typ,
		HolderName: "张三", IDNumber: fmt.Sprintf("1101011990%08d", n), Phone: fmt.Sprintf("139%08d", n),
		Balance: balance,
	}
	if typ == "credit" {
		a.Expiry, a.CVV2 = "1230", "321"
	}
	for _, m := range mods {
		m(&a)
	}
	e.do("POST", "/sim/accounts", a, http.StatusCreated, nil)
	return a
}

type accountView struct {
	sim.Account
	DebitedToday      int64 `json:"debited_today"`
	FailedDebitsToday int   `json:"failed_debits_today"`
	Agreements        []struct {
		AgreementNo string `json:"agreement_no"`
		MerchantNo  string `json:"merchant_no"`
		Status      string `json:"status"`
	} `json:"agreements"`
}

func (e *env) account(card string) accountView {
	e.t.Helper()
	var v accountView
	e.do("GET", "/sim/accounts/"+card, nil, http.StatusOK, &v)
	return v
}

type textMessage struct {
	To     string    `json:"to"`
	Text   string    `json:"text"`
	Code   string    `json:"code"`
	SentAt time.Time `json:"sent_at"`
}

func (e *env) texts(phone string) []textMessage {
	e.t.Helper()
	var out []textMessage
	e.do("GET", "/sim/sms?phone="+url.QueryEscape(phone), nil, http.StatusOK, &out)
	return out
}

type ledgerEntry struct {
	Type        string    `json:"type"`
	BankCode    string    `json:"bank_code"`
	CardNumber  string    `json:"card_number"`
	MerchantNo  string    `json:"merchant_no"`
	OrderNo     string    `json:"order_no"`
	RefundOf    string    `json:"refund_of"`
	AgreementNo string    `json:"agreement_no"`
	Amount      int64     `json:"amount"`
	BankTxnNo   string    `json:"bank_txn_no"`
	At          time.Time `json:"at"`
}

func (e *env) ledger(card string) []ledgerEntry {
	e.t.Helper()
	var out []ledgerEntry
	e.do("GET", "/sim/ledger?card_number="+card, nil, http.StatusOK, &out)
	return out
}

func (e *env) fault(f map[string]any) {
	e.t.Helper()
	e.do("POST", "/sim/faults", f, http.StatusCreated, nil)
}

// advance moves the banks' clock.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	e.do("POST", "/sim/clock", map[string]string{"advance": d.String()}, http.StatusOK, nil)
}

// advanceReal moves real time (and with it the banks' clock, which is real
// time plus an offset).
func (e *env) advanceReal(d time.Duration) { e.realOffset.Add(int64(d)) }

func (e *env) orderNo() string { return fmt.Sprintf("ORD-%d", e.seq.Add(1)) }

// The bank client.

type bankClient struct {
	e          *env
	code       string
	merchantNo string
	form       bool
	secret     []byte          // json-hmac
	key        *rsa.PrivateKey // form-rsa: the platform's key
	bankPub    *rsa.PublicKey  // form-rsa: the bank's key
}

func (c *bankClient) dialect() string {
	if c.form {
		return "form-rsa"
	}
	return "json-hmac"
}

// code is reason's code in c's dialect.
func (c *bankClient) codeOf(reason string) string {
	cs, ok := codes[reason]
	if !ok {
		panic("no reason " + reason)
	}
	if c.form {
		return cs[1]
	}
	return cs[0]
}

// fields are an operation's request fields; empty ones are left out.
type fields struct {
	RequestNo   string `json:"request_no,omitempty"`
	CardNo      string `json:"card_no,omitempty"`
	HolderName  string `json:"holder_name,omitempty"`
	IDType      string `json:"id_type,omitempty"`
	IDNo        string `json:"id_no,omitempty"`
	Phone       string `json:"phone,omitempty"`
	Expiry      string `json:"expiry,omitempty"`
	CVV2        string `json:"cvv2,omitempty"`
	BindRef     string `json:"bind_ref,omitempty"`
	OTP         string `json:"otp,omitempty"`
	OrderNo     string `json:"order_no,omitempty"`
	RefundNo    string `json:"refund_no,omitempty"`
	AgreementNo string `json:"agreement_no,omitempty"`
	Amount      int64  `json:"amount,omitempty"`
	Currency    string `json:"currency,omitempty"`
	Description string `json:"description,omitempty"`
	NotifyURL   string `json:"notify_url,omitempty"`
	Date        string `json:"date,omitempty"`
}

func (f fields) form() url.Values {
	v := url.Values{}
	add := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	add("request_no", f.RequestNo)
	add("card_no", f.CardNo)
	add("holder_name", f.HolderName)
	add("id_type", f.IDType)
	add("id_no", f.IDNo)
	add("phone", f.Phone)
	add("expiry", f.Expiry)
	add("cvv2", f.CVV2)
	add("bind_ref", f.BindRef)
	add("otp", f.OTP)
	add("order_no", f.OrderNo)
	add("refund_no", f.RefundNo)
	add("agreement_no", f.AgreementNo)
	if f.Amount != 0 {
		v.Set("amount", strconv.FormatInt(f.Amount, 10))
	}
	add("currency", f.Currency)
	add("description", f.Description)
	add("notify_url", f.NotifyURL)
	add("date", f.Date)
	return v
}

// answer is a decoded bank answer.
type answer struct {
	HTTPStatus  int
	Signed      bool
	Code        string
	Message     string
	BindRef     string
	AgreementNo string
	Type        string
	RefundNo    string
	OrderNo     string
	RefundOf    string
	Status      string
	ResultCode  string
	Amount      int64
	BankTxnNo   string
	FinishedAt  string
	Entries     []statementEntry
	Final       *bool // statements
	Timestamp   int64 // the signature's (unix seconds)
	Raw         string
}

// statementEntry is one statement entry as either dialect gives it.
type statementEntry struct {
	Type              string
	OrderNo, RefundOf string
	AgreementNo       string
	Amount            int64
	BankTxnNo         string
	FinishedAt        string
}

// debitEntry is the statement entry of a debit.
func debitEntry(order, agreement string, amount int64, txn, finished string) statementEntry {
	return statementEntry{Type: "debit", OrderNo: order, AgreementNo: agreement, Amount: amount, BankTxnNo: txn, FinishedAt: finished}
}

// wire is a signed request ready to send; tests may tamper with it.
type wire struct {
	path   string
	body   []byte
	header http.Header
	form   url.Values // form-rsa: the signed fields
}

// signing tweaks how a request is signed.
type signing struct {
	ts         int64
	nonce      string
	merchantNo string
}

// build signs a request for op with real time and a fresh nonce, unless
// tweak changes them.
func (c *bankClient) build(op string, f fields, tweak ...func(*signing)) wire {
	c.e.t.Helper()
	sg := signing{ts: c.e.realNow().Unix(), nonce: randomNonce(), merchantNo: c.merchantNo}
	for _, tw := range tweak {
		tw(&sg)
	}
	w := wire{path: "/banks/" + c.code + "/" + op, header: http.Header{}}
	ts := strconv.FormatInt(sg.ts, 10)
	if c.form {
		v := f.form()
		v.Set("merchant_no", sg.merchantNo)
		v.Set("timestamp", ts)
		v.Set("nonce", sg.nonce)
		v.Set("sign_type", "RSA2")
		v.Set("sign", rsaSign(c.e.t, c.key, canonical(v)))
		w.form = v
		w.body = []byte(v.Encode())
		w.header.Set("Content-Type", "application/x-www-form-urlencoded")
		return w
	}
	body, err := json.Marshal(f)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w.body = body
	w.header.Set("Content-Type", "application/json")
	w.header.Set("X-Merchant-No", sg.merchantNo)
	w.header.Set("X-Timestamp", ts)
	w.header.Set("X-Nonce", sg.nonce)
	w.header.Set("X-Signature", hmacHex(c.secret, "POST\n"+w.path+"\n"+ts+"\n"+sg.nonce+"\n"+string(body)))
	return w
}

// send posts w and returns the response or the transport error.
func (c *bankClient) send(ctx context.Context, w wire) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.e.url+w.path, bytes.NewReader(w.body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header = w.header.Clone()
	resp, err := c.e.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw, err
}

// call performs op and decodes and verifies the answer.
func (c *bankClient) call(op string, f fields) answer {
	c.e.t.Helper()
	return c.exchange(c.build(op, f))
}

// exchange sends w and decodes the answer, failing the test on a
// transport error or a signature that does not verify.
func (c *bankClient) exchange(w wire) answer {
	c.e.t.Helper()
	status, hdr, raw, err := c.send(context.Background(), w)
	if err != nil {
		c.e.t.Fatalf("%s: %v", w.path, err)
	}
	return c.decode(status, hdr, raw)
}

func (c *bankClient) decode(status int, hdr http.Header, raw []byte) answer {
	t := c.e.t
	t.Helper()
	a := answer{HTTPStatus: status, Raw: string(raw)}
	if c.form {
		v, err := url.ParseQuery(string(raw))
		if err != nil {
			t.Fatalf("answer is not a form: %q", raw)
		}
		if sig := v.Get("sign"); sig != "" {
			if v.Get("sign_type") != "RSA2" {
				t.Errorf("answer sign_type %q", v.Get("sign_type"))
			}
			if err := rsaVerify(c.bankPub, canonical(v), sig); err != nil {
				t.Errorf("answer signature does not verify with the bank's published key: %v", err)
			} else {
				a.Signed = true
			}
		}
		a.Code, a.Message = v.Get("ret_code"), v.Get("ret_msg")
		a.BindRef, a.AgreementNo, a.OrderNo = v.Get("bind_ref"), v.Get("agreement_no"), v.Get("order_no")
		a.Type, a.RefundNo, a.RefundOf = v.Get("type"), v.Get("refund_no"), v.Get("refund_of")
		a.Timestamp, _ = strconv.ParseInt(v.Get("timestamp"), 10, 64)
		switch f := v.Get("final"); f {
		case "true", "false":
			final := f == "true"
			a.Final = &final
		case "":
		default:
			t.Fatalf("final %q: want true or false", f)
		}
		a.Status, a.ResultCode, a.BankTxnNo, a.FinishedAt = v.Get("status"), v.Get("result_code"), v.Get("bank_txn_no"), v.Get("finished_at")
		if s := v.Get("amount"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("amount %q", s)
			}
			a.Amount = n
		}
		if s := v.Get("entries"); s != "" {
			for _, line := range strings.Split(s, "\n") {
				p := strings.Split(line, "|")
				if len(p) != 7 {
					t.Fatalf("statement line %q: want 7 fields", line)
				}
				n, err := strconv.ParseInt(p[2], 10, 64)
				if err != nil {
					t.Fatalf("statement line %q: amount", line)
				}
				a.Entries = append(a.Entries, statementEntry{Type: p[5], OrderNo: p[0], RefundOf: p[6], AgreementNo: p[1],
					Amount: n, BankTxnNo: p[3], FinishedAt: p[4]})
			}
		}
		return a
	}
	if sig := hdr.Get("X-Signature"); sig != "" {
		want := hmacHex(c.secret, strconv.Itoa(status)+"\n"+hdr.Get("X-Timestamp")+"\n"+hdr.Get("X-Nonce")+"\n"+string(raw))
		if !hmac.Equal([]byte(sig), []byte(want)) {
			t.Errorf("answer signature does not verify")
		} else {
			a.Signed = true
		}
		if n := hdr.Get("X-Nonce"); len(n) < 16 {
			t.Errorf("answer nonce %q too short", n)
		}
		a.Timestamp, _ = strconv.ParseInt(hdr.Get("X-Timestamp"), 10, 64)
	}
	var js struct {
		Code        string `json:"code"`
		Message     string `json:"message"`
		BindRef     string `json:"bind_ref"`
		AgreementNo string `json:"agreement_no"`
		Type        string `json:"type"`
		RefundNo    string `json:"refund_no"`
		OrderNo     string `json:"order_no"`
		RefundOf    string `json:"refund_of"`
		Status      string `json:"status"`
		ResultCode  string `json:"result_code"`
		Amount      int64  `json:"amount"`
		BankTxnNo   string `json:"bank_txn_no"`
		FinishedAt  string `json:"finished_at"`
		Final       *bool  `json:"final"`
		Entries     []struct {
			Type        string `json:"type"`
			OrderNo     string `json:"order_no"`
			RefundOf    string `json:"refund_of"`
			AgreementNo string `json:"agreement_no"`
			Amount      int64  `json:"amount"`
			Status      string `json:"status"`
			BankTxnNo   string `json:"bank_txn_no"`
			FinishedAt  string `json:"finished_at"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatalf("answer is not JSON: %q", raw)
	}
	a.Code, a.Message, a.BindRef, a.AgreementNo = js.Code, js.Message, js.BindRef, js.AgreementNo
	a.OrderNo, a.Status, a.ResultCode, a.Amount = js.OrderNo, js.Status, js.ResultCode, js.Amount
	a.BankTxnNo, a.FinishedAt = js.BankTxnNo, js.FinishedAt
	a.Type, a.RefundNo, a.RefundOf, a.Final = js.Type, js.RefundNo, js.RefundOf, js.Final
	for _, en := range js.Entries {
		if en.Status != "SUCCESS" {
			t.Errorf("statement entry status %q", en.Status)
		}
		a.Entries = append(a.Entries, statementEntry{Type: en.Type, OrderNo: en.OrderNo, RefundOf: en.RefundOf,
			AgreementNo: en.AgreementNo, Amount: en.Amount, BankTxnNo: en.BankTxnNo, FinishedAt: en.FinishedAt})
	}
	return a
}

// want fails the test unless a is a signed HTTP 200 answer with reason's
// code.
func (c *bankClient) want(a answer, reason string) {
	c.e.t.Helper()
	if a.HTTPStatus != http.StatusOK || a.Code != c.codeOf(reason) || !a.Signed {
		c.e.t.Fatalf("%s: got HTTP %d code %q signed=%v (%s), want 200 %s (%s)",
			c.code, a.HTTPStatus, a.Code, a.Signed, a.Message, c.codeOf(reason), reason)
	}
}

// bindApply sends bind_apply with the account's own elements.
func (c *bankClient) bindApply(a sim.Account, mod ...func(*fields)) answer {
	c.e.t.Helper()
	f := fields{
		RequestNo: fmt.Sprintf("REQ-%d", c.e.seq.Add(1)), CardNo: a.CardNumber, HolderName: a.HolderName,
		IDType: "01", IDNo: a.IDNumber, Phone: a.Phone, Expiry: a.Expiry, CVV2: a.CVV2,
	}
	for _, m := range mod {
		m(&f)
	}
	return c.call("bind_apply", f)
}

// latestCode is the code of the newest text to phone.
func (e *env) latestCode(phone string) string {
	e.t.Helper()
	ts := e.texts(phone)
	if len(ts) == 0 {
		e.t.Fatalf("no text to %s", phone)
	}
	return ts[0].Code
}

// bind binds a through the whole flow and returns the agreement number.
func (c *bankClient) bind(a sim.Account) string {
	c.e.t.Helper()
	ap := c.bindApply(a)
	c.want(ap, "success")
	conf := c.call("bind_confirm", fields{BindRef: ap.BindRef, OTP: c.e.latestCode(a.Phone)})
	c.want(conf, "success")
	if conf.AgreementNo == "" {
		c.e.t.Fatal("bind_confirm answered no agreement_no")
	}
	return conf.AgreementNo
}

func (c *bankClient) charge(order, agreement string, amount int64) answer {
	c.e.t.Helper()
	return c.call("charge", fields{OrderNo: order, AgreementNo: agreement, Amount: amount, Currency: "CNY", Description: "test"})
}

// refund sends a refund of amount from order (with notify_url at async
// banks, where it is required).
func (c *bankClient) refund(refundNo, order string, amount int64, notify string) answer {
	c.e.t.Helper()
	return c.call("refund", fields{RefundNo: refundNo, OrderNo: order, Amount: amount, Currency: "CNY", NotifyURL: notify})
}

func (c *bankClient) query(order string) answer {
	c.e.t.Helper()
	return c.call("query", fields{OrderNo: order})
}

// Signing primitives, straight from docs/banksim.md.

func hmacHex(secret []byte, msg string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func canonical(v url.Values) string {
	var keys []string
	for k, vs := range v {
		if k != "sign" && len(vs) > 0 && vs[0] != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + v.Get(k)
	}
	return strings.Join(parts, "&")
}

func rsaSign(t testing.TB, k *rsa.PrivateKey, msg string) string {
	t.Helper()
	d := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func rsaVerify(pub *rsa.PublicKey, msg, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return err
	}
	d := sha256.Sum256([]byte(msg))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], raw)
}

func randomNonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) lines() []string {
	return slices.DeleteFunc(strings.Split(b.String(), "\n"), func(s string) bool { return s == "" })
}
