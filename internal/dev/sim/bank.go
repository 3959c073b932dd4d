package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// account is a card at a bank. mu guards everything but bank.
type account struct {
	mu      sync.Mutex
	bank    *bank
	a       Account
	live    map[string]*agreement // merchant_no → the live agreement
	all     []*agreement          // every agreement ever made, oldest first
	day     string                // the day debited and failed count for
	debited int64                 // successful debits on day, fen
	failed  int                   // failed debits on day
	ledger  []ledgerEntry
}

// rollDay resets the day's counters when the bank's date has moved on.
func (c *account) rollDay(today string) {
	if c.day != today {
		c.day, c.debited, c.failed = today, 0, 0
	}
}

// agreement is a quick-pay agreement between a card and a platform
// merchant. live is guarded by card.mu.
type agreement struct {
	no         string
	bank       *bank
	merchantNo string
	card       *account
	live       bool
}

// ledgerEntry is money the bank moved: a debit, or a refund (OrderNo its
// refund number, RefundOf the debit's order number).
type ledgerEntry struct {
	Type        string    `json:"type"`
	BankCode    string    `json:"bank_code"`
	CardNumber  string    `json:"card_number"`
	MerchantNo  string    `json:"merchant_no"`
	OrderNo     string    `json:"order_no"`
	RefundOf    string    `json:"refund_of,omitempty"`
	AgreementNo string    `json:"agreement_no"`
	Amount      int64     `json:"amount"`
	BankTxnNo   string    `json:"bank_txn_no"`
	At          time.Time `json:"at"`
	seq         uint64
}

type sessionState uint8

const (
	sessionPending sessionState = iota
	sessionConfirmed
	sessionLocked
)

// bindSession is one bind_apply awaiting its OTP. mu guards the mutable
// fields (code, issued, wrong, state).
type bindSession struct {
	mu         sync.Mutex
	ref        string
	bank       *bank
	merchantNo string
	card       *account
	code       string
	issued     time.Time
	wrong      int
	state      sessionState
	agreement  *agreement // once confirmed
}

type requestKey struct{ bank, merchant, requestNo string }

// PutAccount creates a card account, or replaces the attributes of an
// existing one (elements, balance, limits, status) keeping its agreements,
// ledger and the day's counters. It fails for an unknown bank, a card
// number that matches none of the bank's BINs, a card type against the
// BIN, a credit card without expiry (MMYY) or CVV2 (3 digits), a missing
// element, a negative amount or an unknown status.
func (s *Sim) PutAccount(a Account) error {
	b := s.banks[a.BankCode]
	if b == nil {
		return errors.New("bank_code: unknown bank")
	}
	if !allDigits(a.CardNumber) {
		return errors.New("card_number: want digits")
	}
	bn, ok := b.binOf(a.CardNumber)
	if !ok {
		return errors.New("card_number: no BIN of " + b.code + " matches its prefix and length")
	}
	switch a.CardType {
	case "":
		a.CardType = bn.CardType
	case bn.CardType:
	default:
		return errors.New("card_type: the card's BIN is " + bn.CardType)
	}
	switch {
	case a.HolderName == "":
		return errors.New("holder_name: required")
	case a.IDNumber == "":
		return errors.New("id_number: required")
	case a.Phone == "":
		return errors.New("phone: required")
	case a.Balance < 0 || a.SingleLimit < 0 || a.DailyLimit < 0:
		return errors.New("balance, single_limit, daily_limit: must not be negative")
	}
	switch a.CardType {
	case CardDebit:
	case CardCredit:
		if !validExpiry(a.Expiry) {
			return errors.New("expiry: credit cards need MMYY")
		}
		if len(a.CVV2) != 3 || !allDigits(a.CVV2) {
			return errors.New("cvv2: credit cards need 3 digits")
		}
	default:
		return errors.New("card_type: want debit or credit")
	}
	if a.SingleLimit == 0 {
		a.SingleLimit = DefaultSingleLimit
	}
	if a.DailyLimit == 0 {
		a.DailyLimit = DefaultDailyLimit
	}
	switch a.Status {
	case "":
		a.Status = StatusActive
	case StatusActive, StatusFrozen, StatusClosed:
	default:
		return errors.New("status: want active, frozen or closed")
	}
	s.accountsMu.Lock()
	c := s.accounts[a.CardNumber]
	if c == nil {
		s.accounts[a.CardNumber] = &account{bank: b, a: a, live: map[string]*agreement{}}
	}
	s.accountsMu.Unlock()
	if c != nil {
		c.mu.Lock()
		c.a = a
		c.mu.Unlock()
	}
	s.log.Info("account stored", "account", a)
	return nil
}

