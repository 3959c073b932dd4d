package sim

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// order is a charge order or a refund: one namespace of numbers per bank
// and merchant number holds both. The fields set at creation never change;
// mu guards the outcome. Its creator holds mu until the first answer is
// known, so a concurrent repeat waits for it.
type order struct {
	mu          sync.Mutex
	kind        orderKind
	bank        *bank
	merchantNo  string
	no          string // the order number, or a refund's refund number
	agreementNo string // debits
	amount      int64
	// wrongAmount, when set (an "amount" fault), is what the bank debits
	// and names instead of amount.
	wrongAmount int64
	notifyURL   string
	bankTxnNo   string
	// refundOf is a refund's order_no as sent; debit is that order when it
	// is a debit of this merchant.
	refundOf string
	debit    *order

	status   chargeStatus
	outcome  reason
	finished time.Time
	// refunded (debits) is the fen of its refunds that succeeded or are
	// processing toward success.
	refunded int64
	// decided (refunds, while PROCESSING) is the outcome it settles to.
	decided reason
}

// orderKind says which way an order moves money.
type orderKind uint8

const (
	kindDebit orderKind = iota
	kindRefund
)

// String is the kind as statements, queries, callbacks and the ledger
// name it.
func (k orderKind) String() string {
	switch k {
	case kindDebit:
		return "debit"
	case kindRefund:
		return "refund"
	default:
		panic(fmt.Sprintf("banksim: order kind %d", k))
	}
}

type orderKey struct{ bank, merchant, no string }

const orderShardCount = 64

type orderShards struct {
	seed   maphash.Seed
	shards [orderShardCount]struct {
		mu sync.Mutex
		m  map[orderKey]*order
	}
}

func (o *orderShards) init() {
	o.seed = maphash.MakeSeed()
	for i := range o.shards {
		o.shards[i].m = map[orderKey]*order{}
	}
}

func (o *orderShards) shard(k orderKey) int {
	return int(maphash.String(o.seed, k.no) % orderShardCount)
}

func (o *orderShards) get(k orderKey) *order {
	sh := &o.shards[o.shard(k)]
	sh.mu.Lock()
	ord := sh.m[k]
	sh.mu.Unlock()
	return ord
}

