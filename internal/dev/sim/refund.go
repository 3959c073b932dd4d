package sim

import (
	"time"
)

// refund credits a card from an earlier debit of this merchant
// (docs/banksim.md, "Refunds"). A refund number is applied at most once: a
// repeat with the same order_no and amount answers the original result,
// with other terms (or a number a debit holds) "order conflict".
//
// A refund is decided when it is accepted: the debit's state, the 180-day
// window and the amount still refundable, with its amount reserved on the
// debit at once, so concurrent refunds of one debit never exceed it. A
// synchronous refund takes effect then; an asynchronous one (every CMB
// refund, or under a "processing" fault) answers PROCESSING and takes effect
// (the credit, its status, the callback) when it settles.
func (s *Sim) refund(b *bank, m *merchant, req *request, forceAsync bool) *result {
	switch {
	case !validIdentifier(req.RefundNo):
		return fail(rBadRequest, "refund_no: want 1-64 printable ASCII characters")
	case !validIdentifier(req.OrderNo):
		return &result{reason: rBadRequest, msg: "order_no: want 1-64 printable ASCII characters", refundNo: req.RefundNo}
	}
	if msg := moneyFieldsError(b, req); msg != "" {
		return &result{reason: rBadRequest, msg: msg, refundNo: req.RefundNo}
	}
	fresh := &order{
		kind: kindRefund, bank: b, merchantNo: m.no, no: req.RefundNo, amount: req.Amount,
		notifyURL: req.NotifyURL, refundOf: req.OrderNo,
	}
	fresh.mu.Lock()
	if o := s.orders.create(orderKey{b.code, m.no, req.RefundNo}, fresh); o != nil {
		if o.kind != kindRefund || o.refundOf != req.OrderNo || o.amount != req.Amount {
			return &result{reason: rOrderConflict, refundNo: req.RefundNo}
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.refundResult()
	}
	o := fresh
	defer o.mu.Unlock()
	o.bankTxnNo = s.newID(b, 'R')
	now := s.Now()
	if d := s.orders.get(orderKey{b.code, m.no, req.OrderNo}); d != nil && d.kind == kindDebit {
		o.debit = d
	}
	o.decided = s.reserve(o, now)
	if b.async || forceAsync {
		o.status, o.outcome = chargeProcessing, rProcessing
		s.goBackground(func() { s.settleRefundLater(o) })
		return o.refundResult()
	}
	s.settleRefund(o, now)
	return o.refundResult()
}

// reserve applies the refund rules to o and, when they pass, counts its
// amount against its debit; o.mu held.
func (s *Sim) reserve(o *order, now time.Time) reason {
	d := o.debit
	if d == nil {
		return rOrderNotRefundable
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.status != chargeSuccess:
		return rOrderNotRefundable
	case now.Sub(d.finished) > refundWindow:
		return rRefundWindowExpired
	case o.amount > d.booked()-d.refunded:
		return rRefundExceeds
	}
	d.refunded += o.amount
	return rSuccess
}

// settleRefund gives o its decided outcome and, for a success, credits the
// debit's card; o.mu held.
func (s *Sim) settleRefund(o *order, now time.Time) {
	o.outcome, o.finished, o.status = o.decided, now, chargeFailed
	if o.decided != rSuccess {
		return
	}
	o.status = chargeSuccess
	// A debit that succeeded had a live agreement, which keeps its card
	// when it ends.
	agr := o.debit.agreementNo
	c := s.agreement(agr).card
	c.mu.Lock()
	defer c.mu.Unlock()
	c.a.Balance += o.amount
	c.ledger = append(c.ledger, ledgerEntry{
		Type: kindRefund.String(), BankCode: o.bank.code, CardNumber: c.a.CardNumber, MerchantNo: o.merchantNo,
		OrderNo: o.no, RefundOf: o.refundOf, AgreementNo: agr, Amount: o.amount, BankTxnNo: o.bankTxnNo,
		At: now.In(shanghai), seq: s.seq.Add(1),
	})
}

// settleRefundLater settles a PROCESSING refund after AsyncDelay and sends
// its callback.
func (s *Sim) settleRefundLater(o *order) {
	t := time.NewTimer(s.cfg.AsyncDelay)
	select {
	case <-t.C:
	case <-s.ctx.Done():
		t.Stop()
		return
	}
	o.mu.Lock()
	s.settleRefund(o, s.Now())
	n := o.resultNotice()
	outcome := o.outcome
	o.mu.Unlock()
	s.log.Debug("refund settled", "bank", o.bank.code, "refund_no", o.no, "result", outcome.String())
	if o.notifyURL != "" {
		s.deliver(o.bank, o.merchantNo, o.notifyURL, n)
	}
}

// refundResult is the refund answer for o; o.mu held.
func (o *order) refundResult() *result {
	return &result{
		reason: o.outcome, refundNo: o.no, orderNo: o.refundOf, status: o.status, amount: o.amount,
		bankTxnNo: o.bankTxnNo, finishedAt: bankTime(o.finished),
	}
}
