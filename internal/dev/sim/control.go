package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// decodeControl decodes a test-control body strictly: unknown fields are
// errors, so a typo in a test's set-up does not pass silently.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body unreadable or over 1 MiB")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

type bankView struct {
	Code         string  `json:"code"`
	Name         string  `json:"name"`
	Dialect      Dialect `json:"dialect"`
	Async        bool    `json:"async"`
	BINs         []bin   `json:"bins"`
	PublicKeyPEM string  `json:"public_key_pem,omitempty"`
}

func (s *Sim) serveBanks(w http.ResponseWriter, _ *http.Request) {
	out := make([]bankView, 0, len(s.bankList))
	for _, b := range s.bankList {
		out = append(out, bankView{b.code, b.name, b.dialect, b.async, b.bins, b.pubPEM})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) servePostMerchant(w http.ResponseWriter, r *http.Request) {
	var m Merchant
	if !decodeControl(w, r, &m) {
		return
	}
	if err := s.RegisterMerchant(m); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		BankCode   string `json:"bank_code"`
		MerchantNo string `json:"merchant_no"`
	}{m.BankCode, m.MerchantNo})
}

// accountView is GET /sim/accounts/{card_number}: the account with its
// effective limits, the day's counters and its agreements.
type accountView struct {
	Account
	DebitedToday      int64           `json:"debited_today"`
	FailedDebitsToday int             `json:"failed_debits_today"`
	Agreements        []agreementView `json:"agreements"`
}

type agreementView struct {
	AgreementNo string `json:"agreement_no"`
	MerchantNo  string `json:"merchant_no"`
	Status      string `json:"status"`
}

func (s *Sim) accountView(c *account) accountView {
	today := s.today()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollDay(today)
	v := accountView{Account: c.a, DebitedToday: c.debited, FailedDebitsToday: c.failed, Agreements: []agreementView{}}
	for _, ag := range c.all {
		st := "terminated"
		if ag.live {
			st = "active"
		}
		v.Agreements = append(v.Agreements, agreementView{ag.no, ag.merchantNo, st})
	}
	return v
}

func (s *Sim) servePostAccount(w http.ResponseWriter, r *http.Request) {
	var a Account
	if !decodeControl(w, r, &a) {
		return
	}
	if err := s.PutAccount(a); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, s.accountView(s.account(a.CardNumber)))
}

func (s *Sim) serveGetAccount(w http.ResponseWriter, r *http.Request) {
	c := s.account(r.PathValue("card_number"))
	if c == nil {
		writeError(w, http.StatusNotFound, "no such card")
		return
	}
	writeJSON(w, http.StatusOK, s.accountView(c))
}

func (s *Sim) serveLedger(w http.ResponseWriter, r *http.Request) {
	card := r.URL.Query().Get("card_number")
	writeJSON(w, http.StatusOK, s.ledger(func(e *ledgerEntry) bool { return card == "" || e.CardNumber == card }))
}

func (s *Sim) servePostFault(w http.ResponseWriter, r *http.Request) {
	var in struct {
		BankCode  string `json:"bank_code"`
		Operation string `json:"operation"`
		Mode      string `json:"mode"`
		Code      string `json:"code"`
		Count     *int   `json:"count"`
		Apply     bool   `json:"apply"`
		Amount    int64  `json:"amount"`
	}
	if !decodeControl(w, r, &in) {
		return
	}
	f := Fault{BankCode: in.BankCode, Operation: in.Operation, Mode: FaultMode(in.Mode), Code: in.Code, Count: 1, Apply: in.Apply,
		Amount: in.Amount}
	if in.Count != nil {
		f.Count = *in.Count
	}
	f, err := s.AddFault(f)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, f)
}

func (s *Sim) serveGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.faults.snapshot())
}

func (s *Sim) serveDeleteFaults(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.ClearFaults(q.Get("bank_code"), q.Get("operation"))
	w.WriteHeader(http.StatusNoContent)
}

type clockView struct {
	Now string `json:"now"`
}

func (s *Sim) serveGetClock(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, clockView{s.Now().In(shanghai).Format(time.RFC3339Nano)})
}

