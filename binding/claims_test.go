package binding_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// TestSlowBankHoldsNoConnection: confirms hanging at a bank hold no
// database connection while they wait. With a pool of 2 connections and 4
// confirms held by ICBC until the adapter gives up, a read and a whole
// CCB binding on the same pool still finish; the held confirms answer
// bank_unavailable, leave their bindings untouched (claims released), and
// take their codes afterwards.
func TestSlowBankHoldsNoConnection(t *testing.T) {
	const conns, held = 2, 4
	ctx := context.Background()
	w := newWorld(t)
	svc, err := binding.New(binding.Config{Pool: testenv.PoolOf(t, conns), Vault: w.Vault, Banks: w.Banks, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, held)
	codes := make([]sensitive.OTP, held)
	for i := range ids {
		a, _, b := w.startImplicit(t, "ICBC", "slow-"+string(rune('a'+i)))
		ids[i], codes[i] = b.ID, w.code(t, a.Phone)
	}
	if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_confirm",
		Mode: conformance.FaultTimeout, Count: held}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, held)
	for i := range ids {
		go func() {
			_, err := svc.Confirm(ctx, w.merchant, ids[i], codes[i])
			errs <- err
		}()
	}
	waitArmed(t, w, 0) // every held confirm is at the bank

	short, cancel := context.WithTimeout(ctx, 4*time.Second) // the bank holds them 5 s
	defer cancel()
	if got, err := svc.GetBinding(short, w.merchant, ids[0]); err != nil || got.Status != binding.StatusOTPSent {
		t.Fatalf("a read while confirms hang at the bank: %+v, %v", got, err)
	}
	a := w.account(t, "CCB", "debit")
	in := input(a)
	in.ExternalUserID = "while-icbc-hangs"
	b, err := svc.StartBinding(short, w.merchant, in)
	if err != nil {
		t.Fatalf("a binding at another bank while ICBC hangs: %v", err)
	}
	if got, err := svc.Confirm(short, w.merchant, b.ID, w.code(t, a.Phone)); err != nil || got.Status != binding.StatusBound {
		t.Fatalf("its confirm: %+v, %v; want bound", got, err)
	}
	if len(errs) != 0 {
		t.Fatal("a held confirm answered before the other binding finished: the test proves nothing")
	}

	for range ids {
		if err := <-errs; !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("a held confirm: %v, want bank unavailable", err)
		}
	}
	for i, id := range ids {
		got, err := svc.GetBinding(ctx, w.merchant, id)
		if err != nil || got.Status != binding.StatusOTPSent || got.AttemptsLeft() != binding.OTPMaxAttempts {
			t.Fatalf("held binding = %+v, %v; want untouched", got, err)
		}
		if got, err := svc.Confirm(ctx, w.merchant, id, codes[i]); err != nil || got.Status != binding.StatusBound {
			t.Fatalf("held binding confirmed once the bank answers = %+v, %v", got, err)
		}
	}
}

