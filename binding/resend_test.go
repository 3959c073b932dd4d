package binding_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
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
