package sim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

// refundFixture is a bound card with one successful debit of 1000 fen
// from a balance of 10 000.
type refundFixture struct {
	e     *env
	c     *bankClient
	a     sim.Account
	agr   string
	debit string // its order number
	txn   string // its bank_txn_no
}

const fixtureDebit = 1000

func newRefundFixture(t *testing.T, code string, opts ...envOption) refundFixture {
	t.Helper()
	e := newEnv(t, opts...)
	c := e.banks[code]
	a := e.openAccount(code, "debit", 10_000)
	f := refundFixture{e: e, c: c, a: a, agr: c.bind(a), debit: e.orderNo()}
	var ch answer
	if code == "CMB" {
		rcv := newReceiver(t, 0)
		c.want(c.chargeAsync(f.debit, f.agr, fixtureDebit, rcv.url), "processing")
		rcv.next(t)
		ch = c.query(f.debit)
	} else {
		ch = c.charge(f.debit, f.agr, fixtureDebit)
	}
	if ch.Status != "SUCCESS" {
		t.Fatalf("the fixture's debit: %+v", ch)
	}
	f.txn = ch.BankTxnNo
	return f
}

func (f refundFixture) balance() int64 {
	f.e.t.Helper()
	return f.e.account(f.a.CardNumber).Balance
}

// refunds are the card's refund ledger entries.
func (f refundFixture) refunds() []ledgerEntry {
	f.e.t.Helper()
	var out []ledgerEntry
	for _, l := range f.e.ledger(f.a.CardNumber) {
		if l.Type == "refund" {
			out = append(out, l)
		}
	}
	return out
}