// waitArmed polls, with a deadline, until banksim has n faults armed.
func waitArmed(t *testing.T, w *world, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := w.SimCtl.ArmedFaults(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d faults armed, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// confirmVia sends every bank's BindConfirm through via, which calls the
// real bank's: the tests below choose when an answer comes back, or what a
// repeat is answered.
type confirmVia struct {
	binding.Banks
	via func(bank bankadapters.Bank, ctx context.Context, ref string, otp sensitive.OTP) (string, error)
}

func (c confirmVia) Bank(code string) (bankadapters.Bank, bool) {
	b, ok := c.Banks.Bank(code)
	return confirmViaBank{b, c.via}, ok
}

type confirmViaBank struct {
	bankadapters.Bank
	via func(bank bankadapters.Bank, ctx context.Context, ref string, otp sensitive.OTP) (string, error)
}

func (b confirmViaBank) BindConfirm(ctx context.Context, ref string, otp sensitive.OTP) (string, error) {
	return b.via(b.Bank, ctx, ref, otp)
}

// heldConfirms holds each BindConfirm, once the real bank has answered
// it, until release is closed, and counts the calls.
type heldConfirms struct {
	calls   atomic.Int32
	atBank  chan struct{} // one send per call
	release chan struct{}
}

func (h *heldConfirms) confirm(bank bankadapters.Bank, ctx context.Context, ref string, otp sensitive.OTP) (string, error) {
	h.calls.Add(1)
	ag, err := bank.BindConfirm(ctx, ref, otp)
	h.atBank <- struct{}{}
	<-h.release
	return ag, err
}

// TestConfirmTwiceAtOnce: while one confirm of a binding is at the bank,
// another waits for its claim (one whose caller gives up first answers
// bank_unavailable without reaching the bank) and then returns the binding
// the first bound: one bank confirm, one card. A resend meanwhile is
// refused and texts nothing.
func TestConfirmTwiceAtOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	h := &heldConfirms{atBank: make(chan struct{}, 8), release: make(chan struct{})}
	svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: confirmVia{w.Banks, h.confirm},
		Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	a, _, b := w.startImplicit(t, "ICBC", "twice-at-once")
	code := w.code(t, a.Phone)
	type result struct {
		b   binding.Binding
		err error
	}
	first := make(chan result, 1)
	go func() {
		got, err := svc.Confirm(ctx, w.merchant, b.ID, code)
		first <- result{got, err}
	}()
	<-h.atBank

	impatient, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = svc.Confirm(impatient, w.merchant, b.ID, code)
	cancel()
	if !errors.Is(err, binding.ErrBankUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a confirm while another holds the binding, given up: %v; want bank unavailable after its deadline", err)
	}
	// No clock advance: the claim holds, and is checked before the gap.
	texts := w.texts(t, a.Phone)
	if _, err := svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBindingNotPending) {
		t.Fatalf("a resend while a confirm is at the bank: %v; want binding not pending", err)
	}
	if n := w.texts(t, a.Phone); n != texts {
		t.Fatalf("the refused resend texted: %d texts, want %d", n, texts)
	}

	var wg sync.WaitGroup
	second := make(chan result, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, err := svc.Confirm(ctx, w.merchant, b.ID, code)
		second <- result{got, err}
	}()
	close(h.release)
	wg.Wait()
	one, two := <-first, <-second
	if one.err != nil || two.err != nil || one.b.Status != binding.StatusBound || two.b.CardID != one.b.CardID {
		t.Fatalf("two confirms: %+v, %v and %+v, %v; want both bound to one card", one.b, one.err, two.b, two.err)
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("%d bank confirms, want 1", n)
	}
}

