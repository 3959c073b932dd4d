package mandate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/mandate"
)

// pendingMandate creates a mandate on c, not confirmed, with the code
// texted for it.
func (w *world) pendingMandate(t *testing.T, c card, ref string) mandate.Mandate {
	t.Helper()
	in := w.monthly(10, 1_999)
	in.CardID, in.Reference = c.ID, ref
	m, err := w.svc.Create(context.Background(), c.Merchant, in)
	if err != nil {
		t.Fatalf("create mandate: %v", err)
	}
	return m
}

// newestCode is the consent code last texted to c's phone.
func (w *world) newestCode(t *testing.T, c card) sensitive.OTP {
	t.Helper()
	texts, err := w.SimCtl.SMS(context.Background(), c.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no consent SMS: %v", err)
	}
	code := consentCode.FindStringSubmatch(texts[0].Text)
	if code == nil {
		t.Fatalf("no 6-digit code in the newest text")
	}
	return sensitive.NewOTP(code[1])
}

// TestConsentResendsBeyondThePoolFinish: more concurrent consent resends
// than the pool has connections, with the phone limit on, all finish: the
// card's phone, the phone's count and the audit of its decryption are
// read and written in the transaction each resend holds, not on a second
// connection (which, with every connection held by a resend, none would
// get).
func TestConsentResendsBeyondThePoolFinish(t *testing.T) {
	const conns, resends = 2, 6
	w := newWorld(t)
	small := testenv.PoolOf(t, conns)
	lim, err := limits.New(small)
	if err != nil {
		t.Fatal(err)
	}
	cards, err := binding.New(binding.Config{Pool: small, Vault: w.Vault, Banks: w.banks, Clock: w.clock, Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.cfg
	cfg.Pool, cfg.Cards, cfg.PhoneLimit = small, cards, cards
	svc, err := mandate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, resends)
	for i := range ids {
		ids[i] = w.pendingMandate(t, w.bindCard(t, "ICBC", 100_000), fmt.Sprintf("pool-%d", i)).ID
	}
	w.setNow(w.clock.Now().Add(mandate.OTPResendGap))
	// More resends than connections, each finishing within the limit.
	testenv.Concurrently(t, resends, 20*time.Second, func(ctx context.Context, i int) error {
		_, err := svc.Resend(ctx, w.merchant, ids[i])
		return err
	})
}

// TestConsentResendSurvivesAHangUp: a caller who hangs up once the carrier
// has taken the text has used the send (the count, the gap) and the code
// texted is the one that confirms.
func TestConsentResendSurvivesAHangUp(t *testing.T) {
	ctx := context.Background()
	hang := &hangUpSMS{}
	w := newWorld(t, func(c *mandate.Config) { hang.SMS, c.SMS = c.SMS, hang })
	c := w.bindCard(t, "ICBC", 100_000)
	m := w.pendingMandate(t, c, "hang-up")
	w.setNow(w.clock.Now().Add(mandate.OTPResendGap))
	sent := w.clock.Now().UTC().Truncate(time.Microsecond)
	before, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hang.arm(cancel)
	_, _ = w.svc.Resend(rctx, c.Merchant, m.ID) // the caller is gone: its answer is not read
	after, err := w.SimCtl.SMS(ctx, c.Phone)
	if err != nil || len(after) != len(before)+1 {
		t.Fatalf("texts %d → %d, %v; want the resend's", len(before), len(after), err)
	}
	got, err := w.svc.Get(ctx, c.Merchant, m.ID)
	if err != nil || got.OTPSends != 2 || !got.OTPLastSentAt.Equal(sent) || !got.OTPExpiresAt.Equal(sent.Add(mandate.OTPValidity)) {
		t.Fatalf("mandate after a hung-up resend: %+v, %v; want 2 sends, the last at %s", got, err, sent)
	}
	var tooSoon *mandate.ResendTooSoonError
	if _, err := w.svc.Resend(ctx, c.Merchant, m.ID); !errors.As(err, &tooSoon) {
		t.Fatalf("resend right after a hung-up one: %v, want too soon", err)
	}
	if got, err := w.svc.Confirm(ctx, c.Merchant, m.ID, w.newestCode(t, c)); err != nil || got.Status != mandate.StatusActive {
		t.Fatalf("confirm with the hung-up resend's code: %+v, %v; want active", got, err)
	}
}

// hangUpSMS stands in for a caller who hangs up once the carrier has taken
// a text: the real carrier (banksim's, over HTTP) is asked, then the
// caller's context is cancelled, once armed. (Provoking it for real needs
// a disconnect timed between the carrier's answer and the commit.)
type hangUpSMS struct {
	mandate.SMS
	mu     sync.Mutex
	cancel context.CancelFunc
}

func (h *hangUpSMS) arm(cancel context.CancelFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cancel = cancel
}

func (h *hangUpSMS) Send(ctx context.Context, to, text string) error {
	err := h.SMS.Send(ctx, to, text)
	h.mu.Lock()
	cancel := h.cancel
	h.cancel = nil
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return err
}
