// Package conformance is the test suite every bank adapter passes against
// banksim (docs/banksim.md): binding with its element checks and OTP rules,
// charges and their declines, idempotent order and refund numbers, refunds
// and their rules, statements with their final flag, every fault mode
// banksim can inject on charges and refunds, tampering in transit both ways
// (callbacks and notices too), concurrent charges and refunds that must
// reconcile to the bank's ledger, and agreements the cardholder ends at the
// bank.
//
// An adapter's tests call Run with a Harness that builds the adapter
// against a given base URL and describes its wire dialect:
//
//	conformance.Run(t, conformance.Harness{
//		BankCode: "ICBC", MerchantNo: mno, Merchant: reg, BaseURL: simURL, Dialect: jsonHMAC,
//		New: func(t *testing.T, baseURL string, opts bankadapters.CallOptions) bankadapters.Bank { … },
//	})
//
// It also carries the helpers those tests need to set banksim up: Client
// for the test-control API, Gen for card numbers, ID numbers and phones,
// and Bind.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Harness is what Run needs to know of the adapter under test.
type Harness struct {
	// BankCode is the bank the adapter speaks to ("ICBC").
	BankCode string
	// MerchantNo is the platform's merchant number that New's adapters use,
	// already registered at banksim.
	MerchantNo string
	// Merchant is that registration as the harness posted it (credentials
	// and all). Run posts it again with its notice receiver as NotifyURL,
	// where banksim sends agreement_terminated notices.
	Merchant Merchant
	// BaseURL is banksim's base URL. Run arms faults at BankCode and moves
	// banksim's clock (which all its banks share): nothing else may use this
	// banksim while Run runs.
	BaseURL string
	// New builds the adapter against baseURL — banksim's, or a tampering
	// proxy in front of it — with opts. It must honour opts: Timeout and
	// Retries (fault tests), and Now (the notice tests put the adapter's
	// clock past the callback window). Signature timestamps are on real
	// time wherever a test moves the bank's clock (docs/banksim.md,
	// "Clocks"), so Now is real time otherwise.
	New func(t *testing.T, baseURL string, opts bankadapters.CallOptions) bankadapters.Bank
	// Dialect describes the adapter's wire dialect: its codes, and how to
	// alter its messages in transit.
	Dialect Dialect
	// Async is true for a bank that answers every charge and refund
	// PROCESSING and posts the result to its NotifyURL. Its adapter must be
	// a bankadapters.CallbackParser.
	//
	// Whenever the adapter is a CallbackParser, Run serves a notice
	// receiver, sends its URL with every charge and refund (a sync bank
	// uses it under a processing fault) and registers it as the merchant's
	// notify URL, and checks each callback with the adapter's parser.
	Async bool
}

// Timing of the suite. Generous: the tests run under -race on small
// machines, and every wait is a poll that ends as soon as it can.
const (
	callTimeout    = 10 * time.Second       // adapter per-attempt timeout
	shortTimeout   = 300 * time.Millisecond // adapter timeout in the timeout-fault tests
	settleTimeout  = 20 * time.Second       // for a PROCESSING charge to settle
	pollInterval   = 20 * time.Millisecond
	defaultBalance = 1_000_000 // fen
)

type suite struct {
	h      Harness
	sim    *Client
	gen    *Gen
	info   BankInfo
	offset atomic.Int64 // the bank's clock minus real time, nanoseconds
	cb     *callbacks   // async banks
}

// testCase is one behaviour every adapter shows.
type testCase struct {
	name string
	// alone: the case arms faults or moves the bank's clock, so it runs
	// with nothing else running. The others own their data and run in
	// parallel.
	alone bool
	run   func(t *testing.T)
}

