package mandate_test

import (
	"context"
	"errors"
	"testing"

	"github.com/quickpay/quickpay/mandate"
)

// TestConsentTextAfterTheMandate: Create writes the mandate and commits
// before it texts the code. A crash in between (here: after the text went
// out, before Create returned) leaves the mandate pending, its code
// stored, so the code texted confirms it and a resend works; a text the
// carrier refuses expires the mandate (consent_not_sent), which no code
// confirms.
func TestConsentTextAfterTheMandate(t *testing.T) {
	ctx := context.Background()
	var sender *crashingSMS
	w := newWorld(t, func(c *mandate.Config) { sender = &crashingSMS{SMS: c.SMS}; c.SMS = sender })

	t.Run("a crash after the text leaves it pending and confirmable", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 1_000_000)
		in := w.monthly(10, 1_999)
		in.CardID, in.Reference = c.ID, "crash-"+randHex(3)
		sender.armed.Store(true)
		func() {
			defer func() {
				if r := recover(); r != (crash{}) {
					t.Fatalf("create did not die in the window: %v", r)
				}
			}()
			_, _ = w.svc.Create(ctx, c.Merchant, in)
		}()
		ms, _, err := w.svc.List(ctx, c.Merchant, mandate.MandateFilter{CardID: c.ID}, mandate.Page{})
		if err != nil || len(ms) != 1 || ms[0].Status != mandate.StatusPendingConfirmation || ms[0].OTPSends != 1 {
			t.Fatalf("mandates after the crash = %+v, %v; want one pending, one send", ms, err)
		}
		got, err := w.svc.Confirm(ctx, c.Merchant, ms[0].ID, w.newestCode(t, c))
		if err != nil || got.Status != mandate.StatusActive {
			t.Fatalf("confirm with the texted code = %+v, %v", got, err)
		}
	})

	t.Run("a refused text expires it", func(t *testing.T) {
		c := w.bindCard(t, "ICBC", 1_000_000)
		in := w.monthly(10, 1_999)
		in.CardID, in.Reference = c.ID, "refused-"+randHex(3)
		w.refuse(c.Phone)
		_, err := w.svc.Create(ctx, c.Merchant, in)
		w.refuse("")
		if !errors.Is(err, mandate.ErrSMSUnavailable) {
			t.Fatalf("create with the text refused: %v, want ErrSMSUnavailable", err)
		}
		ms, _, err := w.svc.List(ctx, c.Merchant, mandate.MandateFilter{CardID: c.ID}, mandate.Page{})
		if err != nil || len(ms) != 1 || ms[0].Status != mandate.StatusExpired || ms[0].StatusReason != "consent_not_sent" {
			t.Fatalf("mandates = %+v, %v; want one expired (consent_not_sent)", ms, err)
		}
		if _, err := w.svc.Resend(ctx, c.Merchant, ms[0].ID); !errors.Is(err, mandate.ErrConsentExpired) {
			t.Fatalf("resend of an expired mandate: %v, want ErrConsentExpired", err)
		}
	})
}
