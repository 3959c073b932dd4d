package binding_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
)

// TestResendsBeyondThePoolFinish: more concurrent resends than the pool
// has connections, each within its phone's limit, all finish: a resend
// counts its text in the transaction it holds, not on a second connection
// (which, with every connection held by a resend, none would get).
func TestResendsBeyondThePoolFinish(t *testing.T) {
	const conns, resends = 2, 6
	w := newWorld(t)
	small := testenv.PoolOf(t, conns)
	lim, err := limits.New(small)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := binding.New(binding.Config{Pool: small, Vault: w.Vault, Banks: w.Banks, Clock: w.clock,
		Limiter: lim, Limits: lowLimits})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, resends)
	for i := range ids {
		_, _, b := w.startImplicit(t, "ICBC", fmt.Sprintf("pool-%d", i))
		ids[i] = b.ID
	}
	w.clock.Advance(binding.OTPResendGap)
	// More resends than connections, each finishing within the limit.
	testenv.Concurrently(t, resends, 20*time.Second, func(ctx context.Context, i int) error {
		_, err := svc.Resend(ctx, w.merchant, ids[i])
		return err
	})
}

// TestResendCodeValidFromItsSend: a resend's code is valid for
// OTPValidity from its reservation, committed before the bank is asked: a
// confirm while the bank texts it, after the old code's expiry, is not
// expired, and neither is the binding of a resend whose answer was never
// written (the caller hung up).
func TestResendCodeValidFromItsSend(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)

	t.Run("confirm during the bank's call", func(t *testing.T) {
		a, _, b := w.startImplicit(t, "ICBC", "valid-during")
		w.clock.Advance(binding.OTPValidity - time.Second) // the first code has a second left
		var confirmed binding.Binding
		var cerr error
		svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Clock: w.clock,
			Banks: duringResend{w.Banks, func() {
				// The bank has texted the new code; the old one runs out.
				w.clock.Advance(2 * time.Second)
				confirmed, cerr = w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
			}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Resend(ctx, w.merchant, b.ID); err != nil {
			t.Fatalf("resend: %v", err)
		}
		if cerr != nil || confirmed.Status != binding.StatusBound {
			t.Fatalf("confirm with the new code past the old one's expiry: %+v, %v; want bound", confirmed, cerr)
		}
	})

	t.Run("a hung-up resend", func(t *testing.T) {
		a, _, b := w.startImplicit(t, "ICBC", "valid-hang-up")
		w.clock.Advance(binding.OTPValidity - time.Second)
		svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: hangUpBanks{w.Banks}, Clock: w.clock})
		if err != nil {
			t.Fatal(err)
		}
		sent := w.clock.Now().UTC().Truncate(time.Microsecond)
		if _, err := svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("hung-up resend: %v, want bank unavailable", err)
		}
		w.clock.Advance(2 * time.Second) // past the old code's expiry
		got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
		if err != nil || got.Status != binding.StatusOTPSent || !got.OTPExpiresAt.Equal(sent.Add(binding.OTPValidity)) {
			t.Fatalf("binding after a hung-up resend: %+v, %v; want otp_sent, expiring at %s", got, err, sent.Add(binding.OTPValidity))
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone)); err != nil {
			t.Fatalf("confirm with the hung-up resend's code: %v", err)
		}
	})
}

