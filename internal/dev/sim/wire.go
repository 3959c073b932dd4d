package sim

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

var randReader = rand.Reader

// request holds the fields of every operation; each operation reads its own.
// JSON bodies decode into it by tag, form bodies by fillForm.
type request struct {
	RequestNo   string `json:"request_no"`
	CardNo      string `json:"card_no"`
	HolderName  string `json:"holder_name"`
	IDType      string `json:"id_type"`
	IDNo        string `json:"id_no"`
	Phone       string `json:"phone"`
	Expiry      string `json:"expiry"`
	CVV2        string `json:"cvv2"`
	BindRef     string `json:"bind_ref"`
	OTP         string `json:"otp"`
	OrderNo     string `json:"order_no"`
	RefundNo    string `json:"refund_no"`
	AgreementNo string `json:"agreement_no"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Description string `json:"description"`
	NotifyURL   string `json:"notify_url"`
	Date        string `json:"date"`
}

// fillForm copies form fields into r. Envelope fields (merchant_no,
// timestamp, nonce, sign_type, sign) and unknown fields are ignored.
func (r *request) fillForm(v url.Values) error {
	for k, vs := range v {
		val := vs[0]
		switch k {
		case "request_no":
			r.RequestNo = val
		case "card_no":
			r.CardNo = val
		case "holder_name":
			r.HolderName = val
		case "id_type":
			r.IDType = val
		case "id_no":
			r.IDNo = val
		case "phone":
			r.Phone = val
		case "expiry":
			r.Expiry = val
		case "cvv2":
			r.CVV2 = val
		case "bind_ref":
			r.BindRef = val
		case "otp":
			r.OTP = val
		case "order_no":
			r.OrderNo = val
		case "refund_no":
			r.RefundNo = val
		case "agreement_no":
			r.AgreementNo = val
		case "amount":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return errors.New("amount: want integer fen")
			}
			r.Amount = n
		case "currency":
			r.Currency = val
		case "description":
			r.Description = val
		case "notify_url":
			r.NotifyURL = val
		case "date":
			r.Date = val
		}
	}
	return nil
}

// result is an operation's answer before a dialect encodes it. Fields left
// at their zero value are left out of the answer.
type result struct {
	reason      reason
	msg         string // overrides the reason's message
	bindRef     string
	agreementNo string
	typ         string // query: debit or refund
	refundNo    string
	orderNo     string
	refundOf    string // query of a refund: its debit
	status      chargeStatus
	outcome     reason // query: the order's result_code
	hasOutcome  bool
	amount      int64
	bankTxnNo   string
	finishedAt  string
	// statement answers: entries (possibly none) and whether the day has
	// closed.
	statement bool
	entries   []ledgerEntry
	final     bool
}

func fail(r reason, msg string) *result { return &result{reason: r, msg: msg} }

func (r *result) message() string {
	if r.msg != "" {
		return r.msg
	}
	return reasons[r.reason].msg
}

// rejection is a request refused before its operation runs.
type rejection struct {
	status int
	reason reason
	msg    string
}

func reject(status int, r reason, msg string) *rejection { return &rejection{status, r, msg} }

// authJSON checks a json-hmac request's headers and signature. m is the
// merchant when known, also on rejection (the answer is then signed).
func (s *Sim) authJSON(b *bank, r *http.Request, body []byte) (*merchant, *rejection) {
	mno := r.Header.Get("X-Merchant-No")
	if mno == "" {
		return nil, reject(http.StatusBadRequest, rBadRequest, "X-Merchant-No missing")
	}
	m := s.merchant(b, mno)
	if m == nil {
		return nil, reject(http.StatusUnauthorized, rMerchantUnknown, "")
	}
	ts, nonce := r.Header.Get("X-Timestamp"), r.Header.Get("X-Nonce")
	tsv, rej := checkEnvelope(ts, nonce)
	if rej != nil {
		return m, rej
	}
	sig, err := hex.DecodeString(r.Header.Get("X-Signature"))
	if err != nil || len(sig) != sha256.Size {
		return m, reject(http.StatusUnauthorized, rSignInvalid, "X-Signature: want hex HMAC-SHA256")
	}
	mac := hmac.New(sha256.New, m.secret)
	mac.Write([]byte("POST\n" + r.URL.Path + "\n" + ts + "\n" + nonce + "\n"))
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sig) {
		return m, reject(http.StatusUnauthorized, rSignInvalid, "")
	}
	return m, s.checkFresh(b, m, tsv, nonce)
}

// authForm parses and checks a form-rsa request.
func (s *Sim) authForm(b *bank, body []byte) (*merchant, url.Values, *rejection) {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, nil, reject(http.StatusBadRequest, rBadRequest, "body is not form-encoded")
	}
	for k, vs := range v {
		if len(vs) != 1 {
			return nil, nil, reject(http.StatusBadRequest, rBadRequest, "field "+k+" repeated")
		}
	}
	mno := v.Get("merchant_no")
	if mno == "" {
		return nil, nil, reject(http.StatusBadRequest, rBadRequest, "merchant_no missing")
	}
	m := s.merchant(b, mno)
	if m == nil {
		return nil, nil, reject(http.StatusUnauthorized, rMerchantUnknown, "")
	}
	if v.Get("sign_type") != "RSA2" {
		return m, nil, reject(http.StatusBadRequest, rBadRequest, "sign_type: want RSA2")
	}
	ts, nonce := v.Get("timestamp"), v.Get("nonce")
	tsv, rej := checkEnvelope(ts, nonce)
	if rej != nil {
		return m, nil, rej
	}
	sig, err := base64.StdEncoding.DecodeString(v.Get("sign"))
	if err != nil {
		return m, nil, reject(http.StatusUnauthorized, rSignInvalid, "sign: want base64")
	}
	digest := sha256.Sum256([]byte(canonical(v)))
	if rsa.VerifyPKCS1v15(m.pub, crypto.SHA256, digest[:], sig) != nil {
		return m, nil, reject(http.StatusUnauthorized, rSignInvalid, "")
	}
	return m, v, s.checkFresh(b, m, tsv, nonce)
}

// checkEnvelope checks the timestamp and nonce formats.
func checkEnvelope(ts, nonce string) (int64, *rejection) {
	tsv, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, reject(http.StatusBadRequest, rBadRequest, "timestamp: want unix seconds")
	}
	if len(nonce) < nonceMinLen || len(nonce) > nonceMaxLen || !printableASCII(nonce) {
		return 0, reject(http.StatusBadRequest, rBadRequest, "nonce: want 16-64 printable ASCII characters")
	}
	return tsv, nil
}

// checkFresh refuses a stale timestamp or a replayed nonce, both on real
// time (the bank's moved clock does not move them). It runs after the
// signature checks out, so a forger cannot burn a nonce.
func (s *Sim) checkFresh(b *bank, m *merchant, ts int64, nonce string) *rejection {
	now := s.realNow()
	if d := now.Unix() - ts; d > timestampSkew || d < -timestampSkew {
		return reject(http.StatusUnauthorized, rSignInvalid, "timestamp more than 300 s from real time")
	}
	if !s.nonces.add(b.code, m.no, nonce, now) {
		return reject(http.StatusUnauthorized, rSignInvalid, "nonce already used")
	}
	return nil
}

// canonical is the form-rsa signing string: every field but sign with a
// non-empty value, sorted by name, as k=v joined by &, values raw.
func canonical(v url.Values) string {
	keys := make([]string, 0, len(v))
	n := 0
	for k, vs := range v {
		if k != "sign" && len(vs) > 0 && vs[0] != "" {
			keys = append(keys, k)
			n += len(k) + len(vs[0]) + 2
		}
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.Grow(n)
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte('&')
		}
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(v[k][0])
	}
	return sb.String()
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeAnswer encodes res in b's dialect, signs it and writes it. A
// json-hmac answer is signed only when the merchant is known.
func (s *Sim) writeAnswer(w http.ResponseWriter, b *bank, m *merchant, status int, res *result) {
	switch b.dialect {
	case DialectFormRSA:
		body := s.formAnswer(b, res)
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	case DialectJSONHMAC:
		s.jsonAnswer(w, m, status, res)
	default:
		panic(fmt.Sprintf("banksim: %s speaks dialect %q, which no answer writer writes", b.code, b.dialect))
	}
}

// jsonAnswer writes res as a json-hmac answer, signed when m is known.
func (s *Sim) jsonAnswer(w http.ResponseWriter, m *merchant, status int, res *result) {
	body := jsonAnswerBody(res)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if m != nil {
		ts, nonce := strconv.FormatInt(s.realNow().Unix(), 10), newNonce()
		h.Set("X-Timestamp", ts)
		h.Set("X-Nonce", nonce)
		h.Set("X-Signature", hmacHex(m.secret, strconv.Itoa(status)+"\n"+ts+"\n"+nonce+"\n", body))
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func hmacHex(secret []byte, prefix string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(prefix))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// fields lists res's set fields in a fixed order, as strings for forms.
// Statement entries are rendered by the caller's dialect.
func (res *result) fields(d Dialect, visit func(k, v string, num bool)) {
	str := func(k, v string) {
		if v != "" {
			visit(k, v, false)
		}
	}
	str("bind_ref", res.bindRef)
	str("agreement_no", res.agreementNo)
	str("type", res.typ)
	str("refund_no", res.refundNo)
	str("order_no", res.orderNo)
	str("refund_of", res.refundOf)
	str("status", string(res.status))
	if res.hasOutcome {
		visit("result_code", res.outcome.code(d), false)
	}
	if res.amount != 0 {
		visit("amount", strconv.FormatInt(res.amount, 10), true)
	}
	str("bank_txn_no", res.bankTxnNo)
	str("finished_at", res.finishedAt)
}

func jsonAnswerBody(res *result) []byte {
	const d = DialectJSONHMAC
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"code":`...)
	buf = appendJSONString(buf, res.reason.code(d))
	buf = append(buf, `,"message":`...)
	buf = appendJSONString(buf, res.message())
	res.fields(d, func(k, v string, num bool) {
		buf = append(buf, ',', '"')
		buf = append(buf, k...)
		buf = append(buf, '"', ':')
		if num {
			buf = append(buf, v...)
		} else {
			buf = appendJSONString(buf, v)
		}
	})
	if res.statement {
		type jsonEntry struct {
			Type        string       `json:"type"`
			OrderNo     string       `json:"order_no"`
			RefundOf    string       `json:"refund_of,omitempty"`
			AgreementNo string       `json:"agreement_no"`
			Amount      int64        `json:"amount"`
			Status      chargeStatus `json:"status"`
			BankTxnNo   string       `json:"bank_txn_no"`
			FinishedAt  string       `json:"finished_at"`
		}
		es := make([]jsonEntry, len(res.entries))
		for i, e := range res.entries {
			es[i] = jsonEntry{e.Type, e.OrderNo, e.RefundOf, e.AgreementNo, e.Amount, chargeSuccess, e.BankTxnNo, bankTime(e.At)}
		}
		js, _ := json.Marshal(es)
		buf = append(buf, `,"entries":`...)
		buf = append(buf, js...)
		buf = strconv.AppendBool(append(buf, `,"final":`...), res.final)
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string. UTF-8 passes through; the
// characters JSON requires escaping are escaped.
func appendJSONString(buf []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}

// formAnswer encodes res as a form signed by the bank.
func (s *Sim) formAnswer(b *bank, res *result) string {
	v := url.Values{
		"ret_code":  {res.reason.code(DialectFormRSA)},
		"ret_msg":   {res.message()},
		"timestamp": {strconv.FormatInt(s.realNow().Unix(), 10)},
		"nonce":     {newNonce()},
		"sign_type": {"RSA2"},
	}
	res.fields(DialectFormRSA, func(k, val string, _ bool) { v[k] = []string{val} })
	if res.statement {
		v["final"] = []string{strconv.FormatBool(res.final)}
	}
	if len(res.entries) > 0 {
		var sb strings.Builder
		for i, e := range res.entries {
			if i > 0 {
				sb.WriteByte('\n')
			}
			fmt.Fprintf(&sb, "%s|%s|%d|%s|%s|%s|%s", e.OrderNo, e.AgreementNo, e.Amount, e.BankTxnNo, bankTime(e.At),
				e.Type, e.RefundOf)
		}
		v["entries"] = []string{sb.String()}
	}
	v["sign"] = []string{b.sign(canonical(v))}
	return v.Encode()
}

// sign is base64(RSA-SHA256 PKCS#1 v1.5) under the bank's key.
func (b *bank) sign(msg string) string {
	digest := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(nil, b.key, crypto.SHA256, digest[:])
	if err != nil {
		// Only a broken key gets here, and New checked the key.
		panic(fmt.Sprintf("banksim: %s signing key: %v", b.code, err))
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// bankTime formats a bank timestamp: RFC 3339 in Asia/Shanghai, seconds.
func bankTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(shanghai).Format(time.RFC3339)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validIdentifier: merchant, request, order, agreement and bind numbers.
func validIdentifier(s string) bool {
	return s != "" && len(s) <= maxIdentifierLen && printableASCII(s)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError answers test-control and carrier errors: {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}