func TestRefundRules(t *testing.T) {
	t.Parallel()
	type tc struct {
		name string
		run  func(t *testing.T, f refundFixture)
	}
	cases := []tc{
		{"a full refund credits the card and is queryable", func(t *testing.T, f refundFixture) {
			c := f.c
			r := c.refund("R1", f.debit, fixtureDebit, "")
			c.want(r, "success")
			if r.RefundNo != "R1" || r.OrderNo != f.debit || r.Status != "SUCCESS" || r.Amount != fixtureDebit ||
				r.BankTxnNo == "" || r.BankTxnNo == f.txn || r.FinishedAt != base.Format(time.RFC3339) {
				t.Fatalf("refund answer %+v", r)
			}
			if b := f.balance(); b != 10_000 {
				t.Errorf("balance %d after refunding the whole debit, want 10000", b)
			}
			q := c.query("R1")
			c.want(q, "success")
			if q.OrderNo != "R1" || q.Type != "refund" || q.RefundOf != f.debit || q.Status != "SUCCESS" ||
				q.ResultCode != c.codeOf("success") || q.Amount != fixtureDebit || q.BankTxnNo != r.BankTxnNo || q.FinishedAt != r.FinishedAt {
				t.Errorf("query of the refund %+v", q)
			}
			if q := c.query(f.debit); q.Type != "debit" || q.RefundOf != "" || q.Status != "SUCCESS" {
				t.Errorf("query of the debit %+v", q)
			}
			l := f.e.ledger(f.a.CardNumber)
			if len(l) != 2 || l[1].Type != "refund" || l[1].OrderNo != "R1" || l[1].RefundOf != f.debit ||
				l[1].AgreementNo != f.agr || l[1].Amount != fixtureDebit || l[1].BankTxnNo != r.BankTxnNo ||
				l[1].MerchantNo != c.merchantNo || l[1].BankCode != c.code || !l[1].At.Equal(base) {
				t.Errorf("ledger %+v", l)
			}
		}},
		{"partial refunds up to the debit, then one fen more exceeds it", func(t *testing.T, f refundFixture) {
			c := f.c
			c.want(c.refund("R1", f.debit, 400, ""), "success")
			c.want(c.refund("R2", f.debit, 600, ""), "success")
			r := c.refund("R3", f.debit, 1, "")
			c.want(r, "refund_exceeds")
			if r.Status != "FAILED" || r.RefundNo != "R3" || r.OrderNo != f.debit || r.BankTxnNo == "" {
				t.Errorf("declined refund %+v", r)
			}
			if q := c.query("R3"); q.Status != "FAILED" || q.ResultCode != c.codeOf("refund_exceeds") || q.Type != "refund" {
				t.Errorf("query of the declined refund %+v", q)
			}
			if b, n := f.balance(), len(f.refunds()); b != 10_000 || n != 2 {
				t.Errorf("balance %d with %d refunds, want 10000 and 2", b, n)
			}
		}},
		{"more than the debit at once exceeds it", func(t *testing.T, f refundFixture) {
			f.c.want(f.c.refund("R1", f.debit, fixtureDebit+1, ""), "refund_exceeds")
			if b := f.balance(); b != 10_000-fixtureDebit {
				t.Errorf("balance %d", b)
			}
		}},
		{"an unknown order is not refundable", func(t *testing.T, f refundFixture) {
			f.c.want(f.c.refund("R1", "NO-SUCH-ORDER", 1, ""), "order_not_refundable")
		}},
		{"a declined debit is not refundable", func(t *testing.T, f refundFixture) {
			declined := f.e.orderNo()
			f.c.want(f.c.charge(declined, f.agr, 1_000_000), "insufficient_funds")
			f.c.want(f.c.refund("R1", declined, 1, ""), "order_not_refundable")
		}},
		{"another merchant's debit is not refundable", func(t *testing.T, f refundFixture) {
			other := f.e.client(f.c.code, "OTHER")
			other.want(other.refund("R1", f.debit, 1, ""), "order_not_refundable")
			f.c.want(f.c.refund("R1", f.debit, 1, ""), "success") // refund numbers are per merchant
		}},
		{"a refund is not refundable", func(t *testing.T, f refundFixture) {
			f.c.want(f.c.refund("R1", f.debit, 100, ""), "success")
			f.c.want(f.c.refund("R2", "R1", 50, ""), "order_not_refundable")
		}},
		{"180 days after the debit on the bank's clock, and not a second more", func(t *testing.T, f refundFixture) {
			f.e.advance(180 * 24 * time.Hour)
			f.c.want(f.c.refund("R1", f.debit, 1, ""), "success")
			f.e.advance(time.Second)
			f.c.want(f.c.refund("R2", f.debit, 1, ""), "refund_window_expired")
		}},
		{"the window is checked before the amount", func(t *testing.T, f refundFixture) {
			f.e.advance(181 * 24 * time.Hour)
			f.c.want(f.c.refund("R1", f.debit, fixtureDebit+1, ""), "refund_window_expired")
		}},
		{"a repeat answers the original and credits once", func(t *testing.T, f refundFixture) {
			c := f.c
			first := c.refund("R1", f.debit, fixtureDebit, "")
			c.want(first, "success")
			f.e.advance(time.Hour)
			again := c.refund("R1", f.debit, fixtureDebit, "")
			c.want(again, "success") // though nothing is left to refund now
			if again.BankTxnNo != first.BankTxnNo || again.FinishedAt != first.FinishedAt {
				t.Errorf("repeat %+v, first %+v", again, first)
			}
			if b, n := f.balance(), len(f.refunds()); b != 10_000 || n != 1 {
				t.Errorf("balance %d with %d refunds after a repeat", b, n)
			}
		}},
		{"a repeat of a decline answers the decline", func(t *testing.T, f refundFixture) {
			c := f.c
			first := c.refund("R1", f.debit, fixtureDebit+1, "")
			c.want(first, "refund_exceeds")
			again := c.refund("R1", f.debit, fixtureDebit+1, "")
			c.want(again, "refund_exceeds")
			if again.BankTxnNo != first.BankTxnNo {
				t.Errorf("repeat answered bank_txn_no %s, first %s", again.BankTxnNo, first.BankTxnNo)
			}
		}},
		{"a refund number with other terms is a conflict naming only the refund number", func(t *testing.T, f refundFixture) {
			c := f.c
			other := f.e.orderNo()
			c.want(c.charge(other, f.agr, 500), "success")
			c.want(c.refund("R1", f.debit, 100, ""), "success")
			for _, r := range []answer{c.refund("R1", f.debit, 101, ""), c.refund("R1", other, 100, "")} {
				c.want(r, "order_conflict")
				if r.RefundNo != "R1" || r.OrderNo != "" || r.Status != "" || r.BankTxnNo != "" || r.Amount != 0 {
					t.Errorf("conflict answer %+v", r)
				}
			}
			if b := f.balance(); b != 10_000-fixtureDebit-500+100 {
				t.Errorf("balance %d", b)
			}
		}},
		{"refund and debit numbers share one namespace", func(t *testing.T, f refundFixture) {
			c := f.c
			r := c.refund(f.debit, f.debit, 100, "")
			c.want(r, "order_conflict")
			c.want(c.refund("R1", f.debit, 100, ""), "success")
			c.want(c.charge("R1", f.agr, 100), "order_conflict")
			if q := c.query("R1"); q.Type != "refund" || q.Status != "SUCCESS" {
				t.Errorf("the refund after a charge reused its number: %+v", q)
			}
			if b := f.balance(); b != 10_000-fixtureDebit+100 {
				t.Errorf("balance %d", b)
			}
		}},
		{"no live agreement and no active card needed", func(t *testing.T, f refundFixture) {
			c := f.c
			c.want(c.call("unbind", fields{AgreementNo: f.agr}), "success")
			closed := f.a
			closed.Status, closed.Balance = "closed", 10_000-fixtureDebit
			f.e.do("POST", "/sim/accounts", closed, http.StatusCreated, nil)
			c.want(c.refund("R1", f.debit, 300, ""), "success")
			if b := f.balance(); b != 10_000-fixtureDebit+300 {
				t.Errorf("balance %d", b)
			}
		}},
		{"malformed refunds record nothing", func(t *testing.T, f refundFixture) {
			c := f.c
			for _, fl := range []fields{
				{OrderNo: f.debit, Amount: 1, Currency: "CNY"},
				{RefundNo: "has space", OrderNo: f.debit, Amount: 1, Currency: "CNY"},
				{RefundNo: "R1", Amount: 1, Currency: "CNY"},
				{RefundNo: "R1", OrderNo: f.debit, Currency: "CNY"},
				{RefundNo: "R1", OrderNo: f.debit, Amount: -1, Currency: "CNY"},
				{RefundNo: "R1", OrderNo: f.debit, Amount: 1, Currency: "USD"},
				{RefundNo: "R1", OrderNo: f.debit, Amount: 1, Currency: "CNY", NotifyURL: "ftp://x/y"},
			} {
				r := c.call("refund", fl)
				c.want(r, "bad_request")
				if fl.RefundNo == "R1" && r.RefundNo != "R1" {
					t.Errorf("malformed refund answered refund_no %q", r.RefundNo)
				}
			}
			c.want(c.query("R1"), "order_not_found")
			c.want(c.refund("R1", f.debit, 1, ""), "success")
		}},
		{"declined refunds are not failed debits", func(t *testing.T, f refundFixture) {
			for i := range 4 {
				f.c.want(f.c.refund(fmt.Sprintf("R%d", i), "NOPE", 1, ""), "order_not_refundable")
			}
			f.c.want(f.c.charge(f.e.orderNo(), f.agr, 1), "success")
			if v := f.e.account(f.a.CardNumber); v.FailedDebitsToday != 0 {
				t.Errorf("%d failed debits", v.FailedDebitsToday)
			}
		}},
	}
	for _, code := range syncBanks {
		for _, tc := range cases {
			t.Run(code+" "+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, newRefundFixture(t, code))
			})
		}
	}
}