func validExpiry(e string) bool {
	if len(e) != 4 || !allDigits(e) {
		return false
	}
	mm, _ := strconv.Atoi(e[:2])
	return mm >= 1 && mm <= 12
}

func (s *Sim) account(card string) *account {
	s.accountsMu.RLock()
	c := s.accounts[card]
	s.accountsMu.RUnlock()
	return c
}

func (s *Sim) agreement(no string) *agreement {
	s.agreementsMu.RLock()
	ag := s.agreements[no]
	s.agreementsMu.RUnlock()
	return ag
}

// newID returns a bank-style number: code, kind letter, the bank's date,
// the Sim's instance (random: a restarted banksim, or another, never
// repeats an agreement number a platform still holds) and a sequence
// number unique within the Sim.
func (s *Sim) newID(b *bank, kind byte) string {
	n := s.seq.Add(1)
	buf := make([]byte, 0, 32)
	buf = append(buf, b.code...)
	buf = append(buf, kind)
	buf = s.Now().In(shanghai).AppendFormat(buf, "20060102")
	buf = append(buf, s.instance...)
	d := strconv.AppendUint(nil, n, 10)
	for i := len(d); i < 10; i++ {
		buf = append(buf, '0')
	}
	return string(append(buf, d...))
}

// serveBank is POST /banks/{code}/{operation}.
func (s *Sim) serveBank(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	b := s.banks[r.PathValue("code")]
	op, ok := parseOp(r.PathValue("op"))
	if b == nil || !ok {
		writeError(w, http.StatusNotFound, "no such bank or operation")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		s.writeAnswer(w, b, nil, http.StatusBadRequest, fail(rBadRequest, "body unreadable or over 64 KiB"))
		return
	}
	var (
		m    *merchant
		rej  *rejection
		req  request
		perr error
	)
	switch b.dialect {
	case DialectFormRSA:
		var v url.Values
		m, v, rej = s.authForm(b, body)
		if rej == nil {
			perr = req.fillForm(v)
		}
	case DialectJSONHMAC:
		m, rej = s.authJSON(b, r, body)
		if rej == nil && json.Unmarshal(body, &req) != nil {
			perr = errors.New("body: want a JSON object of the operation's fields")
		}
	default:
		panic(fmt.Sprintf("banksim: %s speaks dialect %q, which no request reader reads", b.code, b.dialect))
	}
	if rej != nil {
		s.writeAnswer(w, b, m, rej.status, fail(rej.reason, rej.msg))
		s.logRequest(b, op, m, &req, rej.status, rej.reason, "", start)
		return
	}
	if perr != nil {
		s.writeAnswer(w, b, m, http.StatusOK, fail(rBadRequest, perr.Error()))
		s.logRequest(b, op, m, &req, http.StatusOK, rBadRequest, "", start)
		return
	}

	f, faulted := s.faults.take(b.code, op)
	if !faulted {
		res := s.perform(b, m, op, &req, false)
		s.writeAnswer(w, b, m, http.StatusOK, res)
		s.logRequest(b, op, m, &req, http.StatusOK, res.reason, "", start)
		return
	}
	var res *result
	switch f.Mode {
	case FaultError:
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		s.logRequest(b, op, m, &req, http.StatusServiceUnavailable, rSystemError, f.Mode, start)
		return
	case FaultDecline:
		res = declined(op, &req, f.reason)
	case FaultProcessing:
		res = s.perform(b, m, op, &req, true)
	case FaultAmount: // charge only (AddFault)
		wrong := f.Amount
		if wrong == 0 {
			wrong = req.Amount + 1
		}
		res = s.chargeWith(b, m, &req, false, wrong)
	case FaultDropResponse:
		res = s.perform(b, m, op, &req, false)
		s.logRequest(b, op, m, &req, 0, res.reason, f.Mode, start)
		dropConnection(w)
		return
	case FaultTimeout:
		if f.Apply {
			res = s.perform(b, m, op, &req, false)
		}
		if s.hold(r.Context()) {
			// The caller gave up: there is no one to answer.
			s.logRequest(b, op, m, &req, 0, rSystemError, f.Mode, start)
			return
		}
		if res == nil {
			http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
			s.logRequest(b, op, m, &req, http.StatusGatewayTimeout, rSystemError, f.Mode, start)
			return
		}
	default:
		panic(fmt.Sprintf("banksim: fault mode %q armed, which serveBank does not play (AddFault lets no such mode in)", f.Mode))
	}
	s.writeAnswer(w, b, m, http.StatusOK, res)
	s.logRequest(b, op, m, &req, http.StatusOK, res.reason, f.Mode, start)
}

