package binding_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// limitedService is w's service with the abuse limits on, lowered to l,
// over banks (w.Banks unless given).
func (w *world) limitedService(t *testing.T, l binding.Limits, banks binding.Banks) *binding.Service {
	t.Helper()
	lim, err := limits.New(w.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if banks == nil {
		banks = w.Banks
	}
	svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: banks, Clock: w.clock,
		Limiter: lim, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// lowLimits: 2 applies an hour and 3 a day per card, 3 texts a day per
// phone, 2 mismatches a day per ID number and per card.
var lowLimits = binding.Limits{
	ApplyPerHour:   limits.Rule{Cap: 2, Window: time.Hour},
	ApplyPerDay:    limits.Rule{Cap: 3, Window: binding.Day},
	SMSPerDay:      limits.Rule{Cap: 3, Window: binding.Day},
	MismatchPerDay: limits.Rule{Cap: 2, Window: binding.Day},
}

// wantLimited wants err to be a rate limit that passes after about wait.
func wantLimited(t *testing.T, what string, err error, wait time.Duration) {
	t.Helper()
	var rl *binding.RateLimitedError
	if !errors.As(err, &rl) || !errors.Is(err, binding.ErrRateLimited) {
		t.Fatalf("%s: %v, want rate limited", what, err)
	}
	if wait > 0 && (rl.RetryAfter > wait || rl.RetryAfter < wait-time.Minute) {
		t.Fatalf("%s: retry after %s, want about %s", what, rl.RetryAfter, wait)
	}
}

func TestApplyLimitsPerCard(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	svc := w.limitedService(t, binding.Limits{
		ApplyPerHour: limits.Rule{Cap: 2, Window: time.Hour}, ApplyPerDay: limits.Rule{Cap: 3, Window: binding.Day},
		SMSPerDay: limits.Rule{Cap: 100, Window: binding.Day}, MismatchPerDay: lowLimits.MismatchPerDay}, nil)
	a := w.account(t, "ICBC", "debit")
	apply := func(n int) error {
		in := input(a)
		in.ExternalUserID = "apply-limit"
		_, err := svc.StartBinding(ctx, w.merchant, in)
		return err
	}
	for n := 1; n <= 2; n++ {
		if err := apply(n); err != nil {
			t.Fatalf("apply %d: %v", n, err)
		}
		w.clock.Advance(time.Minute)
	}
	wantLimited(t, "third apply in the hour", apply(3), time.Hour-2*time.Minute)
	if n := w.texts(t, a.Phone); n != 2 {
		t.Fatalf("%d texts after a refused apply, want 2: the refusal reached the bank", n)
	}
	w.clock.Advance(time.Hour)
	if err := apply(3); err != nil {
		t.Fatalf("apply an hour later: %v", err)
	}
	w.clock.Advance(time.Hour)
	wantLimited(t, "fourth apply in the day", apply(4), binding.Day-2*time.Hour-2*time.Minute)
	if n := w.texts(t, a.Phone); n != 3 {
		t.Fatalf("%d texts, want 3", n)
	}
	// A binding answered from a card already bound here reaches no bank
	// and counts nothing: the same card for the member it is bound to.
	w.clock.Advance(binding.Day)
	m, err := svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "apply-limit-member"})
	if err != nil {
		t.Fatal(err)
	}
	in := input(a)
	in.MemberID = m.ID
	b, err := svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
		t.Fatal(err)
	}
	for n := range 4 {
		if b, err := svc.StartBinding(ctx, w.merchant, in); err != nil || !b.Existing {
			t.Fatalf("repeat bind %d of a bound card: %+v, %v; want the existing card, not limited", n+1, b, err)
		}
	}
}

// TestAnswersWithoutTheBankCountNothing: an apply quickpay answers itself
// (an unknown member, an identity mismatch, a card bound to another
// member) gives its take back: it uses neither the card's applies nor the
// phone's texts, though the take was counted before the answer was known.
func TestAnswersWithoutTheBankCountNothing(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	one := limits.Rule{Cap: 1, Window: binding.Day}
	svc := w.limitedService(t, binding.Limits{ApplyPerHour: one, ApplyPerDay: one, SMSPerDay: one,
		MismatchPerDay: lowLimits.MismatchPerDay}, nil)
	a, someone := w.account(t, "ICBC", "debit"), w.account(t, "ICBC", "debit")
	m, err := svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "someone",
		Name: someone.HolderName, IDNumber: sensitive.NewIDNumber(someone.IDNumber)})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		in := input(a)
		in.MemberID = m.ID
		var im *binding.IdentityMismatchError
		if _, err := svc.StartBinding(ctx, w.merchant, in); !errors.As(err, &im) {
			t.Fatalf("apply %d for another person's member: %v, want an identity mismatch", n, err)
		}
		in.MemberID = "mbr_unknown"
		if _, err := svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("apply %d for an unknown member: %v, want not found", n, err)
		}
	}
	if n := w.texts(t, a.Phone); n != 0 {
		t.Fatalf("%d texts, want 0", n)
	}
	// The card's one apply and the phone's one text are still there.
	b, err := svc.StartBinding(ctx, w.merchant, input2(a, "holder"))
	if err != nil {
		t.Fatalf("the holder's apply after the refusals: %v", err)
	}
	if _, err := svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
		t.Fatal(err)
	}
	// The card's applies and the phone's texts are at their caps now, and
	// what quickpay answers itself is still answered: the existing card,
	// and a card bound to another member.
	if got, err := svc.StartBinding(ctx, w.merchant, input2(a, "holder")); err != nil || !got.Existing {
		t.Fatalf("the bound card again, at its caps: %+v, %v; want the existing card", got, err)
	}
	if _, err := svc.StartBinding(ctx, w.merchant, input2(a, "another-user")); !errors.Is(err, binding.ErrCardBoundElsewhere) {
		t.Fatalf("another user's apply of the card, at its caps: %v, want bound elsewhere", err)
	}
	// Another user's apply of it, from a phone new in its window, gives
	// back what it counted: the phone still has its one text.
	in := input2(a, "another-user")
	in.Phone = w.account(t, "ICBC", "debit").Phone
	if _, err := svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrCardBoundElsewhere) {
		t.Fatalf("another user's apply of the card from a new phone: %v, want bound elsewhere", err)
	}
	if err := svc.TakeSMS(ctx, w.Pool, in.Phone); err != nil {
		t.Fatalf("the new phone's text after an apply answered here: %v", err)
	}
}