func TestRefundsAtAnAsyncBank(t *testing.T) {
	t.Parallel()
	t.Run("processing, then a signed callback; the credit comes with it", func(t *testing.T) {
		t.Parallel()
		const delay = time.Second
		f := newRefundFixture(t, "CMB", withConfig(func(c *sim.Config) { c.AsyncDelay = delay }))
		c := f.c
		rcv := newReceiver(t, 0)
		start := time.Now()
		r := c.refund("R1", f.debit, 400, rcv.url)
		c.want(r, "processing")
		if r.Status != "PROCESSING" || r.RefundNo != "R1" || r.OrderNo != f.debit || r.BankTxnNo == "" || r.FinishedAt != "" {
			t.Fatalf("refund answer %+v", r)
		}
		q := c.query("R1")
		again := c.refund("R1", f.debit, 400, rcv.url)
		bal := f.balance()
		if time.Since(start) < delay*9/10 { // still inside the delay: nothing may have settled
			if q.Status != "PROCESSING" || q.ResultCode != "0001" || q.Type != "refund" || q.RefundOf != f.debit || q.FinishedAt != "" {
				t.Errorf("query while processing %+v", q)
			}
			c.want(again, "processing")
			if bal != 10_000-fixtureDebit {
				t.Errorf("credited before settling: balance %d", bal)
			}
		}
		cb := c.verifyCallback(t, rcv.next(t))
		if cb.Type != "refund" || cb.OrderNo != "R1" || cb.RefundOf != f.debit || cb.Status != "SUCCESS" || cb.ResultCode != "0000" ||
			cb.Amount != 400 || cb.BankTxnNo != r.BankTxnNo || cb.FinishedAt == "" {
			t.Fatalf("callback %+v", cb)
		}
		c.want(c.refund("R1", f.debit, 400, rcv.url), "success")
		if b, n := f.balance(), len(f.refunds()); b != 10_000-fixtureDebit+400 || n != 1 {
			t.Errorf("balance %d with %d refunds", b, n)
		}
	})
	t.Run("a processing refund counts against the debit; a decline comes by callback", func(t *testing.T) {
		t.Parallel()
		f := newRefundFixture(t, "CMB")
		c := f.c
		rcv := newReceiver(t, 0)
		c.want(c.refund("R1", f.debit, 900, rcv.url), "processing")
		c.want(c.refund("R2", f.debit, 200, rcv.url), "processing")
		got := map[string]callback{}
		for range 2 {
			cb := c.verifyCallback(t, rcv.next(t))
			got[cb.OrderNo] = cb
		}
		if got["R1"].Status != "SUCCESS" || got["R2"].Status != "FAILED" || got["R2"].ResultCode != "4010" || got["R2"].Type != "refund" {
			t.Fatalf("callbacks %+v", got)
		}
		c.want(c.refund("R2", f.debit, 200, rcv.url), "refund_exceeds")
		c.want(c.refund("R3", "NOPE", 1, rcv.url), "processing")
		if cb := c.verifyCallback(t, rcv.next(t)); cb.OrderNo != "R3" || cb.ResultCode != "4008" || cb.Status != "FAILED" {
			t.Errorf("callback %+v", cb)
		}
	})
	t.Run("notify_url is required", func(t *testing.T) {
		t.Parallel()
		f := newRefundFixture(t, "CMB")
		f.c.want(f.c.refund("R1", f.debit, 1, ""), "bad_request")
		f.c.want(f.c.query("R1"), "order_not_found")
	})
}