// create inserts fresh, already locked by the caller, unless the key is
// taken; then it returns the existing order.
func (o *orderShards) create(k orderKey, fresh *order) (existing *order) {
	sh := &o.shards[o.shard(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ord := sh.m[k]; ord != nil {
		return ord
	}
	sh.m[k] = fresh
	return nil
}

// charge debits by agreement. An order number is debited at most once; a
// repeat with the same agreement and amount answers the original result.
// moneyFieldsError checks the fields a charge and a refund share (amount,
// currency, notify_url): what is wrong with them, "" if nothing.
func moneyFieldsError(b *bank, req *request) string {
	switch {
	case req.Amount <= 0:
		return "amount: want positive integer fen"
	case req.Currency != "CNY":
		return "currency: want CNY"
	case b.async && req.NotifyURL == "":
		return "notify_url: required at " + b.code
	case req.NotifyURL != "" && !validNotifyURL(req.NotifyURL):
		return "notify_url: want an absolute http(s) URL"
	}
	return ""
}

func (s *Sim) charge(b *bank, m *merchant, req *request, forceAsync bool) *result {
	return s.chargeWith(b, m, req, forceAsync, 0)
}

// chargeWith is charge; under an "amount" fault (wrong > 0) a new order
// debits wrong fen instead of the amount sent, and its answers name it.
func (s *Sim) chargeWith(b *bank, m *merchant, req *request, forceAsync bool, wrong int64) *result {
	switch {
	case !validIdentifier(req.OrderNo):
		return fail(rBadRequest, "order_no: want 1-64 printable ASCII characters")
	case !validIdentifier(req.AgreementNo):
		return &result{reason: rBadRequest, msg: "agreement_no: want 1-64 printable ASCII characters", orderNo: req.OrderNo}
	}
	if msg := moneyFieldsError(b, req); msg != "" {
		return &result{reason: rBadRequest, msg: msg, orderNo: req.OrderNo}
	}
	fresh := &order{
		bank: b, merchantNo: m.no, no: req.OrderNo, agreementNo: req.AgreementNo,
		amount: req.Amount, notifyURL: req.NotifyURL,
	}
	if wrong > 0 {
		fresh.wrongAmount = wrong
	}
	fresh.mu.Lock()
	if o := s.orders.create(orderKey{b.code, m.no, req.OrderNo}, fresh); o != nil {
		if o.kind != kindDebit || o.agreementNo != req.AgreementNo || o.amount != req.Amount {
			return &result{reason: rOrderConflict, orderNo: req.OrderNo}
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.chargeResult()
	}
	o := fresh
	defer o.mu.Unlock()
	o.bankTxnNo = s.newID(b, 'T')
	if b.async || forceAsync {
		o.status, o.outcome = chargeProcessing, rProcessing
		s.goBackground(func() { s.settleLater(o) })
		return o.chargeResult()
	}
	s.settle(o)
	return o.chargeResult()
}

func validNotifyURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// chargeResult is the charge answer for o; o.mu held.
func (o *order) chargeResult() *result {
	res := &result{reason: o.outcome, orderNo: o.no, status: o.status, bankTxnNo: o.bankTxnNo}
	if o.wrongAmount != 0 {
		res.amount = o.wrongAmount // a normal answer names no amount
	}
	return res
}

// booked is the amount the bank debits for o and names in its answers:
// the sent amount, unless an "amount" fault set another.
func (o *order) booked() int64 {
	if o.wrongAmount != 0 {
		return o.wrongAmount
	}
	return o.amount
}

// settle applies the debit rules to o and records its outcome; o.mu held.
func (s *Sim) settle(o *order) {
	now := s.Now()
	o.outcome = s.debit(o, now)
	o.finished = now
	o.status = chargeFailed
	if o.outcome == rSuccess {
		o.status = chargeSuccess
	}
}

// debit checks, in order: agreement, card status, the day's failure cap,
// single limit, daily limit, balance; and debits when all pass.
func (s *Sim) debit(o *order, now time.Time) reason {
	ag := s.agreement(o.agreementNo)
	if ag == nil || ag.bank != o.bank || ag.merchantNo != o.merchantNo {
		return rAgreementInvalid
	}
	c := ag.card
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ag.live {
		return rAgreementInvalid
	}
	if r := statusRefusal(c.a.Status); r != rSuccess {
		return r
	}
	c.rollDay(now.In(shanghai).Format(time.DateOnly))
	if c.failed >= maxFailedPerDay {
		return rTryTomorrow
	}
	r := rSuccess
	switch {
	case o.booked() > c.a.SingleLimit:
		r = rSingleLimit
	case c.debited+o.booked() > c.a.DailyLimit:
		r = rDailyLimit
	case o.booked() > c.a.Balance:
		r = rInsufficientFunds
	}
	if r != rSuccess {
		c.failed++
		return r
	}
	c.a.Balance -= o.booked()
	c.debited += o.booked()
	c.ledger = append(c.ledger, ledgerEntry{
		Type: kindDebit.String(), BankCode: o.bank.code, CardNumber: c.a.CardNumber, MerchantNo: o.merchantNo, OrderNo: o.no,
		AgreementNo: o.agreementNo, Amount: o.booked(), BankTxnNo: o.bankTxnNo, At: now.In(shanghai),
		seq: s.seq.Add(1),
	})
	return rSuccess
}

// settleLater settles a PROCESSING order after AsyncDelay and sends its
// callback.
func (s *Sim) settleLater(o *order) {
	t := time.NewTimer(s.cfg.AsyncDelay)
	select {
	case <-t.C:
	case <-s.ctx.Done():
		t.Stop()
		return
	}
	o.mu.Lock()
	s.settle(o)
	n := o.resultNotice()
	outcome := o.outcome
	o.mu.Unlock()
	s.log.Debug("charge settled", "bank", o.bank.code, "order_no", o.no, "result", outcome.String())
	if o.notifyURL != "" {
		s.deliver(o.bank, o.merchantNo, o.notifyURL, n)
	}
}

// resultNotice is the callback announcing o's outcome; o.mu held.
func (o *order) resultNotice() notice {
	n := notice{kind: o.kind.String(), ref: o.no}
	n.add("type", o.kind.String(), false)
	n.add("order_no", o.no, false)
	if o.kind == kindRefund {
		n.add("refund_of", o.refundOf, false)
	}
	n.add("status", string(o.status), false)
	n.add("result_code", o.outcome.code(o.bank.dialect), false)
	n.add("amount", strconv.FormatInt(o.booked(), 10), true)
	n.add("bank_txn_no", o.bankTxnNo, false)
	n.add("finished_at", bankTime(o.finished), false)
	return n
}

// notice is the body of a bank's own POST to the platform: an async
// result or an agreement's termination. Its fields keep their order.
type notice struct {
	kind   string // for logs: debit, refund, agreement_terminated
	ref    string // for logs: the order or refund number, if any
	fields []noticeField
}

type noticeField struct {
	k, v string
	num  bool // a JSON number
}

func (n *notice) add(k, v string, num bool) { n.fields = append(n.fields, noticeField{k, v, num}) }

// json is n as a JSON object.
func (n notice) json() []byte {
	buf := []byte{'{'}
	for i, f := range n.fields {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, f.k)
		buf = append(buf, ':')
		if f.num {
			buf = append(buf, f.v...)
		} else {
			buf = appendJSONString(buf, f.v)
		}
	}
	return append(buf, '}')
}

// form is n's fields as form values.
func (n notice) form() url.Values {
	v := make(url.Values, len(n.fields)+5)
	for _, f := range n.fields {
		v.Set(f.k, f.v)
	}
	return v
}

// deliver posts n to target until a 2xx answer, retrying up to 5 times
// with doubling backoff.
func (s *Sim) deliver(b *bank, merchantNo, target string, n notice) {
	wait := s.cfg.CallbackBackoff
	attrs := func(more ...any) []any {
		a := []any{"bank", b.code, "notice", n.kind}
		if n.ref != "" {
			a = append(a, "ref", n.ref)
		}
		return append(a, more...)
	}
	for attempt := 1; attempt <= callbackAttempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			wait *= 2
		}
		status, err := s.postCallback(b, merchantNo, target, n)
		if err == nil && status/100 == 2 {
			s.log.Debug("callback delivered", attrs("attempt", attempt)...)
			return
		}
		s.log.Info("callback attempt failed", attrs("attempt", attempt, "status", status, "err", errString(err))...)
	}
	s.log.Warn("callback abandoned", attrs("attempts", callbackAttempts)...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// postCallback makes one signed attempt to post n in b's dialect.
func (s *Sim) postCallback(b *bank, merchantNo, target string, n notice) (int, error) {
	var (
		body  []byte
		ctype string
		hdr   = http.Header{}
	)
	ts := strconv.FormatInt(s.realNow().Unix(), 10)
	nonce := newNonce()
	switch b.dialect {
	case DialectFormRSA:
		v := n.form()
		v.Set("merchant_no", merchantNo)
		v.Set("timestamp", ts)
		v.Set("nonce", nonce)
		v.Set("sign_type", "RSA2")
		v.Set("sign", b.sign(canonical(v)))
		body, ctype = []byte(v.Encode()), "application/x-www-form-urlencoded"
	case DialectJSONHMAC:
		m := s.merchant(b, merchantNo)
		if m == nil {
			return 0, errMerchantGone
		}
		body = n.json()
		ctype = "application/json"
		hdr.Set("X-Merchant-No", merchantNo)
		hdr.Set("X-Timestamp", ts)
		hdr.Set("X-Nonce", nonce)
		hdr.Set("X-Signature", hmacHex(m.secret, "CALLBACK\n"+ts+"\n"+nonce+"\n", body))
	default:
		panic(fmt.Sprintf("banksim: %s speaks dialect %q, which no callback signer signs", b.code, b.dialect))
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = hdr
	req.Header.Set("Content-Type", ctype)
	resp, err := s.cbClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

type simError string

func (e simError) Error() string { return string(e) }

const errMerchantGone = simError("merchant no longer registered: cannot sign the callback")

// query reports an order's state.
func (s *Sim) query(b *bank, m *merchant, req *request) *result {
	if !validIdentifier(req.OrderNo) {
		return fail(rBadRequest, "order_no: want 1-64 printable ASCII characters")
	}
	o := s.orders.get(orderKey{b.code, m.no, req.OrderNo})
	if o == nil {
		return &result{reason: rOrderNotFound, orderNo: req.OrderNo}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	res := &result{
		orderNo: o.no, typ: o.kind.String(), status: o.status, outcome: o.outcome, hasOutcome: true, amount: o.booked(),
		bankTxnNo: o.bankTxnNo, finishedAt: bankTime(o.finished),
	}
	if o.kind == kindRefund {
		res.refundOf = o.refundOf
	}
	return res
}
