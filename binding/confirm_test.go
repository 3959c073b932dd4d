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

func TestOTPRules(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	start := func(t *testing.T) (conformance.Account, binding.Binding) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		in := input(a)
		in.ExternalUserID = "otp-" + a.Phone
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	wrong := func(code sensitive.OTP) sensitive.OTP {
		c := []byte(code.Reveal())
		c[5] = '0' + (c[5]-'0'+1)%10
		return sensitive.NewOTP(string(c))
	}

	t.Run("five wrong codes end the binding", func(t *testing.T) {
		a, b := start(t)
		code := w.code(t, a.Phone)
		for i := 1; i <= 4; i++ {
			_, err := w.svc.Confirm(ctx, w.merchant, b.ID, wrong(code))
			var oe *binding.OTPIncorrectError
			if !errors.As(err, &oe) || oe.AttemptsLeft != 5-i {
				t.Fatalf("wrong code %d: %v", i, err)
			}
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, wrong(code)); !errors.Is(err, binding.ErrOTPAttemptsExceeded) {
			t.Fatalf("fifth wrong code: %v", err)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, code); !errors.Is(err, binding.ErrOTPAttemptsExceeded) {
			t.Fatalf("right code after the fifth wrong one: %v", err)
		}
		got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
		if err != nil || got.Status != binding.StatusFailed || !w.sawEvent("binding.failed") {
			t.Fatalf("binding = %+v, %v", got, err)
		}
	})
	t.Run("an expired code", func(t *testing.T) {
		a, b := start(t)
		code := w.code(t, a.Phone)
		w.clock.Advance(binding.OTPValidity + time.Second)
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, code); !errors.Is(err, binding.ErrBindingExpired) {
			t.Fatalf("confirm after 5 minutes: %v", err)
		}
		if got, _ := w.svc.GetBinding(ctx, w.merchant, b.ID); got.Status != binding.StatusExpired {
			t.Fatalf("status = %s", got.Status)
		}
	})
	t.Run("resend too soon, then at most five sends", func(t *testing.T) {
		a, b := start(t)
		_, err := w.svc.Resend(ctx, w.merchant, b.ID)
		var soon *binding.ResendTooSoonError
		if !errors.As(err, &soon) || soon.RetryAfter <= 0 || soon.RetryAfter > binding.OTPResendGap {
			t.Fatalf("immediate resend: %v", err)
		}
		for send := 2; send <= binding.OTPMaxSends; send++ {
			w.clock.Advance(binding.OTPResendGap)
			got, err := w.svc.Resend(ctx, w.merchant, b.ID)
			if err != nil || got.OTPSends != send {
				t.Fatalf("send %d: %+v, %v", send, got, err)
			}
		}
		w.clock.Advance(binding.OTPResendGap)
		if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrResendLimit) {
			t.Fatalf("sixth send: %v", err)
		}
		if n := w.texts(t, a.Phone); n != binding.OTPMaxSends {
			t.Fatalf("%d texts, want %d", n, binding.OTPMaxSends)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
			t.Fatalf("newest code: %v", err)
		}
	})
}

// TestConfirmOutlivesItsCaller: a caller that goes away after the bank
// confirmed (its context cancelled while the confirm waits for the
// member's row, which the test holds) does not roll the binding back: the
// bank's agreement exists, and so does the card.
func TestConfirmOutlivesItsCaller(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "ICBC", "debit")
	m, _, b := w.startExplicit(t, a, binding.MemberInput{ExternalID: "hangs-up"})
	code := w.code(t, a.Phone)
	hold := w.hold(t, "members", m.ID)
	callerCtx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	done := make(chan error, 1)
	go func() {
		_, err := w.svc.Confirm(callerCtx, w.merchant, b.ID, code)
		done <- err
	}()
	w.waitLocked(t, "%FROM members m%", 1)
	hangUp()
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("confirm whose caller went away: %v", err)
	}
	if got, err := w.svc.GetBinding(ctx, w.merchant, b.ID); err != nil || got.Status != binding.StatusBound {
		t.Fatalf("binding %s, %v; want bound", got.Status, err)
	}
}