func (s *Sim) servePostClock(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Now     string `json:"now"`
		Advance string `json:"advance"`
	}
	if !decodeControl(w, r, &in) {
		return
	}
	switch {
	case (in.Now == "") == (in.Advance == ""):
		writeError(w, http.StatusBadRequest, "want exactly one of now and advance")
		return
	case in.Now != "":
		t, err := time.Parse(time.RFC3339Nano, in.Now)
		if err != nil {
			writeError(w, http.StatusBadRequest, "now: want RFC 3339")
			return
		}
		s.SetNow(t)
	default:
		d, err := time.ParseDuration(in.Advance)
		if err != nil {
			writeError(w, http.StatusBadRequest, `advance: want a Go duration such as "24h"`)
			return
		}
		s.Advance(d)
	}
	s.serveGetClock(w, r)
}

// textMessage is one SMS in the inbox.
type textMessage struct {
	To     string    `json:"to"`
	Text   string    `json:"text"`
	Code   string    `json:"code"`
	SentAt time.Time `json:"sent_at"`
}

// Sensitive returns every sensitive value banksim holds, each with its
// kind ("PAN", "ID number", "CVV2", "expiry", "OTP"): its accounts' card
// numbers, ID numbers, CVV2s and expiry dates, and the verification codes
// in its inbox (its own and the carrier's). A test scans what the system
// under test stored and logged for them.
//
// A text's code counts only when the text calls it a verification code
// ("验证码" before it), as every bank text and quickpay's consent text do:
// the first digits of a pre-debit notice are a date's year, which the
// system rightly stores.
func (s *Sim) Sensitive() map[string]string {
	out := map[string]string{}
	add := func(kind, v string) {
		if v != "" {
			out[v] = kind
		}
	}
	s.accountsMu.RLock()
	for _, acct := range s.accounts {
		acct.mu.Lock()
		a := acct.a
		acct.mu.Unlock()
		add("PAN", a.CardNumber)
		add("ID number", a.IDNumber)
		add("CVV2", a.CVV2)
		add("expiry", a.Expiry)
	}
	s.accountsMu.RUnlock()
	s.sms.mu.Lock()
	for _, texts := range s.sms.byPhone {
		for _, m := range texts {
			if isVerificationCode(m) {
				add("OTP", m.Code)
			}
		}
	}
	s.sms.mu.Unlock()
	return out
}

// isVerificationCode reports whether m's text calls its code a
// verification code.
func isVerificationCode(m textMessage) bool {
	_, after, ok := strings.Cut(m.Text, "验证码")
	return ok && m.Code != "" && strings.Contains(after, m.Code)
}

// inbox keeps the newest smsKeptPerPhone texts per phone, oldest first.
type inbox struct {
	mu      sync.Mutex
	byPhone map[string][]textMessage
}

func (in *inbox) add(m textMessage) {
	in.mu.Lock()
	defer in.mu.Unlock()
	l := append(in.byPhone[m.To], m)
	if len(l) > smsKeptPerPhone {
		l = slices.Clone(l[len(l)-smsKeptPerPhone:])
	}
	in.byPhone[m.To] = l
}

// list returns phone's texts, newest first.
func (in *inbox) list(phone string) []textMessage {
	in.mu.Lock()
	out := slices.Clone(in.byPhone[phone])
	in.mu.Unlock()
	slices.Reverse(out)
	if out == nil {
		out = []textMessage{}
	}
	return out
}

func (s *Sim) serveGetSMS(w http.ResponseWriter, r *http.Request) {
	phone := r.URL.Query().Get("phone")
	if phone == "" {
		writeError(w, http.StatusBadRequest, "phone: required")
		return
	}
	writeJSON(w, http.StatusOK, s.sms.list(phone))
}

// serveCarrierSMS is the SMS carrier quickpay sends its own texts through.
func (s *Sim) serveCarrierSMS(w http.ResponseWriter, r *http.Request) {
	var in struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}
	if !decodeControl(w, r, &in) {
		return
	}
	if in.To == "" || in.Text == "" {
		writeError(w, http.StatusBadRequest, "to and text: required")
		return
	}
	id := "sms_" + strconv.FormatUint(s.seq.Add(1), 10)
	s.sms.add(textMessage{To: in.To, Text: in.Text, Code: firstCode(in.Text), SentAt: s.Now().In(shanghai)})
	s.log.Debug("carrier text accepted", "id", id)
	writeJSON(w, http.StatusAccepted, struct {
		ID string `json:"id"`
	}{id})
}

// firstCode is the first run of 4 to 8 ASCII digits in text, or "".
func firstCode(text string) string {
	for i := 0; i < len(text); {
		if text[i] < '0' || text[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(text) && text[j] >= '0' && text[j] <= '9' {
			j++
		}
		if n := j - i; n >= 4 && n <= 8 {
			return text[i:j]
		}
		i = j
	}
	return ""
}
