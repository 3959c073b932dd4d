package binding_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

// TestAgreements reads a batch of cards' agreement numbers: each is the
// bank's, only the merchant's own cards answer, and every decryption has
// its audit row, written together with the others.
func TestAgreements(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bind := func(merchant, ext string) (cardID, agreementNo string) {
		t.Helper()
		a := w.account(t, "ICBC", "debit")
		in := input(a)
		in.ExternalUserID = ext
		b, err := w.svc.StartBinding(ctx, merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		bound, err := w.svc.Confirm(ctx, merchant, b.ID, w.code(t, a.Phone))
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.SimCtl.Account(ctx, a.CardNumber)
		if err != nil || len(st.Agreements) != 1 {
			t.Fatalf("bank agreements: %d, %v", len(st.Agreements), err)
		}
		return bound.CardID, st.Agreements[0].AgreementNo
	}
	card1, agr1 := bind(w.merchant, "user-1")
	card2, agr2 := bind(w.merchant, "user-2")
	other := testenv.Merchant(t, w.Pool)
	otherCard, _ := bind(other, "user-3")

	got, err := w.svc.Agreements(ctx, []binding.CardRef{
		{MerchantID: w.merchant, CardID: card1},
		{MerchantID: w.merchant, CardID: card2},
		{MerchantID: w.merchant, CardID: "card_missing"},
		{MerchantID: w.merchant, CardID: otherCard}, // another merchant's card
		{MerchantID: other, CardID: card1},          // asked for by another merchant
	}, "worker:test", "agreements test")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{card1: agr1, card2: agr2}
	if len(got) != len(want) {
		t.Fatalf("got %d cards, want %d (only the merchant's own)", len(got), len(want))
	}
	for ref, ca := range got {
		if ref.MerchantID != w.merchant || ca.Err != nil || ca.Card.ID != ref.CardID || ca.Agreement == "" ||
			ca.Agreement != want[ref.CardID] {
			t.Errorf("card %s of %s: err %v, agreement is the bank's: %v", ref.CardID, ref.MerchantID, ca.Err,
				ca.Agreement == want[ref.CardID])
		}
	}

	rows, err := w.Pool.Query(ctx, `SELECT merchant_id, subject, details->>'reason', (details->>'ok')::boolean
		FROM audit_log WHERE actor = 'worker:test' AND action = 'vault.detokenize'`)
	if err != nil {
		t.Fatal(err)
	}
	type auditRow struct {
		Merchant, Subject, Reason string
		OK                        bool
	}
	audited, err := pgx.CollectRows(rows, pgx.RowToStructByPos[auditRow])
	if err != nil {
		t.Fatal(err)
	}
	wantRows := []auditRow{{w.merchant, card1, "agreements test", true}, {w.merchant, card2, "agreements test", true}}
	bySubject := func(a, b auditRow) int { return strings.Compare(a.Subject, b.Subject) }
	slices.SortFunc(audited, bySubject)
	slices.SortFunc(wantRows, bySubject)
	if !slices.Equal(audited, wantRows) {
		t.Errorf("audit rows = %+v, want %+v", audited, wantRows)
	}
}

// TestBankFailuresAreAudited: when the bank fails an unbind or a resend,
// nothing changes but the audit trail: the failed try, and for an unbind
// the decryption of the agreement number that was sent, are committed.
// A bank that refuses to end an agreement answers card_declined.
func TestBankFailuresAreAudited(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "audited-user")
	audited := func(action, subject, outcome string) int {
		t.Helper()
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = $1 AND subject = $2
			AND details->>'outcome' = $3`, action, subject, outcome).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fault := func(op, mode, code string) {
		t.Helper()
		// Three calls: the adapter's first try and its two retries.
		if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: op, Mode: mode, Code: code,
			Count: 3}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("resend with the bank down", func(t *testing.T) {
		w.clock.Advance(binding.OTPResendGap)
		fault("bind_resend", conformance.FaultError, "")
		if _, err := w.svc.Resend(ctx, w.merchant, b.ID); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("resend: %v, want bank unavailable", err)
		}
		if n := audited("otp.send", b.ID, audit.OutcomeFailed); n != 1 {
			t.Fatalf("failed otp.send rows = %d, want 1", n)
		}
		got, err := w.svc.GetBinding(ctx, w.merchant, b.ID)
		if err != nil || got.Status != binding.StatusOTPSent {
			t.Fatalf("binding after the failed resend = %+v, %v; want still otp_sent", got, err)
		}
	})
	_ = w.SimCtl.ClearFaults(ctx, "ICBC")
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}

	for i, tc := range []struct {
		mode, code string
		want       error
	}{
		{conformance.FaultError, "", binding.ErrBankUnavailable},
		{conformance.FaultDecline, "card_frozen", binding.ErrCardDeclined},
	} {
		t.Run("unbind: "+tc.mode, func(t *testing.T) {
			fault("unbind", tc.mode, tc.code)
			if _, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); !errors.Is(err, tc.want) {
				t.Fatalf("unbind: %v, want %v", err, tc.want)
			}
			if n := audited("card.unbind", bound.CardID, audit.OutcomeFailed); n != i+1 {
				t.Fatalf("failed card.unbind rows = %d, want %d", n, i+1)
			}
			var detok int
			if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'vault.detokenize'
				AND subject = $1`, bound.CardID).Scan(&detok); err != nil || detok != i+1 {
				t.Fatalf("agreement decryptions audited = %d, %v; want %d", detok, err, i+1)
			}
			card, err := w.svc.GetCard(ctx, w.merchant, bound.CardID)
			if err != nil || card.Status != binding.CardActive {
				t.Fatalf("card after the failed unbind = %+v, %v; want active", card, err)
			}
		})
		_ = w.SimCtl.ClearFaults(ctx, "ICBC")
	}
	if card, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); err != nil || card.Status != binding.CardUnbound {
		t.Fatalf("unbind once the bank answers = %+v, %v", card, err)
	}
}

