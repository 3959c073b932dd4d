package binding_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

// TestReleaseAgreement: a binding the bank confirmed but quickpay refused
// (identity_mismatch: a namesake's card, confirmed after the member's own
// card completed the identity) keeps its agreement until the bank has
// released it; an operator releases one the bank would not release at
// once, and a second release says it is done.
func TestReleaseAgreement(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	const operator = "operator:op_release"

	// refused returns a binding refused identity_mismatch after the bank
	// confirmed it, and the namesake's account it bound at the bank.
	refused := func(t *testing.T, externalID string) (binding.Binding, conformance.Account) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		namesake := w.namesake(t, a) // at CCB
		m, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: externalID, Name: a.HolderName})
		if err != nil {
			t.Fatal(err)
		}
		var bs []binding.Binding
		for _, acc := range []conformance.Account{a, namesake} {
			in := input(acc)
			in.MemberID = m.ID
			b, err := w.svc.StartBinding(ctx, w.merchant, in)
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, b)
		}
		if _, err := w.svc.Confirm(ctx, w.merchant, bs[0].ID, w.code(t, a.Phone)); err != nil {
			t.Fatal(err)
		}
		_, err = w.svc.Confirm(ctx, w.merchant, bs[1].ID, w.code(t, namesake.Phone))
		var im *binding.IdentityMismatchError
		if !errors.As(err, &im) {
			t.Fatalf("namesake's confirm: %v, want identity mismatch", err)
		}
		return bs[1], namesake
	}
	live := func(t *testing.T, a conformance.Account) int {
		t.Helper()
		st, err := w.SimCtl.Account(ctx, a.CardNumber)
		if err != nil {
			t.Fatal(err)
		}
		return liveAgreements(st.Agreements)
	}
	// releases lists the binding's bind.release audit rows: actor and
	// outcome.
	releases := func(t *testing.T, bindingID string) []string {
		t.Helper()
		return testenv.Strings(t, w.Pool, `SELECT actor || ' ' || (details->>'outcome') FROM audit_log
			WHERE action = 'bind.release' AND subject = $1 ORDER BY id`, bindingID)
	}
	kept := func(t *testing.T, bindingID string) (ct, released bool) {
		t.Helper()
		if err := w.Pool.QueryRow(ctx, `SELECT agreement_ct IS NOT NULL, agreement_released_at IS NOT NULL
			FROM bindings WHERE id = $1`, bindingID).Scan(&ct, &released); err != nil {
			t.Fatal(err)
		}
		return ct, released
	}
	api := "api:" + w.merchant

	t.Run("the bank refusing keeps it open; an operator releases it once", func(t *testing.T) {
		// The bank answers every unbind with an error until cleared (the
		// adapter retries an unbind).
		if err := w.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "CCB", Operation: "unbind", Mode: "error", Count: 50}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := w.SimCtl.ClearFaults(ctx, "CCB"); err != nil {
				t.Error(err)
			}
		})
		b, namesake := refused(t, "refused-kept")
		if got := releases(t, b.ID); len(got) != 1 || got[0] != api+" failed" {
			t.Fatalf("release at once: audit %q, want one failed", got)
		}
		if n := live(t, namesake); n != 1 {
			t.Fatalf("%d live agreements at the bank, want the refused binding's", n)
		}
		if ct, released := kept(t, b.ID); !ct || released {
			t.Fatalf("kept %v, released %v; want the agreement kept", ct, released)
		}

		if _, err := w.svc.ReleaseAgreement(ctx, w.merchant, b.ID, operator); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Errorf("release while the bank refuses: %v, want ErrBankUnavailable", err)
		}
		if got := releases(t, b.ID); len(got) != 2 || got[1] != operator+" failed" {
			t.Errorf("audit %q, want the operator's failed release second", got)
		}
		if ct, released := kept(t, b.ID); !ct || released || live(t, namesake) != 1 {
			t.Errorf("kept %v, released %v; want it kept and live at the bank", ct, released)
		}

		if err := w.SimCtl.ClearFaults(ctx, "CCB"); err != nil {
			t.Fatal(err)
		}
		got, err := w.svc.ReleaseAgreement(ctx, w.merchant, b.ID, operator)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != b.ID || got.Status != binding.StatusFailed || got.FailureCode != "identity_mismatch" {
			t.Errorf("released binding = %s %s (%s), want %s failed (identity_mismatch)", got.ID, got.Status, got.FailureCode, b.ID)
		}
		if n := live(t, namesake); n != 0 {
			t.Errorf("%d live agreements at the bank after the release, want 0", n)
		}
		if ct, released := kept(t, b.ID); ct || !released {
			t.Errorf("kept %v, released %v; want the agreement dropped and released", ct, released)
		}
		if got := releases(t, b.ID); len(got) != 3 || got[2] != operator+" ok" {
			t.Errorf("audit %q, want the operator's release ok third", got)
		}

		again, err := w.svc.ReleaseAgreement(ctx, w.merchant, b.ID, operator)
		if !errors.Is(err, binding.ErrAlreadyReleased) || again.ID != b.ID {
			t.Errorf("second release: %s, %v; want the binding and ErrAlreadyReleased", again.ID, err)
		}
		if got := releases(t, b.ID); len(got) != 3 {
			t.Errorf("audit %q after the second release, want nothing more", got)
		}
	})

	t.Run("a release that dies after the bank answered is settled by the next", func(t *testing.T) {
		if err := w.SimCtl.AddFault(ctx, simclient.Fault{BankCode: "CCB", Operation: "unbind", Mode: "error", Count: 50}); err != nil {
			t.Fatal(err)
		}
		b, namesake := refused(t, "refused-crash")
		if err := w.SimCtl.ClearFaults(ctx, "CCB"); err != nil {
			t.Fatal(err)
		}
		// The crash window: the bank released the agreement and nothing
		// is written; the dead release's claim holds.
		dying, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks, Clock: w.clock})
		if err != nil {
			t.Fatal(err)
		}
		binding.SetCrashWindow(dying, func(op string) bool { return op == "release" })
		if _, err := dying.ReleaseAgreement(ctx, w.merchant, b.ID, operator); err == nil {
			t.Fatal("the release stopped at its crash window answered success")
		}
		if n := live(t, namesake); n != 0 {
			t.Fatalf("%d live agreements at the bank, want 0", n)
		}
		if ct, released := kept(t, b.ID); !ct || released {
			t.Fatalf("kept %v, released %v; want it kept, nothing written", ct, released)
		}
		impatient, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := w.svc.ReleaseAgreement(impatient, w.merchant, b.ID, operator); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("a release while the dead one's claim holds: %v; want ErrBankUnavailable", err)
		}
		// Once the claim lapses the next release asks the bank again,
		// which answers an ended agreement with success.
		w.clock.Advance(binding.ClaimTTL + time.Second)
		if _, err := w.svc.ReleaseAgreement(ctx, w.merchant, b.ID, operator); err != nil {
			t.Fatal(err)
		}
		if ct, released := kept(t, b.ID); ct || !released {
			t.Errorf("kept %v, released %v; want it released", ct, released)
		}
		if got := releases(t, b.ID); len(got) != 2 || got[0] != api+" failed" || got[1] != operator+" ok" {
			t.Errorf("audit %q, want the failed release at once, then the operator's ok", got)
		}
	})

	t.Run("an agreement released at once is already released", func(t *testing.T) {
		b, namesake := refused(t, "refused-released")
		if n := live(t, namesake); n != 0 {
			t.Fatalf("%d live agreements at the bank, want 0", n)
		}
		if got := releases(t, b.ID); len(got) != 1 || got[0] != api+" ok" {
			t.Fatalf("release at once: audit %q, want one ok", got)
		}
		if _, err := w.svc.ReleaseAgreement(ctx, w.merchant, b.ID, operator); !errors.Is(err, binding.ErrAlreadyReleased) {
			t.Errorf("err = %v, want ErrAlreadyReleased", err)
		}
	})

	t.Run("a binding without an agreement, and another merchant's", func(t *testing.T) {
		a, _, b := w.startImplicit(t, "ICBC", "bound-user")
		bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
		if err != nil {
			t.Fatal(err)
		}
		// A bound binding's agreement is its card's, ended by unbinding
		// the card.
		if _, err := w.svc.ReleaseAgreement(ctx, w.merchant, bound.ID, operator); !errors.Is(err, binding.ErrNoAgreement) {
			t.Errorf("bound binding: err = %v, want ErrNoAgreement", err)
		}
		_, _, pending := w.startImplicit(t, "ICBC", "pending-user")
		if _, err := w.svc.ReleaseAgreement(ctx, w.merchant, pending.ID, operator); !errors.Is(err, binding.ErrNoAgreement) {
			t.Errorf("binding waiting for its code: err = %v, want ErrNoAgreement", err)
		}
		refusedB, _ := refused(t, "refused-other-merchant")
		other := testenv.Merchant(t, w.Pool)
		for _, id := range []string{refusedB.ID, "bnd_nosuchbinding", "nonsense"} {
			if _, err := w.svc.ReleaseAgreement(ctx, other, id, operator); !errors.Is(err, binding.ErrNotFound) {
				t.Errorf("ReleaseAgreement(other merchant, %s) = %v, want ErrNotFound", id, err)
			}
		}
		if got := releases(t, bound.ID); len(got) != 0 {
			t.Errorf("audit %q for a binding without an agreement, want none", got)
		}
	})
}