// hold waits for the caller to give up (true), or MaxHold or Close (false).
func (s *Sim) hold(ctx context.Context) bool {
	t := time.NewTimer(s.cfg.MaxHold)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
	case <-s.ctx.Done():
	}
	return false
}

// dropConnection closes the connection without writing an answer.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): net/http aborts the stream unanswered.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// declined is a "decline" fault's answer: the operation was not performed.
func declined(op operation, req *request, r reason) *result {
	res := &result{reason: r}
	switch op {
	case opCharge:
		res.orderNo = req.OrderNo
		switch r {
		case rSuccess:
			res.status = chargeSuccess
		case rProcessing:
			res.status = chargeProcessing
		default: // every other reason is a refusal
			res.status = chargeFailed
		}
	case opRefund:
		res.refundNo, res.orderNo, res.amount = req.RefundNo, req.OrderNo, req.Amount
		switch r {
		case rSuccess:
			res.status = chargeSuccess
		case rProcessing:
			res.status = chargeProcessing
		default: // every other reason is a refusal
			res.status = chargeFailed
		}
	case opQuery:
		res.orderNo = req.OrderNo
	case opBindApply, opBindResend, opBindConfirm, opUnbind, opStatement:
		// The code alone answers.
	default:
		panic("banksim: declined has no answer for operation " + op.String())
	}
	return res
}

func (s *Sim) perform(b *bank, m *merchant, op operation, req *request, forceAsync bool) *result {
	switch op {
	case opBindApply:
		return s.bindApply(b, m, req)
	case opBindResend:
		return s.bindResend(b, m, req)
	case opBindConfirm:
		return s.bindConfirm(b, m, req)
	case opCharge:
		return s.charge(b, m, req, forceAsync)
	case opQuery:
		return s.query(b, m, req)
	case opUnbind:
		return s.unbind(b, m, req)
	case opStatement:
		return s.statement(b, m, req)
	case opRefund:
		return s.refund(b, m, req, forceAsync)
	default:
		panic("banksim: perform has no operation " + op.String())
	}
}

// logRequest logs one bank request at Debug, with no sensitive value.
func (s *Sim) logRequest(b *bank, op operation, m *merchant, req *request, status int, r reason, fault FaultMode, start time.Time) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{
		slog.String("bank", b.code), slog.String("op", op.String()),
		slog.Int("status", status), slog.String("result", r.String()),
		slog.Duration("took", time.Since(start)),
	}
	if m != nil {
		attrs = append(attrs, slog.String("merchant_no", m.no))
	}
	if fault != "" {
		attrs = append(attrs, slog.String("fault", string(fault)))
	}
	switch op {
	case opBindApply:
		attrs = append(attrs, slog.String("card", maskPAN(req.CardNo)), slog.String("request_no", req.RequestNo))
	case opCharge, opQuery:
		attrs = append(attrs, slog.String("order_no", req.OrderNo))
	case opRefund:
		attrs = append(attrs, slog.String("refund_no", req.RefundNo), slog.String("order_no", req.OrderNo))
	case opBindResend, opBindConfirm, opUnbind, opStatement:
		// Their references say nothing an operator needs here.
	default:
		panic("banksim: logRequest has no operation " + op.String())
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, "bank request", attrs...)
}