func TestRefundFaults(t *testing.T) {
	t.Parallel()
	send := func(f refundFixture, ctx context.Context, refundNo string) (int, error) {
		st, _, _, err := f.c.send(ctx, f.c.build("refund", fields{RefundNo: refundNo, OrderNo: f.debit, Amount: 300, Currency: "CNY"}))
		return st, err
	}
	type tc struct {
		name string
		run  func(t *testing.T, f refundFixture)
	}
	cases := []tc{
		{"error answers 503 and refunds nothing", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "error"})
			if st, err := send(f, context.Background(), "R1"); err != nil || st != http.StatusServiceUnavailable {
				t.Fatalf("HTTP %d %v", st, err)
			}
			f.c.want(f.c.query("R1"), "order_not_found")
			f.c.want(f.c.refund("R1", f.debit, 300, ""), "success")
		}},
		{"decline answers the code and records nothing", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "decline", "code": "refund_window_expired"})
			r := f.c.refund("R1", f.debit, 300, "")
			f.c.want(r, "refund_window_expired")
			if r.Status != "FAILED" || r.RefundNo != "R1" || r.OrderNo != f.debit {
				t.Errorf("declined refund %+v", r)
			}
			f.c.want(f.c.query("R1"), "order_not_found")
			if b := f.balance(); b != 10_000-fixtureDebit {
				t.Errorf("balance %d", b)
			}
		}},
		{"decline by the dialect's code", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "decline", "code": f.c.codeOf("refund_exceeds")})
			f.c.want(f.c.refund("R1", f.debit, 300, ""), "refund_exceeds")
		}},
		{"processing settles later and calls back", func(t *testing.T, f refundFixture) {
			rcv := newReceiver(t, 0)
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "processing"})
			r := f.c.refund("R1", f.debit, 300, rcv.url)
			f.c.want(r, "processing")
			cb := f.c.verifyCallback(t, rcv.next(t))
			if cb.Type != "refund" || cb.OrderNo != "R1" || cb.RefundOf != f.debit || cb.Status != "SUCCESS" ||
				cb.ResultCode != f.c.codeOf("success") || cb.Amount != 300 || cb.BankTxnNo != r.BankTxnNo {
				t.Errorf("callback %+v", cb)
			}
			if q := f.c.query("R1"); q.Status != "SUCCESS" || f.balance() != 10_000-fixtureDebit+300 {
				t.Errorf("query %+v", q)
			}
		}},
		{"processing without notify_url settles silently", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "processing"})
			f.c.want(f.c.refund("R1", f.debit, 300, ""), "processing")
			waitFor(t, "the refund to settle", func() bool { return f.c.query("R1").Status == "SUCCESS" })
		}},
		{"timeout holds until the caller gives up and refunds nothing", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "timeout"})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := send(f, ctx, "R1"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v, want the caller's deadline", err)
			}
			f.c.want(f.c.query("R1"), "order_not_found")
		}},
		{"timeout with apply refunds", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "timeout", "apply": true})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := send(f, ctx, "R1"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v, want the caller's deadline", err)
			}
			if q := f.c.query("R1"); q.Status != "SUCCESS" || len(f.refunds()) != 1 {
				t.Errorf("query %+v", q)
			}
		}},
		{"drop_response refunds; the retry answers it and credits once", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "refund", "mode": "drop_response"})
			if st, err := send(f, context.Background(), "R1"); err == nil {
				t.Fatalf("got HTTP %d, want no answer", st)
			}
			l := f.refunds()
			if len(l) != 1 {
				t.Fatalf("refunds %+v", l)
			}
			r := f.c.refund("R1", f.debit, 300, "")
			f.c.want(r, "success")
			if r.BankTxnNo != l[0].BankTxnNo || len(f.refunds()) != 1 || f.balance() != 10_000-fixtureDebit+300 {
				t.Error("the retry refunded again")
			}
		}},
		{"a charge fault leaves refunds alone", func(t *testing.T, f refundFixture) {
			f.e.fault(map[string]any{"bank_code": f.c.code, "operation": "charge", "mode": "error"})
			f.c.want(f.c.refund("R1", f.debit, 300, ""), "success")
		}},
	}
	for _, code := range syncBanks {
		for _, tc := range cases {
			t.Run(code+" "+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, newRefundFixture(t, code))
			})
		}
	}
}