// TestResendRefusedByTheBank: a bank that refuses to send another code
// ends the binding (failed, with binding.failed), and the answer says why;
// it is not a 503 to retry.
func TestResendRefusedByTheBank(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for _, tc := range []struct {
		code, failure string
		want          error
	}{
		{"card_frozen", "card_declined", binding.ErrCardDeclined},
		{"otp_locked", "otp_attempts_exceeded", binding.ErrOTPAttemptsExceeded},
	} {
		t.Run(tc.code, func(t *testing.T) {
			a := w.account(t, "ICBC", "debit")
			b, err := w.svc.StartBinding(ctx, w.merchant, func() binding.BindInput {
				in := input(a)
				in.ExternalUserID = "resend-" + tc.code
				return in
			}())
			if err != nil {
				t.Fatal(err)
			}
			w.clock.Advance(binding.OTPResendGap)
			failedBefore := w.eventCount("binding.failed")
			if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_resend",
				Mode: conformance.FaultDecline, Code: tc.code, Count: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, tc.want) {
				t.Fatalf("resend: %v, want %v", err, tc.want)
			}
			got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
			if err != nil || got.Status != binding.StatusFailed || got.FailureCode != tc.failure {
				t.Fatalf("binding after the refused resend = %+v, %v; want failed %s", got, err, tc.failure)
			}
			if n := w.eventCount("binding.failed"); n != failedBefore+1 {
				t.Fatalf("%d binding.failed events, want %d", n, failedBefore+1)
			}
		})
	}
}

// TestResendAfterTheCardWasBound: the bank answers a resend "already
// bound" when another binding of the card, the same member's, was confirmed
// meanwhile: the binding is bound to that card.
func TestResendAfterTheCardWasBound(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, in, first := w.startImplicit(t, "ICBC", "resend-bound")
	code1 := w.code(t, a.Phone)
	second, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	one, err := w.svc.Confirm(ctx, w.merchant, first.ID, code1)
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(binding.OTPResendGap)
	if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_resend",
		Mode: conformance.FaultDecline, Code: "already_bound", Count: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := w.svc.Resend(ctx, w.merchant, second.ID)
	if err != nil || got.Status != binding.StatusBound || got.CardID != one.CardID || got.MemberID != one.MemberID {
		t.Fatalf("resend = %+v, %v; want bound to card %s", got, err, one.CardID)
	}
}

func TestExpiredBindingStaysExpired(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "exp-user")
	w.clock.Advance(binding.OTPValidity + time.Second)
	if got, _ := w.svc.GetBinding(ctx, w.merchant, b.ID); got.Status != binding.StatusExpired || got.FailureCode != "binding_expired" {
		t.Fatalf("GetBinding after expiry = %+v", got)
	}
	sent := w.texts(t, a.Phone)
	if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBindingExpired) {
		t.Fatalf("resend of an expired binding: %v", err)
	}
	if w.texts(t, a.Phone) != sent {
		t.Fatal("an expired binding got a new code")
	}
	if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBindingExpired) {
		t.Fatalf("second resend: %v", err)
	}
}

// duringResend runs during once the bank has taken a resend, before its
// answer is written.
type duringResend struct {
	binding.Banks
	during func()
}

func (d duringResend) Bank(code string) (bankadapters.Bank, bool) {
	b, ok := d.Banks.Bank(code)
	return duringResendBank{b, d.during}, ok
}

type duringResendBank struct {
	bankadapters.Bank
	during func()
}

func (b duringResendBank) BindResend(ctx context.Context, ref string) error {
	err := b.Bank.BindResend(ctx, ref)
	if err == nil {
		b.during()
	}
	return err
}

// hangUpBanks stands in for a caller who hangs up once the bank has texted
// a resend's code: the real bank is asked, then the call reports the
// caller's cancellation. (Provoking it for real needs a disconnect timed
// between the bank's answer and the commit.)
type hangUpBanks struct{ binding.Banks }

func (h hangUpBanks) Bank(code string) (bankadapters.Bank, bool) {
	b, ok := h.Banks.Bank(code)
	return hangUpBank{b}, ok
}

type hangUpBank struct{ bankadapters.Bank }

func (b hangUpBank) BindResend(ctx context.Context, ref string) error {
	if err := b.Bank.BindResend(ctx, ref); err != nil {
		return err
	}
	return &bankadapters.Error{Op: "bind_resend", Outcome: bankadapters.OutcomeUnavailable, Err: context.Canceled}
}