// TestNewAgreementReplacesAGoneOne: two bindings of one card for one
// member, begun together. The first is bound; the bank then loses its
// agreement (unbound there, out of band); the second's confirm gets a new
// agreement from the bank and is bound to the same card, which keeps the
// new agreement rather than the gone one; or, if the card was unbound
// while the confirm waited for its row, to a card made anew.
func TestNewAgreementReplacesAGoneOne(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	agreement := func(t *testing.T, cardID string) string {
		t.Helper()
		var ct []byte
		if err := w.Pool.QueryRow(ctx, `SELECT agreement_ct FROM cards WHERE id = $1`, cardID).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		pt, err := w.Vault.Decrypt(ctx, ct, binding.CardAgreementAAD(w.merchant, cardID), sensitive.Access{
			MerchantID: w.merchant, Actor: "test", Subject: cardID, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return string(pt)
	}
	// setUp binds the first of two bindings and ends its agreement at the
	// bank; it returns the bound one and the second, with its code.
	setUp := func(t *testing.T, externalID string) (binding.Binding, string, sensitive.OTP) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: externalID})
		if err != nil {
			t.Fatal(err)
		}
		in := input(a)
		in.MemberID = m.ID
		var ids []string
		var codes []sensitive.OTP
		for range 2 {
			b, err := w.svc.StartBinding(ctx, w.merchant, in)
			if err != nil {
				t.Fatal(err)
			}
			ids, codes = append(ids, b.ID), append(codes, w.code(t, a.Phone))
		}
		first, err := w.svc.Confirm(ctx, w.merchant, ids[0], codes[0])
		if err != nil {
			t.Fatal(err)
		}
		bank, _ := w.Banks.Bank("ICBC")
		if err := bank.Unbind(ctx, agreement(t, first.CardID)); err != nil {
			t.Fatal(err)
		}
		return first, ids[1], codes[1]
	}

	t.Run("the card keeps the new agreement", func(t *testing.T) {
		first, second, code := setUp(t, "re-agreed")
		gone := agreement(t, first.CardID)
		got, err := w.svc.Confirm(ctx, w.merchant, second, code)
		if err != nil || got.CardID != first.CardID {
			t.Fatalf("second confirm: card %q, %v; want the first's card %s", got.CardID, err, first.CardID)
		}
		if agreement(t, first.CardID) == gone {
			t.Fatal("the card kept the agreement the bank no longer has")
		}
		var audited int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'bind.bound' AND subject = $1
			AND (details->>'agreement_replaced')::boolean`, second).Scan(&audited); err != nil || audited != 1 {
			t.Fatalf("%d bind.bound audit rows naming the replaced agreement (%v), want 1", audited, err)
		}
	})

	t.Run("a card unbound meanwhile is made anew", func(t *testing.T) {
		first, second, code := setUp(t, "re-agreed-unbound")
		hold := w.hold(t, "cards", first.CardID)
		done := make(chan error, 1)
		var got binding.Binding
		go func() {
			var err error
			got, err = w.svc.Confirm(ctx, w.merchant, second, code)
			done <- err
		}()
		w.waitLocked(t, "%UPDATE cards SET agreement_ct%", 1)
		if _, err := hold.Exec(ctx, `UPDATE cards SET status = 'unbound' WHERE id = $1`, first.CardID); err != nil {
			t.Fatal(err)
		}
		if err := hold.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || got.CardID == "" || got.CardID == first.CardID {
			t.Fatalf("second confirm: card %q, %v; want a new card", got.CardID, err)
		}
		if c, err := w.svc.GetCard(ctx, w.merchant, got.CardID); err != nil || c.Status != binding.CardActive {
			t.Fatalf("the new card: %+v, %v; want active", c, err)
		}
	})
}

// TestConfirmFindsWhatChangedSinceApply: an implicit member that another
// binding created between a binding's apply and its confirm is found and
// checked at confirm. (A card bound meanwhile the bank itself refuses.)
func TestConfirmFindsWhatChangedSinceApply(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	start := func(a conformance.Account, externalID string) binding.Binding {
		t.Helper()
		in := input(a)
		in.ExternalUserID = externalID
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("the member appeared: same person, same member", func(t *testing.T) {
		a, b := w.account(t, "ICBC", "debit"), w.account(t, "CMB", "debit")
		b.HolderName, b.IDNumber = a.HolderName, a.IDNumber
		if err := w.SimCtl.PutAccount(ctx, b); err != nil {
			t.Fatal(err)
		}
		first, second := start(a, "race-1"), start(b, "race-1")
		one, err := w.svc.Confirm(ctx, w.merchant, first.ID, w.code(t, a.Phone))
		if err != nil {
			t.Fatal(err)
		}
		two, err := w.svc.Confirm(ctx, w.merchant, second.ID, w.code(t, b.Phone))
		if err != nil {
			t.Fatal(err)
		}
		if two.Status != binding.StatusBound || two.MemberID != one.MemberID || two.CardID == "" || two.CardID == one.CardID {
			t.Fatalf("second binding = %+v, want bound to a new card of member %s", two, one.MemberID)
		}
		cards, err := w.svc.ListCards(ctx, w.merchant, one.MemberID)
		if err != nil || len(cards) != 2 {
			t.Fatalf("member's cards = %v, %v; want 2", cards, err)
		}
	})

	t.Run("the member appeared: another person is refused", func(t *testing.T) {
		a, b := w.account(t, "ICBC", "debit"), w.account(t, "CMB", "debit")
		first, second := start(a, "race-2"), start(b, "race-2")
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, w.code(t, a.Phone)); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, w.code(t, b.Phone))
		if !errors.Is(err, binding.ErrIdentityMismatch) || got.Status != binding.StatusFailed {
			t.Fatalf("second confirm = %+v, %v; want failed, identity mismatch", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.Status != binding.StatusFailed ||
			again.FailureCode != "identity_mismatch" || again.CardID != "" {
			t.Fatalf("refused binding reads %+v, %v", again, err)
		}
	})

	// Two bindings of one card, both begun before either is confirmed: the
	// bank answers the second confirm "already bound".
	startWithCode := func(a conformance.Account, externalID string) (binding.Binding, sensitive.OTP) {
		t.Helper()
		b := start(a, externalID)
		return b, w.code(t, a.Phone)
	}
	t.Run("the same card twice for one member: the second confirm returns its card", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		first, code1 := startWithCode(a, "race-4")
		second, code2 := startWithCode(a, "race-4")
		one, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1)
		if err != nil {
			t.Fatal(err)
		}
		two, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		if err != nil || two.Status != binding.StatusBound || two.CardID != one.CardID || two.MemberID != one.MemberID {
			t.Fatalf("second confirm = %+v, %v; want bound to card %s of member %s", two, err, one.CardID, one.MemberID)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.CardID != one.CardID {
			t.Fatalf("second binding reads %+v, %v", again, err)
		}
		cards, err := w.svc.ListCards(ctx, w.merchant, one.MemberID)
		if err != nil || len(cards) != 1 {
			t.Fatalf("member's cards = %v, %v; want the one", cards, err)
		}
	})

	t.Run("the same card for two members: the second confirm is card_bound_elsewhere", func(t *testing.T) {
		a := w.account(t, "CCB", "debit")
		first, code1 := startWithCode(a, "race-5")
		second, code2 := startWithCode(a, "race-5-other")
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		if !errors.Is(err, binding.ErrCardBoundElsewhere) || got.Status != binding.StatusFailed || got.CardID != "" {
			t.Fatalf("second confirm = %+v, %v; want failed, card bound elsewhere", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, second.ID); err != nil || again.Status != binding.StatusFailed ||
			again.FailureCode != "card_bound_elsewhere" || again.MemberID != "" {
			t.Fatalf("refused binding reads %+v, %v", again, err)
		}
		if _, err := w.svc.FindMember(ctx, w.merchant, "race-5-other"); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("the refused implicit binding made a member: %v", err)
		}
	})

	t.Run("the card bound at another merchant meanwhile: the confirm is retryable", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		here, code := startWithCode(a, "race-6")
		other := testenv.Merchant(t, w.Pool)
		in := input(a)
		in.ExternalUserID = "race-6"
		there, err := w.svc.StartBinding(ctx, other, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Confirm(ctx, other, there.ID, w.code(t, a.Phone)); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, here.ID, code)
		if !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("confirm = %+v, %v; want bank unavailable", got, err)
		}
		if again, err := w.svc.GetBinding(ctx, w.merchant, here.ID); err != nil || again.Status != binding.StatusOTPSent {
			t.Fatalf("binding after the refused confirm reads %+v, %v; want still otp_sent", again, err)
		}
	})

	t.Run("a member declared by name: a namesake's card begun at the same time is refused", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		namesake := w.namesake(t, a)
		m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "race-7", Name: a.HolderName})
		if err != nil {
			t.Fatal(err)
		}
		startFor := func(acc conformance.Account) (binding.Binding, sensitive.OTP) {
			t.Helper()
			in := input(acc)
			in.MemberID = m.ID
			b, err := w.svc.StartBinding(ctx, w.merchant, in)
			if err != nil {
				t.Fatal(err)
			}
			return b, w.code(t, acc.Phone)
		}
		first, code1 := startFor(a)
		second, code2 := startFor(namesake)
		if _, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, second.ID, code2)
		var im *binding.IdentityMismatchError
		if !errors.As(err, &im) || im.Field != "id_number" || got.Status != binding.StatusFailed {
			t.Fatalf("namesake's confirm = %+v, %v; want failed, identity mismatch on id_number", got, err)
		}
		state, err := w.SimCtl.Account(ctx, namesake.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range state.Agreements {
			if ag.Status == "active" {
				t.Fatalf("the namesake's agreement %s is still active at the bank", ag.AgreementNo)
			}
		}
	})

	// A card bound to another member between apply and confirm, without
	// the bank's knowing, is made in the database: another member's active
	// card with the same number, written between apply and confirm. The
	// binding fails, and neither its card nor its implicit member is made
	// (a member exists once its binding succeeds).
	t.Run("the card appeared for another member: card_bound_elsewhere", func(t *testing.T) {
		a := w.account(t, "ICBC", "debit")
		pending := start(a, "race-3")
		other, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "race-3-other"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Pool.Exec(ctx, `INSERT INTO cards (id, merchant_id, member_id, status, bank_code, bank_name,
			card_type, masked_pan, last4, pan_ct, pan_fp, agreement_ct, binding_id)
			SELECT 'card_race3', merchant_id, $2, 'active', bank_code, bank_name, card_type, masked_pan, last4,
				pan_ct, pan_fp, '\x00', id FROM bindings WHERE id = $1`, pending.ID, other.ID); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.Confirm(ctx, w.merchant, pending.ID, w.code(t, a.Phone))
		if !errors.Is(err, binding.ErrCardBoundElsewhere) || got.Status != binding.StatusFailed || got.CardID != "" {
			t.Fatalf("confirm = %+v, %v; want failed, card bound elsewhere", got, err)
		}
		var active int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM cards c JOIN bindings b ON b.pan_fp = c.pan_fp
			WHERE b.id = $1 AND c.status = 'active'`, pending.ID).Scan(&active); err != nil || active != 1 {
			t.Fatalf("active cards with the number = %d, %v; want 1 (the other member's)", active, err)
		}
		if _, err := w.svc.FindMember(ctx, w.merchant, "race-3"); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("the refused implicit binding made a member: %v", err)
		}
	})
}

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