// bindApply checks the four elements and sends the OTP.
func (s *Sim) bindApply(b *bank, m *merchant, req *request) *result {
	switch {
	case !validIdentifier(req.RequestNo):
		return fail(rBadRequest, "request_no: want 1-64 printable ASCII characters")
	case !allDigits(req.CardNo):
		return fail(rBadRequest, "card_no: want digits")
	case req.HolderName == "":
		return fail(rBadRequest, "holder_name: required")
	case req.IDType != "01":
		return fail(rBadRequest, "id_type: want 01 (resident ID)")
	case req.IDNo == "":
		return fail(rBadRequest, "id_no: required")
	case req.Phone == "":
		return fail(rBadRequest, "phone: required")
	}
	c := s.account(req.CardNo)
	if c == nil || c.bank != b {
		return fail(rCardNotFound, "")
	}
	c.mu.Lock()
	a := c.a
	var r reason
	switch {
	case req.HolderName != a.HolderName:
		r = rNameMismatch
	case !strings.EqualFold(req.IDNo, a.IDNumber): // a final X may come in either case
		r = rIDMismatch
	case req.Phone != a.Phone:
		r = rPhoneMismatch
	case needsCardAuth(a.CardType) && (req.Expiry != a.Expiry || req.CVV2 != a.CVV2):
		r = rCardAuthMismatch
	case a.Status != StatusActive:
		r = statusRefusal(a.Status)
	case c.live[m.no] != nil:
		r = rAlreadyBound
	}
	c.mu.Unlock()
	if r != rSuccess {
		return fail(r, "")
	}

	key := requestKey{b.code, m.no, req.RequestNo}
	s.sessionsMu.Lock()
	if old := s.requests[key]; old != nil {
		s.sessionsMu.Unlock()
		if old.card != c {
			return fail(rBadRequest, "request_no: already used for another card")
		}
		return &result{bindRef: old.ref} // a repeat: no second text
	}
	sess := &bindSession{
		ref: s.newID(b, 'B'), bank: b, merchantNo: m.no, card: c,
		code: newOTP(), issued: s.Now(),
	}
	s.sessions[sess.ref] = sess
	s.requests[key] = sess
	code := sess.code
	s.sessionsMu.Unlock()
	s.sendOTP(b, a, code)
	return &result{bindRef: sess.ref}
}

func newOTP() string {
	d := strconv.Itoa(rand.IntN(1_000_000))
	for len(d) < 6 {
		d = "0" + d
	}
	return d
}

func (s *Sim) sendOTP(b *bank, a Account, code string) {
	text := "【" + b.name + "】验证码" + code + "，5分钟内有效。您尾号" + a.CardNumber[len(a.CardNumber)-4:] +
		"的银行卡正在签约快捷支付，请勿向任何人泄露。"
	s.sms.add(textMessage{To: a.Phone, Text: text, Code: code, SentAt: s.Now().In(shanghai)})
}

// session finds merchant m's bind session at bank b.
func (s *Sim) session(b *bank, m *merchant, ref string) *bindSession {
	s.sessionsMu.Lock()
	sess := s.sessions[ref]
	s.sessionsMu.Unlock()
	if sess == nil || sess.bank != b || sess.merchantNo != m.no {
		return nil
	}
	return sess
}

// liveSession returns the merchant's bind session, locked, if it still
// takes codes; otherwise the refusal.
func (s *Sim) liveSession(b *bank, m *merchant, ref string) (*bindSession, *result) {
	sess := s.session(b, m, ref)
	if sess == nil {
		return nil, fail(rBindSessionUnknown, "")
	}
	sess.mu.Lock()
	switch sess.state {
	case sessionPending:
		return sess, nil
	case sessionConfirmed:
		sess.mu.Unlock()
		return nil, fail(rBindSessionUnknown, "")
	case sessionLocked:
		sess.mu.Unlock()
		return nil, fail(rOTPLocked, "")
	default:
		sess.mu.Unlock()
		panic(fmt.Sprintf("banksim: bind session state %d", sess.state))
	}
}

// bindResend issues a fresh OTP; the old one dies. Wrong tries so far stay
// counted.
func (s *Sim) bindResend(b *bank, m *merchant, req *request) *result {
	sess, refused := s.liveSession(b, m, req.BindRef)
	if refused != nil {
		return refused
	}
	defer sess.mu.Unlock()
	sess.code, sess.issued = newOTP(), s.Now()
	sess.card.mu.Lock()
	a := sess.card.a
	sess.card.mu.Unlock()
	s.sendOTP(b, a, sess.code)
	return &result{}
}