// Run runs the conformance suite against the adapter h builds. The cases
// that arm faults or move the clock run first, one at a time; the others
// run in parallel once the calling test function returns, so keep banksim
// up until the test ends (t.Cleanup).
func Run(t *testing.T, h Harness) {
	if h.BankCode == "" || h.BaseURL == "" || h.New == nil || h.MerchantNo == "" {
		t.Fatal("conformance: Harness needs BankCode, MerchantNo, BaseURL and New")
	}
	if h.Merchant.MerchantNo != h.MerchantNo || h.Merchant.BankCode != h.BankCode {
		t.Fatal("conformance: Harness.Merchant must be the registration of MerchantNo at BankCode")
	}
	if err := h.Dialect.check(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	s := &suite{h: h, sim: NewClient(h.BaseURL), gen: NewGen()}
	info, err := s.sim.Bank(ctx, h.BankCode)
	if err != nil {
		t.Fatal(err)
	}
	if info.Async != h.Async {
		t.Fatalf("banksim says %s async=%v, the harness says %v", h.BankCode, info.Async, h.Async)
	}
	if info.Dialect != h.Dialect.Name {
		t.Fatalf("banksim says %s speaks %q, the harness's Dialect is %q", h.BankCode, info.Dialect, h.Dialect.Name)
	}
	s.info = info
	s.syncClock(t)
	if err := s.sim.ClearFaults(ctx, h.BankCode); err != nil {
		t.Fatal(err)
	}
	parser, ok := s.adapter(t, nil).(bankadapters.CallbackParser)
	if !ok && h.Async {
		t.Fatalf("%s is async but its adapter is no bankadapters.CallbackParser", h.BankCode)
	}
	if ok {
		s.cb = newCallbacks(t, parser)
		m := h.Merchant
		m.NotifyURL = s.cb.url
		if err := s.sim.RegisterMerchant(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	cases := s.cases()
	for _, c := range cases {
		if c.alone {
			t.Run(c.name, func(t *testing.T) {
				t.Cleanup(func() { s.clearFaults(t) })
				c.run(t)
			})
		}
	}
	for _, c := range cases {
		if !c.alone {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t)
			})
		}
	}
	if s.cb != nil {
		// Runs after the parallel cases: a callback that failed its
		// signature check is a bank answer the adapter refused wrongly
		// (the tampered ones are fed to ParseCallback directly, not posted).
		t.Cleanup(func() {
			if n := s.cb.refused.Load(); n > 0 {
				t.Errorf("%d genuine callbacks from banksim failed ParseCallback", n)
			}
		})
	}
}

