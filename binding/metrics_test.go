package binding_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// counter reads name{kind,outcome} from reg (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name, kind, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["kind"] == kind && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestOTPSendsAndVerificationsCounted(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	m, err := binding.NewOTPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks, Clock: w.clock, OTPMetrics: m})
	if err != nil {
		t.Fatal(err)
	}
	sends := func(kind, outcome string) float64 { return counter(t, reg, "quickpay_otp_sends_total", kind, outcome) }
	checks := func(outcome string) float64 {
		return counter(t, reg, "quickpay_otp_verifications_total", binding.OTPKindBind, outcome)
	}

	a := w.account(t, "ICBC", "debit")
	in := input(a)
	in.ExternalUserID = "metrics-" + a.Phone
	bad := in
	bad.Phone = "12"
	if _, err := svc.StartBinding(ctx, w.merchant, bad); !errors.Is(err, binding.ErrInvalid) {
		t.Fatalf("apply with a bad phone: %v", err)
	}
	if got := sends(binding.OTPKindBindApply, binding.OTPFailed) + sends(binding.OTPKindBindApply, binding.OTPSent); got != 0 {
		t.Fatalf("an apply refused for its input counted %v sends", got)
	}
	b, err := svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := sends(binding.OTPKindBindApply, binding.OTPSent); got != 1 {
		t.Errorf("bind_apply sent = %v, want 1", got)
	}
	if _, err := svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrResendTooSoon) {
		t.Fatalf("resend at once: %v, want too soon", err)
	}
	if got := sends(binding.OTPKindBindResend, binding.OTPLimited); got != 1 {
		t.Errorf("bind_resend limited = %v, want 1", got)
	}
	code := w.code(t, a.Phone)
	c := []byte(code.Reveal())
	c[5] = '0' + (c[5]-'0'+1)%10
	if _, err := svc.Confirm(ctx, w.merchant, b.ID, sensitive.NewOTP(string(c))); !errors.Is(err, binding.ErrOTPIncorrect) {
		t.Fatalf("wrong code: %v", err)
	}
	if got := checks(binding.OTPIncorrect); got != 1 {
		t.Errorf("verifications incorrect = %v, want 1", got)
	}
	if _, err := svc.Confirm(ctx, w.merchant, b.ID, code); err != nil {
		t.Fatal(err)
	}
	if got := checks(binding.OTPOK); got != 1 {
		t.Errorf("verifications ok = %v, want 1", got)
	}
}
