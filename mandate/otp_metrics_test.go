package mandate_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/mandate"
)

// TestConsentCodesCounted: a mandate's consent code sent, a resend too
// soon, a text the carrier refuses, a wrong and then the right code are
// counted under the consent kinds.
func TestConsentCodesCounted(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	otp, err := binding.NewOTPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, func(c *mandate.Config) { c.OTPMetrics = otp })
	count := func(name, kind, outcome string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				if f.GetName() == name && l["kind"] == kind && l["outcome"] == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	sends := func(kind, outcome string) float64 { return count("quickpay_otp_sends_total", kind, outcome) }
	checks := func(outcome string) float64 {
		return count("quickpay_otp_verifications_total", binding.OTPKindConsent, outcome)
	}

	c := w.bindCard(t, "ICBC", 1_000_000)
	in := w.monthly(10, 1_999)
	in.CardID, in.Reference = c.ID, "counted-"+randHex(3)
	m, err := w.svc.Create(ctx, c.Merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := sends(binding.OTPKindConsent, binding.OTPSent); got != 1 {
		t.Errorf("consent sent = %v, want 1", got)
	}
	if _, err := w.svc.Resend(ctx, c.Merchant, m.ID); !errors.Is(err, mandate.ErrResendTooSoon) {
		t.Fatalf("resend at once: %v, want too soon", err)
	}
	if got := sends(binding.OTPKindConsentResend, binding.OTPLimited); got != 1 {
		t.Errorf("consent_resend limited = %v, want 1", got)
	}
	code := w.newestCode(t, c)
	wrong := []byte(code.Reveal())
	wrong[5] = '0' + (wrong[5]-'0'+1)%10
	if _, err := w.svc.Confirm(ctx, c.Merchant, m.ID, sensitive.NewOTP(string(wrong))); !errors.Is(err, mandate.ErrOTPIncorrect) {
		t.Fatalf("wrong code: %v", err)
	}
	if _, err := w.svc.Confirm(ctx, c.Merchant, m.ID, code); err != nil {
		t.Fatal(err)
	}
	if got := checks(binding.OTPIncorrect); got != 1 {
		t.Errorf("consent incorrect = %v, want 1", got)
	}
	if got := checks(binding.OTPOK); got != 1 {
		t.Errorf("consent ok = %v, want 1", got)
	}

	refused := w.bindCard(t, "ICBC", 1_000_000)
	in.CardID, in.Reference = refused.ID, "refused-"+randHex(3)
	w.refuse(refused.Phone)
	_, err = w.svc.Create(ctx, refused.Merchant, in)
	w.refuse("")
	if !errors.Is(err, mandate.ErrSMSUnavailable) {
		t.Fatalf("create with the text refused: %v", err)
	}
	if got := sends(binding.OTPKindConsent, binding.OTPFailed); got != 1 {
		t.Errorf("consent failed = %v, want 1", got)
	}
}