// cases is the suite's table.
func (s *suite) cases() []testCase {
	cs := []testCase{
		{name: "bind debit card: one SMS code, confirm gives a live agreement", run: s.testBindHappy("debit")},
		{name: "bind credit card with expiry and CVV2", run: s.testBindHappy("credit")},
	}
	for _, m := range elementMismatches {
		cs = append(cs, testCase{name: m.name + " names " + m.field + " and sends no SMS", run: s.testBindMismatch(m)})
	}
	cs = append(cs,
		testCase{name: "frozen card cannot bind: hard decline, no SMS", run: s.testBindRefusedStatus("frozen")},
		testCase{name: "closed card cannot bind: hard decline, no SMS", run: s.testBindRefusedStatus("closed")},
		testCase{name: "card already bound: already bound, no SMS", run: s.testAlreadyBound},
		testCase{name: "wrong OTP then the right one binds", run: s.testOTPWrongThenRight},
		testCase{name: "fifth wrong OTP exceeds the attempts and kills the session", run: s.testOTPAttemptsExceeded},
		testCase{name: "OTP expires after 5 minutes", alone: true, run: s.testOTPExpired},
		testCase{name: "resend replaces the code: the old one is wrong, the new one binds", run: s.testResendReplaces},
		testCase{name: "confirmed session cannot be confirmed again", run: s.testConfirmTwice},

		testCase{name: "charge succeeds and query agrees", run: s.testChargeSuccess},
		testCase{name: "insufficient funds is a retryable decline", run: s.testDecline("insufficient_funds")},
		testCase{name: "over the single-debit limit is a retryable decline", run: s.testDecline("single_limit")},
		testCase{name: "over the daily limit is a retryable decline", run: s.testDecline("daily_limit")},
		testCase{name: "three failed debits then try tomorrow, and the next day charges work", alone: true, run: s.testTryTomorrow},
		testCase{name: "repeated order number returns the original result with one debit", run: s.testRepeatOrder},
		testCase{name: "same order number with another amount is a hard decline", run: s.testOrderConflict},
		testCase{name: "query of an unknown order is order not found", run: s.testQueryUnknown},
		testCase{name: "charge after unbind is a hard decline, and unbinding twice succeeds", run: s.testUnbind},
		testCase{name: "statement lists the day's successful debits with amounts", run: s.testStatement},
	)
	if s.h.Async {
		cs = append(cs, testCase{name: "callback altered in transit is refused", run: s.testCallbackTampered})
	}
	cs = append(cs,
		testCase{name: "refunds: partial ones add up to the full debit, the next is refund_exceeds, and query agrees", run: s.testRefundPartials},
		testCase{name: "refund of a whole debit in one go credits the card", run: s.testRefundFull},
		testCase{name: "repeated refund number returns the original result and credits once", run: s.testRefundRepeat},
		testCase{name: "refund over the debit is refund_exceeds, recorded and queryable, no credit", run: s.testRefundExceeds},
		testCase{name: "refund of an unknown order is order_not_refundable", run: s.testRefundNotRefundable(false)},
		testCase{name: "refund of a declined debit is order_not_refundable", run: s.testRefundNotRefundable(true)},
		testCase{name: "refund past 180 days is refund_window_expired; a younger debit of the card still refunds", alone: true, run: s.testRefundWindowExpired},
		testCase{name: "refund number reused with other terms, or a debit's order number, is order_conflict", run: s.testRefundConflict},
		testCase{name: "query of refund numbers: unknown is not found, and refund and debit numbers do not pass for each other", run: s.testQueryRefundKinds},
		testCase{name: "statement lists the day's refunds with their type and is final only for a closed day", run: s.testStatementRefunds},
	)
	cs = append(cs,
		testCase{name: "fault error on charge: unknown, query not found, no debit", alone: true, run: s.testFaultChargeError},
		testCase{name: "fault timeout before the debit: unknown, not found, same order retried debits once", alone: true, run: s.testFaultTimeout(false)},
		testCase{name: "fault timeout after the debit: unknown, query succeeded, one debit", alone: true, run: s.testFaultTimeout(true)},
		testCase{name: "fault processing: charge processing, query settles it", alone: true, run: s.testFaultProcessing},
	)
	for _, d := range faultDeclines {
		cs = append(cs, testCase{name: "fault decline " + d.reason + ": failed " + string(d.outcome) + ", no debit", alone: true, run: s.testFaultDecline(d.reason, d.outcome)})
	}
	cs = append(cs,
		testCase{name: "fault drop_response: unknown, query succeeded, exactly one debit", alone: true, run: s.testFaultDropResponse},
		testCase{name: "fault error on query once: query retries and succeeds", alone: true, run: s.testFaultQueryError},
		testCase{name: "fault error on bind_apply: bank unavailable after one attempt, no SMS", alone: true, run: s.testFaultBindApplyError},

		testCase{name: "bind request altered in transit is refused, no SMS", run: s.testTamperBindRequest},
		testCase{name: "charge request altered in transit is refused, no debit", run: s.testTamperChargeRequest},
		testCase{name: "bind answer altered in transit is an error naming the signature", run: s.testTamperBindAnswer},
		testCase{name: "charge answer forged to success is unknown, never success", run: s.testTamperChargeAnswer(false)},
		testCase{name: "charge answer forged to a decline for a made debit is unknown, and query tells the truth", run: s.testTamperChargeAnswer(true)},
		testCase{name: "signed answer of another order replayed to a charge is unknown, never success", run: s.testReplayedAnswer},
		testCase{name: "signed answer of another operation replayed to a charge is unknown, never a decline", run: s.testReplayedOtherOperation},

		testCase{name: "200 concurrent charges on 10 cards settle and reconcile to the ledger", run: s.testConcurrentCharges},
	)
	cs = append(cs,
		testCase{name: "fault error on refund: unknown, not found, the same refund number then credits once", alone: true, run: s.testFaultRefundError},
		testCase{name: "fault timeout on refund before the credit: unknown, not found, the same refund number credits once", alone: true, run: s.testFaultRefundTimeout(false)},
		testCase{name: "fault timeout on refund after the credit: unknown, query succeeded, one credit", alone: true, run: s.testFaultRefundTimeout(true)},
		testCase{name: "fault processing on refund: processing, query and the callback settle it", alone: true, run: s.testFaultRefundProcessing},
	)
	for _, r := range refundReasons {
		cs = append(cs, testCase{name: "fault decline " + r + " on refund: failed hard decline, not recorded, no credit", alone: true, run: s.testFaultRefundDecline(r)})
	}
	cs = append(cs,
		testCase{name: "fault drop_response on refund: unknown, query succeeded, exactly one credit", alone: true, run: s.testFaultRefundDropResponse},

		testCase{name: "refund request altered in transit is refused, no credit", run: s.testTamperRefundRequest},
		testCase{name: "refund answer forged to success is unknown, never success", run: s.testTamperRefundAnswer(false)},
		testCase{name: "refund answer forged to a decline for a made refund is unknown, and query tells the truth", run: s.testTamperRefundAnswer(true)},
		testCase{name: "signed answer of another refund replayed to a refund is unknown", run: s.testReplayedRefundAnswer},
		testCase{name: "200 concurrent refunds of one debit never refund more than the debit", run: s.testConcurrentRefunds},
	)
	if s.cb != nil {
		cs = append(cs,
			testCase{name: "refund callback altered in transit is refused", alone: !s.h.Async, run: s.testRefundCallbackTampered},
			testCase{name: "agreement ended by the cardholder: a verified notice, and charges on it are agreement_invalid", run: s.testAgreementTerminated},
			testCase{name: "agreement notice forged, unsigned or stale is refused", run: s.testAgreementNoticeTampered},
		)
	}
	return cs
}

