package conformance

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
)

const (
	concurrentCards   = 10
	chargesPerCard    = 20
	concurrentBalance = 40_000 // fen; less than the ~53 000 a card's 20 charges add up to
)

// concurrentAmount is the i-th charge's amount on a card: 500–4 990 fen,
// about 53 000 a card, so each card runs out and declines some.
func concurrentAmount(i int) int64 { return 500 + int64(i*2_377%4_491) }

type concurrentOutcome struct {
	card   int
	req    bankadapters.ChargeRequest
	result bankadapters.ChargeResult
	debit  bool // the bank says it debited
	err    error
}

func (s *suite) testConcurrentCharges(t *testing.T) {
	b := s.adapter(t, nil)
	accounts := make([]Account, concurrentCards)
	agreements := make([]string, concurrentCards)
	for i := range accounts {
		accounts[i], agreements[i] = s.boundAccount(t, b, func(a *Account) { a.Balance = concurrentBalance })
	}

	out := make([]concurrentOutcome, 0, concurrentCards*chargesPerCard)
	for i := range chargesPerCard {
		for c := range concurrentCards {
			out = append(out, concurrentOutcome{card: c, req: s.chargeReq(agreements[c], concurrentAmount(i))})
		}
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range out {
		wg.Go(func() {
			<-start
			o := &out[i]
			r, err := b.Charge(ctx, o.req)
			if err != nil {
				o.err = err
				return
			}
			if !final(r.Status) {
				q, err := settle(ctx, b, o.req.OrderNo)
				switch {
				case r.Status == bankadapters.ChargeUnknown && errors.Is(err, bankadapters.ErrOrderNotFound):
					// Never received: settled as not debited.
				case err != nil:
					o.err = fmt.Errorf("after %s: %w", r.Status, err)
					return
				default:
					r = q
				}
			}
			o.result = r
			o.debit = r.Status == bankadapters.ChargeSucceeded
		})
	}
	close(start)
	wg.Wait()

	succeeded := make([]map[string]int64, concurrentCards)
	for c := range succeeded {
		succeeded[c] = map[string]int64{}
	}
	var nOK, nFailed int
	for _, o := range out {
		if o.err != nil {
			t.Errorf("order %s: %v", o.req.OrderNo, o.err)
			continue
		}
		switch {
		case o.debit:
			nOK++
			if o.result.Amount != o.req.Amount {
				t.Errorf("order %s succeeded for %d fen, charged %d", o.req.OrderNo, o.result.Amount, o.req.Amount)
			}
			succeeded[o.card][o.req.OrderNo] = o.result.Amount
		case o.result.Status == bankadapters.ChargeFailed:
			nFailed++
			if o.result.Outcome != bankadapters.OutcomeRetryableDecline {
				t.Errorf("order %s declined as %s, want a retryable decline (balance, try tomorrow)", o.req.OrderNo, o.result.Outcome)
			}
		}
	}
	t.Logf("%d charges: %d succeeded, %d declined", len(out), nOK, nFailed)
	if nOK == 0 || nFailed == 0 {
		t.Errorf("want both successes and declines (balance runs out), got %d and %d", nOK, nFailed)
	}

	for c, a := range accounts {
		ledger, err := s.sim.Ledger(ctx, a.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		var ledgerSum, resultSum int64
		inLedger := map[string]int{}
		for _, e := range ledger {
			ledgerSum += e.Amount
			inLedger[e.OrderNo]++
			if amt, ok := succeeded[c][e.OrderNo]; !ok || amt != e.Amount {
				t.Errorf("card %s: ledger debit %s of %d fen is not a succeeded charge of that amount", mask(a.CardNumber), e.OrderNo, e.Amount)
			}
		}
		for o, amt := range succeeded[c] {
			resultSum += amt
			if inLedger[o] != 1 {
				t.Errorf("card %s: succeeded order %s is in the ledger %d times", mask(a.CardNumber), o, inLedger[o])
			}
		}
		spent := concurrentBalance - s.state(t, a.CardNumber).Balance
		if spent != ledgerSum || ledgerSum != resultSum {
			t.Errorf("card %s: balance fell by %d, ledger sums %d, succeeded charges sum %d", mask(a.CardNumber), spent, ledgerSum, resultSum)
		}
	}

	if !s.h.Async { // a sync bank calls back only under a processing fault
		return
	}
	// Every settled charge also got its callback, telling the same.
	for _, o := range out {
		if o.err != nil || !final(o.result.Status) {
			continue
		}
		cb, err := s.cb.wait(ctx, o.req.OrderNo)
		if err != nil {
			t.Error(err)
			continue
		}
		if cb.notice.Charge.Status != o.result.Status || cb.notice.Charge.BankTxnNo != o.result.BankTxnNo {
			t.Errorf("order %s: callback says %s txn %q, query %s txn %q", o.req.OrderNo,
				cb.notice.Charge.Status, cb.notice.Charge.BankTxnNo, o.result.Status, o.result.BankTxnNo)
		}
	}
}

const (
	concurrentRefunds = 200
	refundedDebit     = 100_000 // fen; less than the ~200 000 the refunds add up to
)

// concurrentRefundAmount is the i-th refund's amount: 500–1 499 fen.
func concurrentRefundAmount(i int) int64 { return 500 + int64(i*379%1_000) }

type refundOutcome struct {
	req    bankadapters.RefundRequest
	result bankadapters.RefundResult
	err    error
}

// testConcurrentRefunds sends 200 refunds of one debit at once, together
// worth about twice the debit: what succeeds never adds up to more than
// the debit, the rest is refund_exceeds, and the ledger and the balance
// agree with the results.
func (s *suite) testConcurrentRefunds(t *testing.T) {
	b := s.adapter(t, nil)
	a, _, orderNo := s.paidAccount(t, b, refundedDebit)
	out := make([]refundOutcome, concurrentRefunds)
	for i := range out {
		out[i].req = s.refundReq(orderNo, concurrentRefundAmount(i))
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range out {
		wg.Go(func() {
			<-start
			o := &out[i]
			r, err := b.Refund(ctx, o.req)
			if err != nil {
				o.err = err
				return
			}
			if !final(r.Status) {
				if r, err = settleRefund(ctx, b, o.req.RefundNo); err != nil {
					o.err = err
					return
				}
			}
			o.result = r
		})
	}
	close(start)
	wg.Wait()

	succeeded := map[string]int64{}
	var sum int64
	var nExceeds int
	for _, o := range out {
		switch {
		case o.err != nil:
			t.Errorf("refund %s: %v", o.req.RefundNo, o.err)
		case o.result.Status == bankadapters.ChargeSucceeded:
			if o.result.Amount != o.req.Amount {
				t.Errorf("refund %s succeeded for %d fen, asked %d", o.req.RefundNo, o.result.Amount, o.req.Amount)
			}
			succeeded[o.req.RefundNo] = o.result.Amount
			sum += o.result.Amount
		case o.result.Status == bankadapters.ChargeFailed && o.result.Reason == bankadapters.ReasonRefundExceeds:
			nExceeds++
		default:
			t.Errorf("refund %s: %s/%s reason %q code %q, want succeeded or refund_exceeds", o.req.RefundNo,
				o.result.Status, o.result.Outcome, o.result.Reason, o.result.Code)
		}
	}
	t.Logf("%d refunds of a %d fen debit: %d succeeded for %d fen, %d exceeded", len(out), refundedDebit, len(succeeded), sum, nExceeds)
	if sum > refundedDebit {
		t.Errorf("refunds of %d fen succeeded on a debit of %d", sum, refundedDebit)
	}
	if len(succeeded) == 0 || nExceeds == 0 {
		t.Errorf("want both successes and refund_exceeds (the debit runs out), got %d and %d", len(succeeded), nExceeds)
	}
	// The smallest refund no longer fits: the bank refused only past the
	// debit's end, not before.
	if left := refundedDebit - sum; left >= 1_500 {
		t.Errorf("%d fen of the debit left unrefunded while refunds of at most 1 499 were refused", left)
	}

	ledger, err := s.sim.Ledger(ctx, a.CardNumber)
	if err != nil {
		t.Fatal(err)
	}
	var credited int64
	inLedger := map[string]int{}
	for _, e := range ledger {
		if e.Type != EntryRefund {
			continue
		}
		credited += e.Amount
		inLedger[e.OrderNo]++
		if amt, ok := succeeded[e.OrderNo]; !ok || amt != e.Amount || e.RefundOf != orderNo {
			t.Errorf("ledger refund %s of %d fen (of %q) is not a succeeded refund of that amount", e.OrderNo, e.Amount, e.RefundOf)
		}
	}
	for no := range succeeded {
		if inLedger[no] != 1 {
			t.Errorf("succeeded refund %s is in the ledger %d times", no, inLedger[no])
		}
	}
	if credited != sum {
		t.Errorf("ledger credits %d fen, succeeded refunds sum %d", credited, sum)
	}
	s.wantBalance(t, a.CardNumber, defaultBalance-refundedDebit+sum)

	if !s.h.Async {
		return
	}
	// Every refund also got its callback, telling what the query told.
	for _, o := range out {
		if o.err != nil {
			continue
		}
		cb, err := s.cb.waitFor(ctx, noticeKey{bankadapters.NoticeRefund, o.req.RefundNo})
		if err != nil {
			t.Error(err)
			continue
		}
		if n := cb.notice.Refund; n.Status != o.result.Status || n.Reason != o.result.Reason || n.BankTxnNo != o.result.BankTxnNo || n.OrderNo != orderNo {
			t.Errorf("refund %s: callback says %s (%q) txn %q of %q, query %s (%q) txn %q", o.req.RefundNo,
				n.Status, n.Reason, n.BankTxnNo, n.OrderNo, o.result.Status, o.result.Reason, o.result.BankTxnNo)
		}
	}
}