// TestConcurrentRefunds: 200 refunds of one debit at once never return
// more than it, and every one refused was refused for want of what was
// left; 20 sends of one refund number refund once.
func TestConcurrentRefunds(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"ICBC", "CMB"} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			f := newRefundFixture(t, code, withConfig(func(c *sim.Config) { c.Now = nil })) // the real clock
			c := f.c
			notify := ""
			if code == "CMB" {
				sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
				t.Cleanup(sink.Close)
				notify = sink.URL
			}
			const n = 200
			amounts := make([]int64, n)
			answers := make([]answer, n)
			same := make([]answer, 20)
			var wg sync.WaitGroup
			for i := range answers {
				amounts[i] = int64(1 + (i*37)%20) // about 2 000 fen asked of a 1 000 fen debit
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i] = c.refund(fmt.Sprintf("CR-%d", i), f.debit, amounts[i], notify)
				}()
			}
			for i := range same {
				wg.Add(1)
				go func() {
					defer wg.Done()
					same[i] = c.refund("SAME", f.debit, 5, notify)
				}()
			}
			wg.Wait()
			// final is a refund's settled state: its answer at a sync bank,
			// its query once settled at an async one.
			final := func(refundNo string, a answer) answer {
				if code != "CMB" {
					return a
				}
				waitFor(t, "refund "+refundNo+" to settle", func() bool {
					a = c.query(refundNo)
					return a.Status != "PROCESSING"
				})
				return a
			}
			var refunded int64
			var refused []int64
			for i := range answers {
				switch a := final(fmt.Sprintf("CR-%d", i), answers[i]); a.Status {
				case "SUCCESS":
					refunded += amounts[i]
				case "FAILED":
					if a.Code != "0000" && a.Code != c.codeOf("refund_exceeds") || a.ResultCode != "" && a.ResultCode != c.codeOf("refund_exceeds") {
						t.Errorf("refund %d: %+v", i, a)
					}
					refused = append(refused, amounts[i])
				default:
					t.Errorf("refund %d: %+v", i, a)
				}
			}
			for i := range same {
				// At CMB a late send may see the refund settled already.
				if same[i].BankTxnNo != same[0].BankTxnNo || code != "CMB" && same[i].Code != same[0].Code {
					t.Errorf("send %d of one refund number: %+v, first %+v", i, same[i], same[0])
				}
			}
			if q := final("SAME", c.query("SAME")); q.Status == "SUCCESS" {
				refunded += 5
			}
			left := fixtureDebit - refunded
			if left < 0 {
				t.Fatalf("refunded %d of a %d fen debit", refunded, fixtureDebit)
			}
			if len(refused) == 0 {
				t.Fatal("every refund succeeded; the test wants some refused")
			}
			for _, a := range refused {
				if a <= left {
					t.Errorf("a refund of %d refused while %d was left", a, left)
				}
			}
			var sum int64
			for _, l := range f.refunds() {
				sum += l.Amount
			}
			if sum != refunded || f.balance() != 10_000-fixtureDebit+refunded {
				t.Errorf("ledger refunds %d, balance %d, answers refunded %d", sum, f.balance(), refunded)
			}
		})
	}
}