func TestUnbindAgreementGoneAtTheBank(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for _, bank := range []string{"ICBC", "CCB"} {
		t.Run(bank, func(t *testing.T) {
			a := w.account(t, bank, "debit")
			b, err := w.svc.StartBinding(ctx, w.merchant, input2(a, "gone-"+bank))
			if err != nil {
				t.Fatal(err)
			}
			b, err = w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
			if err != nil {
				t.Fatal(err)
			}
			// Another refusal keeps the card.
			if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: bank, Operation: "unbind",
				Mode: conformance.FaultDecline, Code: "card_frozen", Count: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.svc.Unbind(ctx, w.merchant, b.CardID); !errors.Is(err, binding.ErrCardDeclined) {
				t.Fatalf("unbind refused as frozen: %v, want card declined", err)
			}
			before := w.eventCount("card.unbound")
			if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: bank, Operation: "unbind",
				Mode: conformance.FaultDecline, Code: "agreement_invalid", Count: 1}); err != nil {
				t.Fatal(err)
			}
			c, err := w.svc.Unbind(ctx, w.merchant, b.CardID)
			if err != nil || c.Status != binding.CardUnbound {
				t.Fatalf("unbind of an agreement the bank dropped: %+v, %v; want unbound", c, err)
			}
			if got, err := w.svc.GetCard(ctx, w.merchant, b.CardID); err != nil || got.Status != binding.CardUnbound {
				t.Fatalf("card = %+v, %v", got, err)
			}
			if n := w.eventCount("card.unbound"); n != before+1 {
				t.Fatalf("%d card.unbound events, want %d", n, before+1)
			}
		})
	}
}

// TestUnbindCrashWindow: an unbind that dies after the bank ended the
// agreement leaves the card active and claimed; another unbind meanwhile
// waits for the claim; once it lapses, the next unbind asks the bank again
// (banksim answers success for an agreement it ended; a bank may answer
// "agreement invalid", which unbinds too) and the card becomes unbound,
// once.
func TestUnbindCrashWindow(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a, _, b := w.startImplicit(t, "ICBC", "unbind-crash")
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	dying, err := binding.New(binding.Config{Pool: w.Pool, Vault: w.Vault, Banks: w.Banks, Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	binding.SetCrashWindow(dying, func(op string) bool { return op == "unbind" })
	if _, err := dying.Unbind(ctx, w.merchant, bound.CardID); err == nil {
		t.Fatal("the unbind stopped at its crash window answered success")
	}
	if c, err := w.svc.GetCard(ctx, w.merchant, bound.CardID); err != nil || c.Status != binding.CardActive {
		t.Fatalf("the card after the crash: %+v, %v; want still active", c, err)
	}
	state, err := w.SimCtl.Account(ctx, a.CardNumber)
	if err != nil || liveAgreements(state.Agreements) != 0 {
		t.Fatalf("the bank holds %d live agreements (%v), want 0", liveAgreements(state.Agreements), err)
	}
	impatient, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := w.svc.Unbind(impatient, w.merchant, bound.CardID); !errors.Is(err, binding.ErrBankUnavailable) {
		t.Fatalf("an unbind while the dead one's claim holds: %v; want bank unavailable", err)
	}
	w.clock.Advance(binding.ClaimTTL)
	unbound := w.eventCount("card.unbound")
	if c, err := w.svc.Unbind(ctx, w.merchant, bound.CardID); err != nil || c.Status != binding.CardUnbound {
		t.Fatalf("the unbind after the claim lapsed: %+v, %v; want unbound", c, err)
	}
	if n := w.eventCount("card.unbound"); n != unbound+1 {
		t.Fatalf("%d card.unbound events, want %d", n, unbound+1)
	}
	var ok int
	if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'card.unbind' AND subject = $1
		AND details->>'outcome' = 'ok'`, bound.CardID).Scan(&ok); err != nil || ok != 1 {
		t.Fatalf("%d card.unbind rows ok (%v), want 1", ok, err)
	}
}