// TestConfirmCrashWindow: a confirm that dies after the bank confirmed
// and before its answer is written (the crash-window hook stops it there)
// leaves the binding claimed; a confirm meanwhile waits for the claim.
// Once the claim lapses, the next confirm takes it over and asks the bank
// again: the bank answers a repeat with the same code with its agreement
// (bankadapters.Bank), which settles it, the card made once, with the one
// agreement the bank holds. A repeat with another code is answered
// "session finished": the binding expires, the lapsed claim named in its
// audit row, and the bank's agreement is left for operators.
func TestConfirmCrashWindow(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	crash := func(t *testing.T, banks binding.Banks) (conformance.Account, binding.Binding, sensitive.OTP) {
		t.Helper()
		a, _, b := w.startImplicit(t, "ICBC", "crash-"+t.Name())
		code := w.code(t, a.Phone)
		dying, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: banks, Clock: w.clock})
		if err != nil {
			t.Fatal(err)
		}
		binding.SetCrashWindow(dying, func(op string) bool { return op == "confirm" })
		if _, err := dying.Confirm(ctx, w.merchant, b.ID, code); err == nil {
			t.Fatal("the confirm stopped at its crash window answered success")
		}
		state, err := w.SimCtl.Account(ctx, a.CardNumber)
		if err != nil || liveAgreements(state.Agreements) != 1 {
			t.Fatalf("the bank holds %d live agreements (%v), want 1", liveAgreements(state.Agreements), err)
		}
		impatient, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := w.svc.Confirm(impatient, w.merchant, b.ID, code); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("a confirm while the dead one's claim holds: %v; want bank unavailable", err)
		}
		w.clock.Advance(binding.ClaimTTL)
		return a, b, code
	}

	t.Run("the repeat with the same code settles it", func(t *testing.T) {
		a, b, code := crash(t, w.Banks)
		svc := w.svc
		got, err := svc.Confirm(ctx, w.merchant, b.ID, code)
		if err != nil || got.Status != binding.StatusBound {
			t.Fatalf("the confirm after the claim lapsed: %+v, %v; want bound", got, err)
		}
		cards, err := svc.ListCards(ctx, w.merchant, got.MemberID)
		if err != nil || len(cards) != 1 || cards[0].ID != got.CardID {
			t.Fatalf("the member's cards: %+v, %v; want the one card %s", cards, err, got.CardID)
		}
		state, err := w.SimCtl.Account(ctx, a.CardNumber)
		if err != nil || liveAgreements(state.Agreements) != 1 {
			t.Fatalf("the bank holds %d live agreements (%v), want 1", liveAgreements(state.Agreements), err)
		}
		if again, err := svc.Confirm(ctx, w.merchant, b.ID, code); err != nil || again.CardID != got.CardID {
			t.Fatalf("confirming the bound binding again: %+v, %v", again, err)
		}
	})

	t.Run("a repeat with another code: session finished", func(t *testing.T) {
		_, b, code := crash(t, w.Banks)
		other := sensitive.NewOTP("000000")
		if code.Reveal() == "000000" {
			other = sensitive.NewOTP("000001")
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, other); !errors.Is(err, binding.ErrBindingExpired) {
			t.Fatalf("the confirm after the claim lapsed: %v; want binding expired", err)
		}
		var named int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'otp.verify' AND subject = $1
			AND (details->>'after_lapsed_claim')::boolean`, b.ID).Scan(&named); err != nil || named != 1 {
			t.Fatalf("%d otp.verify rows naming the lapsed claim (%v), want 1", named, err)
		}
	})
}

func liveAgreements(ags []conformance.Agreement) int {
	n := 0
	for _, a := range ags {
		if a.Status == "active" {
			n++
		}
	}
	return n
}

// TestUnbindCrashWindow: an unbind that dies after the bank ended the
// agreement leaves the card active and claimed; another unbind meanwhile
// waits for the claim; once it lapses, the next unbind asks the bank again
// (banksim answers success for an agreement it ended; a bank may answer
// "agreement invalid", which unbinds too) and the card becomes unbound,
// once.
func TestUnbindCrashWindow(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "unbind-crash")
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	dying, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	binding.SetCrashWindow(dying, func(op string) bool { return op == "unbind" })
	if _, err := dying.Unbind(ctx, w.merchant, bound.CardID); err == nil {
		t.Fatal("the unbind stopped at its crash window answered success")
	}
	if c, err := w.svc.GetCard(ctx, w.merchant, bound.CardID); err != nil || c.Status != binding.CardActive {
		t.Fatalf("the card after the crash: %+v, %v; want still active", c, err)
	}
	state, err := w.SimCtl.Account(ctx, a.CardNumber)
	if err != nil || liveAgreements(state.Agreements) != 0 {
		t.Fatalf("the bank holds %d live agreements (%v), want 0", liveAgreements(state.Agreements), err)
	}
	impatient, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := w.svc.Unbind(impatient, w.merchant, bound.CardID); !errors.Is(err, binding.ErrBankUnavailable) {
		t.Fatalf("an unbind while the dead one's claim holds: %v; want bank unavailable", err)
	}
	w.clock.Advance(binding.ClaimTTL)
	unbound := w.eventCount("card.unbound")
	if c, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); err != nil || c.Status != binding.CardUnbound {
		t.Fatalf("the unbind after the claim lapsed: %+v, %v; want unbound", c, err)
	}
	if n := w.eventCount("card.unbound"); n != unbound+1 {
		t.Fatalf("%d card.unbound events, want %d", n, unbound+1)
	}
	var ok int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'card.unbind' AND subject = $1
		AND details->>'outcome' = 'ok'`, bound.CardID).Scan(&ok); err != nil || ok != 1 {
		t.Fatalf("%d card.unbind rows ok (%v), want 1", ok, err)
	}
}