// bindConfirm checks the OTP and makes the agreement. A repeat of a
// confirmed session with the code that confirmed it answers the same
// agreement while it is live, as a platform that lost the first answer
// needs; any other code then answers "bind session unknown".
func (s *Sim) bindConfirm(b *bank, m *merchant, req *request) *result {
	sess, refused := s.liveSession(b, m, req.BindRef)
	if refused != nil {
		if again := s.repeatedConfirm(b, m, req); again != nil {
			return again
		}
		return refused
	}
	defer sess.mu.Unlock()
	if s.Now().Sub(sess.issued) > otpValidity {
		return fail(rOTPExpired, "")
	}
	if req.OTP != sess.code {
		sess.wrong++
		if sess.wrong >= otpMaxWrong {
			sess.state = sessionLocked
			return fail(rOTPLocked, "")
		}
		return fail(rOTPIncorrect, "verification code incorrect, "+strconv.Itoa(otpMaxWrong-sess.wrong)+" tries left")
	}
	c := sess.card
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := statusRefusal(c.a.Status); r != rSuccess {
		return fail(r, "")
	}
	if c.live[m.no] != nil {
		return fail(rAlreadyBound, "")
	}
	ag := &agreement{no: s.newID(b, 'A'), bank: b, merchantNo: m.no, card: c, live: true}
	c.live[m.no] = ag
	c.all = append(c.all, ag)
	s.agreementsMu.Lock()
	s.agreements[ag.no] = ag
	s.agreementsMu.Unlock()
	sess.state, sess.agreement = sessionConfirmed, ag
	return &result{agreementNo: ag.no}
}

// repeatedConfirm answers a confirmed session's agreement to a repeat of
// its confirm (same code, agreement still live); nil otherwise.
func (s *Sim) repeatedConfirm(b *bank, m *merchant, req *request) *result {
	sess := s.session(b, m, req.BindRef)
	if sess == nil {
		return nil
	}
	sess.mu.Lock()
	ag, same := sess.agreement, sess.state == sessionConfirmed && req.OTP == sess.code
	sess.mu.Unlock()
	if !same || ag == nil {
		return nil
	}
	ag.card.mu.Lock()
	live := ag.live
	ag.card.mu.Unlock()
	if !live {
		return nil
	}
	return &result{agreementNo: ag.no}
}

// unbind terminates the agreement. Unknown, terminated and other merchants'
// agreements answer success and stay as they are.
func (s *Sim) unbind(b *bank, m *merchant, req *request) *result {
	if !validIdentifier(req.AgreementNo) {
		return fail(rBadRequest, "agreement_no: want 1-64 printable ASCII characters")
	}
	if ag := s.agreement(req.AgreementNo); ag != nil && ag.bank == b && ag.merchantNo == m.no {
		c := ag.card
		c.mu.Lock()
		if ag.live {
			ag.live = false
			delete(c.live, m.no)
		}
		c.mu.Unlock()
	}
	return &result{}
}

// statement lists the money merchant m moved at bank b on a date: debits
// and refunds that succeeded. It is final once the bank's clock has passed
// the end of that day.
func (s *Sim) statement(b *bank, m *merchant, req *request) *result {
	day, err := time.ParseInLocation(time.DateOnly, req.Date, shanghai)
	if err != nil {
		return fail(rBadRequest, "date: want YYYY-MM-DD")
	}
	date := day.Format(time.DateOnly)
	entries := s.ledger(func(e *ledgerEntry) bool {
		return e.BankCode == b.code && e.MerchantNo == m.no && e.At.In(shanghai).Format(time.DateOnly) == date
	})
	final := !s.Now().Before(day.AddDate(0, 0, 1))
	return &result{statement: true, entries: entries, final: final}
}

// ledger returns the entries keep selects, oldest first.
func (s *Sim) ledger(keep func(*ledgerEntry) bool) []ledgerEntry {
	s.accountsMu.RLock()
	cards := make([]*account, 0, len(s.accounts))
	for _, c := range s.accounts {
		cards = append(cards, c)
	}
	s.accountsMu.RUnlock()
	out := []ledgerEntry{}
	for _, c := range cards {
		c.mu.Lock()
		for i := range c.ledger {
			if keep(&c.ledger[i]) {
				out = append(out, c.ledger[i])
			}
		}
		c.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}