// gatedBanks puts one bank behind a bankadapters.WithLimit gate, shared
// by every service built on it.
type gatedBanks struct {
	binding.Banks
	code string
	bank bankadapters.Bank
}

func (g gatedBanks) Bank(code string) (bankadapters.Bank, bool) {
	if code == g.code {
		return g.bank, true
	}
	return g.Banks.Bank(code)
}

// TestConfirmQueuedPastItsTimeIsNotSent: a confirm that waits at its
// bank's gate past its time (bankadapters.ErrNotSent: the bank never saw
// it) answers bank_unavailable, writes its answer on a context of its own
// and releases its claim at once, so the user's next try confirms without
// waiting for the claim to lapse.
func TestConfirmQueuedPastItsTimeIsNotSent(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	icbc, _ := w.Banks.Bank("ICBC")
	banks := gatedBanks{Banks: w.Banks, code: "ICBC", bank: bankadapters.WithLimit(icbc, bankadapters.Limit{Concurrent: 1})}
	patient, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: banks, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	hasty, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: banks, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	binding.SetCallTimeout(hasty, 300*time.Millisecond)
	first, _, holding := w.startImplicit(t, "ICBC", "gate-first")
	second, _, queued := w.startImplicit(t, "ICBC", "gate-second")
	firstCode, secondCode := w.code(t, first.Phone), w.code(t, second.Phone)

	// The bank holds the first confirm, in the gate's only slot, until the
	// adapter gives up.
	if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_confirm",
		Mode: conformance.FaultTimeout, Count: 1}); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() {
		_, err := patient.Confirm(ctx, w.merchant, holding.ID, firstCode)
		held <- err
	}()
	waitArmed(t, w, 0)

	if _, err := hasty.Confirm(ctx, w.merchant, queued.ID, secondCode); !errors.Is(err, binding.ErrBankUnavailable) {
		t.Fatalf("a confirm queued at the gate past its time: %v; want bank unavailable", err)
	}
	var claimed bool
	if err := w.Pool.QueryRow(ctx, `SELECT claimed_by IS NOT NULL FROM bindings WHERE id = $1`, queued.ID).Scan(&claimed); err != nil || claimed {
		t.Fatalf("the queued confirm's claim is held (%v): want it released", err)
	}
	if state, err := w.SimCtl.Account(ctx, second.CardNumber); err != nil || liveAgreements(state.Agreements) != 0 {
		t.Fatalf("the bank holds %d agreements for the queued card (%v), want 0: it never saw the call", liveAgreements(state.Agreements), err)
	}
	if err := <-held; !errors.Is(err, binding.ErrBankUnavailable) {
		t.Fatalf("the held confirm: %v; want bank unavailable once the adapter gave up", err)
	}
	got, err := w.svc.Confirm(ctx, w.merchant, queued.ID, secondCode)
	if err != nil || got.Status != binding.StatusBound {
		t.Fatalf("the user's next try: %+v, %v; want bound at once", got, err)
	}
}