// --- clock -----------------------------------------------------------------

// bankNow is the bank's clock, which moves business days, limits and
// statements (never signature timestamps).
func (s *suite) bankNow() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }

// syncClock reads the bank's clock.
func (s *suite) syncClock(t *testing.T) {
	t.Helper()
	bankNow, err := s.sim.Clock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.offset.Store(int64(time.Until(bankNow)))
}

// advance moves the bank's clock by d.
func (s *suite) advance(t *testing.T, d time.Duration) {
	t.Helper()
	before := s.bankNow()
	if _, err := s.sim.AdvanceClock(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	s.syncClock(t)
	if moved := s.bankNow().Sub(before); moved < d || moved > d+time.Minute {
		t.Fatalf("banksim's clock moved %v, want %v", moved, d)
	}
}

// --- adapters --------------------------------------------------------------

// adapter builds the adapter under test against banksim; edit adjusts its
// options.
func (s *suite) adapter(t *testing.T, edit func(*bankadapters.CallOptions)) bankadapters.Bank {
	t.Helper()
	return s.adapterAt(t, s.h.BaseURL, edit)
}

func (s *suite) adapterAt(t *testing.T, baseURL string, edit func(*bankadapters.CallOptions)) bankadapters.Bank {
	t.Helper()
	opts := bankadapters.CallOptions{
		Timeout: callTimeout,
		Now:     time.Now,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if edit != nil {
		edit(&opts)
	}
	b := s.h.New(t, baseURL, opts)
	if b == nil {
		t.Fatal("Harness.New returned nil")
	}
	if b.Code() != s.h.BankCode {
		t.Fatalf("adapter Code() = %q, want %q", b.Code(), s.h.BankCode)
	}
	return b
}

// --- banksim set-up and inspection ------------------------------------------

// newAccount creates a fresh active account of cardType with
// defaultBalance; edit may change it before it is stored.
func (s *suite) newAccount(t *testing.T, cardType string, edit func(*Account)) Account {
	t.Helper()
	a, err := s.gen.Account(s.info, cardType, defaultBalance)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&a)
	}
	if err := s.sim.PutAccount(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

// boundAccount creates an account and binds it through b.
func (s *suite) boundAccount(t *testing.T, b bankadapters.Bank, edit func(*Account)) (Account, string) {
	t.Helper()
	a := s.newAccount(t, "debit", edit)
	ag, err := Bind(t.Context(), b, s.sim, a, s.gen.OrderNo("BR"))
	if err != nil {
		t.Fatalf("bind %s: %v", mask(a.CardNumber), err)
	}
	return a, ag
}

func (s *suite) texts(t *testing.T, phone string) []SMS {
	t.Helper()
	out, err := s.sim.SMS(t.Context(), phone)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantTexts fails unless exactly n texts went to each phone.
func (s *suite) wantTexts(t *testing.T, n int, phones ...string) {
	t.Helper()
	for _, p := range phones {
		if got := len(s.texts(t, p)); got != n {
			t.Errorf("%d SMS sent to the phone ending %s, want %d", got, p[len(p)-4:], n)
		}
	}
}

// newestCode is the code in the newest text to phone.
func (s *suite) newestCode(t *testing.T, phone string) string {
	t.Helper()
	l := s.texts(t, phone)
	if len(l) == 0 {
		t.Fatal("no SMS sent")
	}
	if len(l[0].Code) != 6 {
		t.Fatalf("newest SMS carries a code of %d digits, want 6", len(l[0].Code))
	}
	return l[0].Code
}

func (s *suite) state(t *testing.T, card string) AccountState {
	t.Helper()
	st, err := s.sim.Account(t.Context(), card)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wantNoAgreement fails if the card has any agreement.
func (s *suite) wantNoAgreement(t *testing.T, card string) {
	t.Helper()
	if ags := s.state(t, card).Agreements; len(ags) != 0 {
		t.Errorf("card %s has %d agreements, want none", mask(card), len(ags))
	}
}

// debits returns the ledger's debits of orderNo on card.
func (s *suite) debits(t *testing.T, card, orderNo string) []LedgerEntry {
	t.Helper()
	l, err := s.sim.Ledger(t.Context(), card)
	if err != nil {
		t.Fatal(err)
	}
	var out []LedgerEntry
	for _, e := range l {
		if e.OrderNo == orderNo && e.Type != EntryRefund {
			out = append(out, e)
		}
	}
	return out
}

// wantDebits fails unless the bank debited orderNo n times, each of amount.
func (s *suite) wantDebits(t *testing.T, card, orderNo string, n int, amount int64) {
	t.Helper()
	d := s.debits(t, card, orderNo)
	if len(d) != n {
		t.Fatalf("ledger has %d debits of order %s, want %d", len(d), orderNo, n)
	}
	for _, e := range d {
		if e.Amount != amount {
			t.Errorf("ledger debit of order %s is %d fen, want %d", orderNo, e.Amount, amount)
		}
	}
}

func (s *suite) wantBalance(t *testing.T, card string, want int64) {
	t.Helper()
	if got := s.state(t, card).Balance; got != want {
		t.Errorf("balance of %s is %d fen, want %d", mask(card), got, want)
	}
}

func (s *suite) fault(t *testing.T, f Fault) {
	t.Helper()
	f.BankCode = s.h.BankCode
	if err := s.sim.AddFault(t.Context(), f); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) clearFaults(t *testing.T) {
	t.Helper()
	// t.Context is done during cleanup.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.sim.ClearFaults(ctx, s.h.BankCode); err != nil {
		t.Error(err)
	}
}

// code is reason's code in the bank's dialect.
func (s *suite) code(reason string) string { return s.h.Dialect.code(reason) }

// --- charges -----------------------------------------------------------------

// chargeReq is a charge of amount on agreementNo with a fresh order number.
func (s *suite) chargeReq(agreementNo string, amount int64) bankadapters.ChargeRequest {
	r := bankadapters.ChargeRequest{
		OrderNo: s.gen.OrderNo("CO"), AgreementNo: agreementNo, Amount: amount,
		Currency: "CNY", Description: "会员月费 conformance",
	}
	if s.cb != nil {
		r.NotifyURL = s.cb.url
	}
	return r
}

// final reports whether a charge's status is settled.
func final(st bankadapters.ChargeStatus) bool {
	return st == bankadapters.ChargeSucceeded || st == bankadapters.ChargeFailed
}

// settle polls Query until orderNo is succeeded or failed. Safe to call
// from any goroutine.
func settle(ctx context.Context, b bankadapters.Bank, orderNo string) (bankadapters.ChargeResult, error) {
	return settleBy(ctx, "order "+orderNo, func() (bankadapters.ChargeResult, error) { return b.Query(ctx, orderNo) },
		func(r bankadapters.ChargeResult) bankadapters.ChargeStatus { return r.Status })
}

// settleBy polls query until the status of its answer is final (succeeded
// or failed): a debit's or a refund's.
func settleBy[R any](ctx context.Context, what string, query func() (R, error), status func(R) bankadapters.ChargeStatus) (R, error) {
	var last R
	err := poll(ctx, settleTimeout, pollInterval, func() (bool, error) {
		r, err := query()
		if err != nil {
			return false, err
		}
		last = r
		return final(status(r)), nil
	})
	if err != nil {
		return last, fmt.Errorf("settle %s (last status %q): %w", what, status(last), err)
	}
	return last, nil
}

func (s *suite) settle(t *testing.T, b bankadapters.Bank, orderNo string) bankadapters.ChargeResult {
	t.Helper()
	r, err := settle(t.Context(), b, orderNo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// charge sends req and, for an async bank, checks the PROCESSING answer
// and settles it by query. The result is final.
func (s *suite) charge(t *testing.T, b bankadapters.Bank, req bankadapters.ChargeRequest) bankadapters.ChargeResult {
	t.Helper()
	r, err := b.Charge(t.Context(), req)
	if err != nil {
		t.Fatalf("charge %s: %v", req.OrderNo, err)
	}
	if r.OrderNo != req.OrderNo {
		t.Fatalf("charge answered order %q, want %q", r.OrderNo, req.OrderNo)
	}
	if s.h.Async {
		// A decline the bank refuses up front (order conflict) is final at once.
		if final(r.Status) {
			return r
		}
		if r.Status != bankadapters.ChargeProcessing || r.Outcome != bankadapters.OutcomeProcessing {
			t.Fatalf("async charge answered %s/%s, want processing (cause: %v)", r.Status, r.Outcome, r.Cause)
		}
		return s.settle(t, b, req.OrderNo)
	}
	if !final(r.Status) {
		t.Fatalf("sync charge answered %s/%s, want a final status (cause: %v)", r.Status, r.Outcome, r.Cause)
	}
	return r
}

// wantSucceeded fails unless r is a success of amount with a bank
// transaction number.
func wantSucceeded(t *testing.T, r bankadapters.ChargeResult, amount int64) {
	t.Helper()
	if r.Status != bankadapters.ChargeSucceeded || r.Outcome != bankadapters.OutcomeSuccess {
		t.Fatalf("order %s: %s/%s code %q (cause: %v), want succeeded", r.OrderNo, r.Status, r.Outcome, r.Code, r.Cause)
	}
	if r.Amount != amount {
		t.Errorf("order %s: amount %d, want %d", r.OrderNo, r.Amount, amount)
	}
	if r.BankTxnNo == "" {
		t.Errorf("order %s: success without a bank transaction number", r.OrderNo)
	}
}

// wantFailed fails unless r is a decline of class outcome with code.
func wantFailed(t *testing.T, r bankadapters.ChargeResult, outcome bankadapters.Outcome, code string) {
	t.Helper()
	if r.Status != bankadapters.ChargeFailed || r.Outcome != outcome {
		t.Fatalf("order %s: %s/%s code %q (cause: %v), want failed/%s", r.OrderNo, r.Status, r.Outcome, r.Code, r.Cause, outcome)
	}
	if r.Code != code {
		t.Errorf("order %s: bank code %q, want %q", r.OrderNo, r.Code, code)
	}
}

// wantUnknown fails unless r is an unknown result whose cause mentions
// each of words.
func wantUnknown(t *testing.T, r bankadapters.ChargeResult, words ...string) {
	t.Helper()
	wantUnknownAnswer(t, "order "+r.OrderNo, r.Status, r.Outcome, r.Code, r.Cause, words)
}

// wantUnknownAnswer is wantUnknown of a debit's or a refund's answer (what
// names it).
func wantUnknownAnswer(t *testing.T, what string, status bankadapters.ChargeStatus, outcome bankadapters.Outcome,
	code string, cause error, words []string) {
	t.Helper()
	if status != bankadapters.ChargeUnknown {
		t.Fatalf("%s: %s/%s code %q, want unknown", what, status, outcome, code)
	}
	if outcome == bankadapters.OutcomeSuccess {
		t.Errorf("%s: unknown result with outcome success", what)
	}
	if cause == nil {
		t.Fatalf("%s: unknown result without a cause", what)
	}
	for _, w := range words {
		if !strings.Contains(strings.ToLower(cause.Error()), w) {
			t.Errorf("%s: cause %q does not mention %q", what, cause, w)
		}
	}
}

// wantOrderNotFound fails unless the bank never received orderNo.
func wantOrderNotFound(t *testing.T, b bankadapters.Bank, orderNo string) {
	t.Helper()
	r, err := b.Query(t.Context(), orderNo)
	if !errors.Is(err, bankadapters.ErrOrderNotFound) {
		t.Fatalf("query %s = %s/%s, %v; want ErrOrderNotFound", orderNo, r.Status, r.Outcome, err)
	}
}

// wantError fails unless err is the bank's *bankadapters.Error of outcome.
func (s *suite) wantError(t *testing.T, err error, outcome bankadapters.Outcome) *bankadapters.Error {
	t.Helper()
	var be *bankadapters.Error
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a *bankadapters.Error with outcome %s", err, outcome)
	}
	if be.Outcome != outcome {
		t.Fatalf("err = %v: outcome %s, want %s", err, be.Outcome, outcome)
	}
	if be.Bank != s.h.BankCode {
		t.Errorf("err = %v: bank %q, want %q", err, be.Bank, s.h.BankCode)
	}
	return be
}

// --- binding -----------------------------------------------------------------

// BindRequest is the request that binds a's card.
func BindRequest(a Account, requestNo string) bankadapters.BindRequest {
	return bankadapters.BindRequest{
		RequestNo:  requestNo,
		CardNumber: sensitive.NewPAN(a.CardNumber),
		HolderName: a.HolderName,
		IDNumber:   sensitive.NewIDNumber(a.IDNumber),
		Phone:      a.Phone,
		Expiry:     sensitive.NewExpiry(a.Expiry),
		CVV2:       sensitive.NewCVV2(a.CVV2),
	}
}

// Bind binds a's card through b the way a user does: bind_apply, the code
// from the text banksim sent to a.Phone, bind_confirm. It returns the
// agreement number. It fails if apply sends no text or more than one.
func Bind(ctx context.Context, b bankadapters.Bank, c *Client, a Account, requestNo string) (string, error) {
	before, err := c.SMS(ctx, a.Phone)
	if err != nil {
		return "", err
	}
	sess, err := b.BindApply(ctx, BindRequest(a, requestNo))
	if err != nil {
		return "", fmt.Errorf("bind_apply: %w", err)
	}
	if sess.BindRef == "" {
		return "", errors.New("bind_apply: no bind reference")
	}
	after, err := c.SMS(ctx, a.Phone)
	if err != nil {
		return "", err
	}
	if len(after) != len(before)+1 {
		return "", fmt.Errorf("bind_apply sent %d texts, want 1", len(after)-len(before))
	}
	ag, err := b.BindConfirm(ctx, sess.BindRef, sensitive.NewOTP(after[0].Code))
	if err != nil {
		return "", fmt.Errorf("bind_confirm: %w", err)
	}
	if ag == "" {
		return "", errors.New("bind_confirm: no agreement number")
	}
	return ag, nil
}

// wrongCode is a 6-digit code other than code.
func wrongCode(code string) sensitive.OTP {
	b := []byte(code)
	b[len(b)-1] = '0' + (b[len(b)-1]-'0'+1)%10
	return sensitive.NewOTP(string(b))
}

// --- waiting -------------------------------------------------------------------

// poll calls check every interval until it reports done or fails, ctx ends,
// or timeout passes. It is the one place the suite waits on time.
func poll(ctx context.Context, timeout, interval time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// callbacks receives a bank's callbacks — results of charges and refunds,
// agreements ended — and checks each with the adapter's parser. It answers
// 200 to a verified one and 400 to one that fails, so the bank retries.
type callbacks struct {
	url     string
	parser  bankadapters.CallbackParser
	refused atomic.Int32

	mu      sync.Mutex
	got     map[noticeKey][]receivedCallback
	arrived chan struct{} // closed and replaced on each arrival
}

// noticeKey names what a notice is about: the order number of a charge's,
// the refund number of a refund's, the agreement number of an agreement's.
type noticeKey struct {
	kind bankadapters.NoticeKind
	no   string
}

type receivedCallback struct {
	notice bankadapters.Notice
	header http.Header
	body   []byte
}

func newCallbacks(t *testing.T, parser bankadapters.CallbackParser) *callbacks {
	t.Helper()
	c := &callbacks{parser: parser, got: map[noticeKey][]receivedCallback{}, arrived: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/notify"
	return c
}

func (c *callbacks) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "unreadable", http.StatusBadRequest)
		return
	}
	n, err := c.parser.ParseCallback(r.Header, body)
	var key noticeKey
	if err == nil {
		key.kind = n.Kind
		switch n.Kind {
		case bankadapters.NoticeCharge:
			key.no = n.Charge.OrderNo
		case bankadapters.NoticeRefund:
			key.no = n.Refund.RefundNo
		case bankadapters.NoticeAgreementTerminated:
			key.no = n.AgreementNo
		default:
			err = fmt.Errorf("notice of kind %q", n.Kind)
		}
	}
	if err != nil {
		c.refused.Add(1)
		http.Error(w, "refused", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.got[key] = append(c.got[key], receivedCallback{n, r.Header.Clone(), body})
	close(c.arrived)
	c.arrived = make(chan struct{})
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// wait returns the first verified callback for orderNo's charge.
func (c *callbacks) wait(ctx context.Context, orderNo string) (receivedCallback, error) {
	return c.waitFor(ctx, noticeKey{bankadapters.NoticeCharge, orderNo})
}

// waitFor returns the first verified notice about key.
func (c *callbacks) waitFor(ctx context.Context, key noticeKey) (receivedCallback, error) {
	timer := time.NewTimer(settleTimeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		l, ch := c.got[key], c.arrived
		c.mu.Unlock()
		if len(l) > 0 {
			return l[0], nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return receivedCallback{}, fmt.Errorf("no %s notice for %s within %v", key.kind, key.no, settleTimeout)
		case <-ctx.Done():
			return receivedCallback{}, ctx.Err()
		}
	}
}

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