func TestSMSLimitPerPhone(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	svc := w.limitedService(t, lowLimits, nil)
	a := w.account(t, "ICBC", "debit")
	in := input(a)
	in.ExternalUserID = "sms-limit"
	b, err := svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	for send := 2; send <= 3; send++ {
		w.clock.Advance(binding.OTPResendGap)
		if _, err := svc.Resend(ctx, w.merchant, b.ID); err != nil {
			t.Fatalf("send %d: %v", send, err)
		}
	}
	w.clock.Advance(binding.OTPResendGap)
	_, err = svc.Resend(ctx, w.merchant, b.ID)
	wantLimited(t, "fourth text to the phone", err, binding.Day-3*binding.OTPResendGap)
	// Quickpay's own texts (consent codes) count against the same phone.
	wantLimited(t, "a consent code to the phone", svc.TakeSMS(ctx, w.Pool, a.Phone), 0)
	if n := w.texts(t, a.Phone); n != 3 {
		t.Fatalf("%d texts, want 3", n)
	}
	if got, err := svc.GetBinding(ctx, w.merchant, b.ID); err != nil || got.OTPSends != 3 {
		t.Fatalf("binding after the refused resend: %+v, %v; want 3 sends", got, err)
	}
	// Another phone is counted apart.
	if err := svc.TakeSMS(ctx, w.Pool, w.account(t, "ICBC", "debit").Phone); err != nil {
		t.Fatalf("another phone: %v", err)
	}
}

func TestMismatchLimits(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	svc := w.limitedService(t, lowLimits, nil)
	a := w.account(t, "ICBC", "debit")
	wrongPhone := w.account(t, "ICBC", "debit").Phone
	for n := 1; n <= 2; n++ {
		in := input(a)
		in.ExternalUserID, in.Phone = "mismatch", wrongPhone
		_, err := svc.StartBinding(ctx, w.merchant, in)
		var em *binding.ElementsMismatchError
		if !errors.As(err, &em) || em.Field != "phone" {
			t.Fatalf("mismatch %d: %v, want elements mismatch on phone", n, err)
		}
	}
	// The card is refused before the bank, even with the right elements.
	in := input(a)
	in.ExternalUserID = "mismatch"
	_, err := svc.StartBinding(ctx, w.merchant, in)
	wantLimited(t, "apply after two mismatches of the card", err, binding.Day)
	if n := w.texts(t, a.Phone); n != 0 {
		t.Fatalf("%d texts to the card's phone, want 0", n)
	}
	// So is another card carrying the same ID number.
	b := w.account(t, "CCB", "debit")
	b.HolderName, b.IDNumber = a.HolderName, a.IDNumber
	if err := w.SimCtl.PutAccount(ctx, b); err != nil {
		t.Fatal(err)
	}
	in = input(b)
	in.ExternalUserID = "mismatch-2"
	_, err = svc.StartBinding(ctx, w.merchant, in)
	wantLimited(t, "another card with the ID number", err, binding.Day)
	if n := w.texts(t, b.Phone); n != 0 {
		t.Fatalf("%d texts to the second card's phone, want 0", n)
	}
	// The mismatches' texts were given back: the wrong phone got none and
	// still has its three.
	for range 3 {
		if err := svc.TakeSMS(ctx, w.Pool, wrongPhone); err != nil {
			t.Fatalf("the wrong phone's texts: %v", err)
		}
	}
	// A day later the card binds.
	w.clock.Advance(binding.Day)
	if _, err := svc.StartBinding(ctx, w.merchant, input2(a, "mismatch")); err != nil {
		t.Fatalf("a day later: %v", err)
	}
}

func TestResendCountSurvivesAHangUp(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	svc := w.limitedService(t, lowLimits, hangUpBanks{w.Banks})
	a := w.account(t, "ICBC", "debit")
	b, err := svc.StartBinding(ctx, w.merchant, input2(a, "hang-up"))
	if err != nil {
		t.Fatal(err)
	}
	for send := 2; send <= 3; send++ {
		w.clock.Advance(binding.OTPResendGap)
		if _, err := svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("hung-up resend: %v, want bank unavailable", err)
		}
	}
	if n := w.texts(t, a.Phone); n != 3 {
		t.Fatalf("%d texts, want 3", n)
	}
	got, err := svc.GetBinding(ctx, w.merchant, b.ID)
	if err != nil || got.OTPSends != 3 {
		t.Fatalf("binding after two hung-up resends: %+v, %v; want 3 sends counted", got, err)
	}
	w.clock.Advance(binding.OTPResendGap)
	_, err = svc.Resend(ctx, w.merchant, b.ID)
	wantLimited(t, "a fourth text", err, 0)
	if n := w.texts(t, a.Phone); n != 3 {
		t.Fatalf("%d texts, want 3", n)
	}
	// The newest code still confirms.
	if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
		t.Fatalf("confirm with the newest code: %v", err)
	}
}
