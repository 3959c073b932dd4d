package binding_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
)

func TestSessionStepIsCompareAndSet(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	ss, _, err := w.svc.CreateSession(ctx, w.merchant, binding.SessionInput{ExternalUserID: "u-cas", ReturnURL: "https://m.example/done"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.svc.SessionStep(ctx, ss, "bnd_first", "")
	if err != nil {
		t.Fatal(err)
	}
	// A twin request that read the session before the first step.
	if _, err := w.svc.SessionStep(ctx, ss, "bnd_second", ""); !errors.Is(err, binding.ErrSessionMoved) {
		t.Errorf("a stale step: %v, want ErrSessionMoved", err)
	}
	if _, err := w.svc.SessionStep(ctx, ss, "", "mnd_stale"); !errors.Is(err, binding.ErrSessionMoved) {
		t.Errorf("a mandate on a stale read: %v, want ErrSessionMoved", err)
	}
	got, err := w.svc.GetSession(ctx, w.merchant, ss.ID)
	if err != nil || got.BindingID != "bnd_first" || got.MandateID != "" {
		t.Fatalf("session after the race: %+v (%v)", got, err)
	}
	if _, err := w.svc.SessionStep(ctx, first, "", "mnd_one"); err != nil {
		t.Errorf("a step on the current read: %v", err)
	}
	if _, err := w.svc.CompleteSession(ctx, first, "mem_x", "card_x", "mnd_other"); !errors.Is(err, binding.ErrSessionMoved) {
		t.Errorf("completing with another mandate: %v, want ErrSessionMoved", err)
	}
}

func TestSessionCompletesPastExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	ss, _, err := w.svc.CreateSession(ctx, w.merchant, binding.SessionInput{ExternalUserID: "u-late", ReturnURL: "https://m.example/done"})
	if err != nil {
		t.Fatal(err)
	}
	if ss, err = w.svc.SessionStep(ctx, ss, "bnd_late", ""); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(binding.SessionValidity + time.Second)
	// Starting a step needs an unexpired session; completing one started
	// before the expiry does not.
	if _, err := w.svc.SessionStep(ctx, ss, "bnd_new", ""); !errors.Is(err, binding.ErrSessionExpired) {
		t.Errorf("a step past expiry: %v, want ErrSessionExpired", err)
	}
	if _, err := w.svc.CompleteSession(ctx, ss, "mem_late", "card_late", ""); err != nil {
		t.Fatalf("complete past expiry: %v", err)
	}
	got, err := w.svc.GetSession(ctx, w.merchant, ss.ID)
	if err != nil || got.Status != binding.SessionCompleted || got.CardID != "card_late" {
		t.Errorf("session: %+v (%v)", got, err)
	}
	if n := w.eventCount("binding_session.completed"); n != 1 {
		t.Errorf("binding_session.completed events: %d", n)
	}
	if _, err := w.svc.CompleteSession(ctx, ss, "mem_late", "card_late", ""); !errors.Is(err, binding.ErrSessionClosed) {
		t.Errorf("completing twice: %v, want ErrSessionClosed", err)
	}
}

func TestValidReturnURL(t *testing.T) {
	t.Parallel()
	for u, want := range map[string]bool{
		"https://merchant.example/done?x=1": true,
		"https://merchant-1.example:8443/d": true,
		"https://203.0.113.7/done":          true,
		"https://[2001:db8::1]/done":        true,
		"http://127.0.0.1:9/done":           true,
		"http://localhost/done":             true,
		"http://merchant.example/done":      false,
		"https://*/done":                    false,
		"https://*.evil.example/done":       false,
		"https://a_b.example/done":          false,
		"https://-a.example/done":           false,
		"https://a..example/done":           false,
		"https://merchant.example/done#f":   false,
		"https://u:p@merchant.example/":     false,
		"ftp://merchant.example/":           false,
	} {
		if got := binding.ValidReturnURL(u); got != want {
			t.Errorf("ValidReturnURL(%q) = %v, want %v", u, got, want)
		}
	}
}