// TestStatementsListRefundsAndTurnFinal: a statement holds the day's
// debits and refunds that succeeded, each refund on the day it finished,
// and is final once the bank's clock has passed the end of the day.
func TestStatementsListRefundsAndTurnFinal(t *testing.T) {
	t.Parallel()
	for _, code := range syncBanks {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			f := newRefundFixture(t, code) // the debit at 2025-03-10 10:00
			c := f.c
			statement := func(date string) answer {
				t.Helper()
				st := c.call("statement", fields{Date: date})
				c.want(st, "success")
				if st.Final == nil {
					t.Fatalf("statement of %s carries no final: %s", date, st.Raw)
				}
				return st
			}
			r1 := c.refund("R1", f.debit, 300, "")
			c.want(r1, "success")
			c.want(c.refund("R-NO", f.debit, 5000, ""), "refund_exceeds")
			st := statement("2025-03-10")
			at := base.Format(time.RFC3339)
			want := []statementEntry{
				debitEntry(f.debit, f.agr, fixtureDebit, f.txn, at),
				{Type: "refund", OrderNo: "R1", RefundOf: f.debit, AgreementNo: f.agr, Amount: 300, BankTxnNo: r1.BankTxnNo, FinishedAt: at},
			}
			if *st.Final || !slices.Equal(st.Entries, want) {
				t.Fatalf("statement of the day so far: final %v %+v, want not final %+v", *st.Final, st.Entries, want)
			}
			// 10:00 → 23:59:59 is still the same day in Shanghai.
			f.e.advance(13*time.Hour + 59*time.Minute + 59*time.Second)
			if st := statement("2025-03-10"); *st.Final {
				t.Error("final a second before the day ends")
			}
			f.e.advance(time.Second)
			r2 := c.refund("R2", f.debit, 200, "")
			c.want(r2, "success")
			if st := statement("2025-03-10"); !*st.Final || !slices.Equal(st.Entries, want) {
				t.Errorf("the closed day: final %v %+v", *st.Final, st.Entries)
			}
			st = statement("2025-03-11")
			if *st.Final || !slices.Equal(st.Entries, []statementEntry{{Type: "refund", OrderNo: "R2", RefundOf: f.debit,
				AgreementNo: f.agr, Amount: 200, BankTxnNo: r2.BankTxnNo, FinishedAt: "2025-03-11T00:00:00+08:00"}}) {
				t.Errorf("the next day: final %v %+v", *st.Final, st.Entries)
			}
			if st := statement("2025-03-12"); *st.Final || len(st.Entries) != 0 {
				t.Errorf("a day to come: final %v %+v", *st.Final, st.Entries)
			}
			if st := statement("2025-03-09"); !*st.Final || len(st.Entries) != 0 {
				t.Errorf("the day before: final %v %+v", *st.Final, st.Entries)
			}
		})
	}
}
