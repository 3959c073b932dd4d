package binding_test

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// boundAgreement is a card bound through the service, with the number of
// the agreement its bank made.
type boundAgreement struct {
	CardID, MerchantID, Bank, AgreementNo string
}

// bindForAgreement binds a fresh card at bank for merchant and reads its
// agreement number at banksim.
func (w *world) bindForAgreement(t *testing.T, merchant, bank, externalID string) boundAgreement {
	t.Helper()
	ctx := context.Background()
	a := w.account(t, bank, "debit")
	b, err := w.svc.StartBinding(ctx, merchant, input2(a, externalID))
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
	return boundAgreement{CardID: bound.CardID, MerchantID: merchant, Bank: bank, AgreementNo: st.Agreements[0].AgreementNo}
}

// ownAgreementNumbers moves the world's banksim to a day of its own, far
// ahead: every banksim numbers its agreements from 1 under the bank's date,
// and the package's worlds share one database, so without it two worlds'
// ICBC would make the same agreement numbers (a real bank's are its own).
func ownAgreementNumbers(t *testing.T, w *world) {
	t.Helper()
	day := time.Date(2100+mrand.IntN(200), time.Month(1+mrand.IntN(12)), 1+mrand.IntN(28), 10, 0, 0, 0, time.UTC)
	w.Sim.SetNow(day)
}

// notice is what a bank's agreement_terminated notice about c says.
func (c boundAgreement) notice(at time.Time) binding.AgreementNotice {
	return binding.AgreementNotice{BankCode: c.Bank, AgreementNo: c.AgreementNo, EndedAt: at}
}

func (w *world) cardStatus(t *testing.T, merchant, id string) binding.CardStatus {
	t.Helper()
	c, err := w.svc.GetCard(context.Background(), merchant, id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status
}

// recordedNotice is a bank_notices row, its agreement number decrypted.
type recordedNotice struct {
	ID, Bank, Outcome, Merchant, AgreementNo string
	Cards                                    []string
}

// notices returns the recorded notices of bank about agreementNo (found by
// decrypting every row of the bank: a test's own few).
func (w *world) notices(t *testing.T, bank, agreementNo string) []recordedNotice {
	t.Helper()
	ctx := context.Background()
	rows, err := w.Pool.Query(ctx, `SELECT id, bank_code, outcome, coalesce(merchant_id, ''), card_ids, agreement_ct
		FROM bank_notices WHERE bank_code = $1 ORDER BY received_at, id`, bank)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []recordedNotice
	for rows.Next() {
		var n recordedNotice
		var ct []byte
		if err := rows.Scan(&n.ID, &n.Bank, &n.Outcome, &n.Merchant, &n.Cards, &ct); err != nil {
			t.Fatal(err)
		}
		pt, err := w.Vault.Decrypt(ctx, ct, binding.BankNoticeAAD(bank, n.ID),
			sensitive.Access{Actor: "test", Reason: "read a recorded notice"})
		if err != nil {
			t.Fatalf("notice %s: its agreement does not decrypt under its AAD: %v", n.ID, err)
		}
		if n.AgreementNo = string(pt); n.AgreementNo == agreementNo {
			out = append(out, n)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// forgetFingerprints makes the cards as migration 026 found them: no
// agreement fingerprint.
func (w *world) forgetFingerprints(t *testing.T, cardIDs ...string) {
	t.Helper()
	if _, err := w.Pool.Exec(context.Background(), `UPDATE cards SET agreement_fp = NULL WHERE id = ANY($1)`, cardIDs); err != nil {
		t.Fatal(err)
	}
}

func (w *world) hasFingerprint(t *testing.T, cardID string) bool {
	t.Helper()
	var has bool
	if err := w.Pool.QueryRow(context.Background(), `SELECT agreement_fp IS NOT NULL FROM cards WHERE id = $1`, cardID).
		Scan(&has); err != nil {
		t.Fatal(err)
	}
	return has
}

// TestEndAgreement: a bank's notice that a cardholder ended an agreement
// revokes the one card holding it (found by the agreement's fingerprint,
// computed first for cards that have none), emits card.revoked once, and
// is recorded once however often the bank sends it; a notice no card
// answers is recorded for operators.
func TestEndAgreement(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	ownAgreementNumbers(t, w)
	other := testenv.Merchant(t, w.Pool)
	a := w.bindForAgreement(t, w.merchant, "ICBC", "end-a")
	b := w.bindForAgreement(t, w.merchant, "ICBC", "end-b")
	c := w.bindForAgreement(t, other, "ICBC", "end-c")
	ccb := w.bindForAgreement(t, w.merchant, "CCB", "end-ccb")
	// As the rows from before the fingerprint column were.
	w.forgetFingerprints(t, a.CardID, b.CardID, c.CardID, ccb.CardID)
	at := time.Date(2030, 3, 1, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

	t.Run("the notice revokes the card holding the agreement", func(t *testing.T) {
		end, err := w.svc.EndAgreement(ctx, a.notice(at))
		if err != nil {
			t.Fatal(err)
		}
		if end.Outcome != binding.NoticeRevoked || len(end.Revoked) != 1 || end.Revoked[0].ID != a.CardID ||
			end.Revoked[0].Status != binding.CardRevoked {
			t.Fatalf("end = %+v, want card %s revoked", end, a.CardID)
		}
		if got := w.cardStatus(t, a.MerchantID, a.CardID); got != binding.CardRevoked {
			t.Errorf("card = %s, want revoked", got)
		}
		for _, x := range []boundAgreement{b, c, ccb} {
			if got := w.cardStatus(t, x.MerchantID, x.CardID); got != binding.CardActive {
				t.Errorf("card of another agreement = %s, want active", got)
			}
		}
		if n := w.eventCount("card.revoked"); n != 1 {
			t.Errorf("%d card.revoked events, want 1", n)
		}
		// The bank's active cards were fingerprinted on the way; not the
		// other bank's.
		for _, x := range []boundAgreement{b, c} {
			if !w.hasFingerprint(t, x.CardID) {
				t.Errorf("ICBC card %s has no agreement fingerprint after the fill", x.CardID)
			}
		}
		if w.hasFingerprint(t, ccb.CardID) {
			t.Error("the CCB card was fingerprinted by an ICBC notice")
		}
		got := w.notices(t, "ICBC", a.AgreementNo)
		if len(got) != 1 || got[0].ID != end.NoticeID || got[0].Outcome != "revoked" || got[0].Merchant != a.MerchantID ||
			!slices.Equal(got[0].Cards, []string{a.CardID}) {
			t.Errorf("recorded %+v, want one notice %s: revoked, card %s of %s", got, end.NoticeID, a.CardID, a.MerchantID)
		}
		var audited int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'card.revoke' AND subject = $1
			AND actor = 'bank:ICBC' AND details->>'reason' = 'agreement_terminated'`, a.CardID).Scan(&audited); err != nil {
			t.Fatal(err)
		}
		if audited != 1 {
			t.Errorf("%d audit rows of the revocation by the bank, want 1", audited)
		}
	})

	t.Run("the bank sending it again changes nothing", func(t *testing.T) {
		first := w.notices(t, "ICBC", a.AgreementNo)
		for range 2 {
			end, err := w.svc.EndAgreement(ctx, a.notice(at))
			if err != nil {
				t.Fatal(err)
			}
			if end.Outcome != binding.NoticeEndedBefore || len(end.Revoked) != 0 || len(first) != 1 || end.NoticeID != first[0].ID {
				t.Errorf("repeat = %+v, want ended_before, nothing revoked, the first record's id", end)
			}
		}
		if n := w.eventCount("card.revoked"); n != 1 {
			t.Errorf("%d card.revoked events, want still 1", n)
		}
		if got := w.notices(t, "ICBC", a.AgreementNo); len(got) != 1 || got[0].Outcome != "revoked" {
			t.Errorf("recorded %+v, want the one first record", got)
		}
	})

	t.Run("at once, the same notice revokes once", func(t *testing.T) {
		before := w.eventCount("card.revoked")
		ends := make([]binding.AgreementEnd, 4)
		testenv.Concurrently(t, len(ends), 30*time.Second, func(ctx context.Context, i int) error {
			var err error
			ends[i], err = w.svc.EndAgreement(ctx, b.notice(at))
			return err
		})
		revoked := 0
		for _, e := range ends {
			revoked += len(e.Revoked)
		}
		if revoked != 1 || w.eventCount("card.revoked") != before+1 {
			t.Errorf("%d revocations and %d events, want 1 of each", revoked, w.eventCount("card.revoked")-before)
		}
		if got := w.notices(t, "ICBC", b.AgreementNo); len(got) != 1 || got[0].Outcome != "revoked" {
			t.Errorf("recorded %+v, want one notice, revoked", got)
		}
	})

	t.Run("a notice no card answers is recorded for operators", func(t *testing.T) {
		before := w.eventCount("card.revoked")
		for _, n := range []binding.AgreementNotice{
			{BankCode: "ICBC", AgreementNo: "AGR-NO-SUCH-" + c.CardID, EndedAt: at},
			// An agreement number is its bank's: another bank's card with
			// that number is not this one.
			{BankCode: "CMB", AgreementNo: ccb.AgreementNo, EndedAt: at},
		} {
			for range 2 {
				end, err := w.svc.EndAgreement(ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				if end.Outcome != binding.NoticeUnknownAgreement || len(end.Revoked) != 0 {
					t.Errorf("%s notice = %+v, want unknown_agreement", n.BankCode, end)
				}
			}
			if got := w.notices(t, n.BankCode, n.AgreementNo); len(got) != 1 || got[0].Outcome != "unknown_agreement" ||
				got[0].Merchant != "" || len(got[0].Cards) != 0 {
				t.Errorf("%s: recorded %+v, want one notice, unknown_agreement, no merchant", n.BankCode, got)
			}
		}
		if got := w.cardStatus(t, ccb.MerchantID, ccb.CardID); got != binding.CardActive {
			t.Errorf("CCB card = %s, want active", got)
		}
		if n := w.eventCount("card.revoked"); n != before {
			t.Errorf("%d card.revoked events for unknown agreements, want none", n-before)
		}
	})

	t.Run("a card revoked by a charge's answer is not revoked again by the notice", func(t *testing.T) {
		before := w.eventCount("card.revoked")
		card, err := w.svc.Revoke(ctx, c.MerchantID, c.CardID, "agreement_invalid")
		if err != nil || card.Status != binding.CardRevoked {
			t.Fatalf("revoke = %+v, %v", card, err)
		}
		if again, err := w.svc.Revoke(ctx, c.MerchantID, c.CardID, "agreement_invalid"); err != nil || again.Status != binding.CardRevoked {
			t.Fatalf("revoke again = %+v, %v", again, err)
		}
		end, err := w.svc.EndAgreement(ctx, c.notice(at))
		if err != nil {
			t.Fatal(err)
		}
		if end.Outcome != binding.NoticeEndedBefore || len(end.Revoked) != 0 {
			t.Errorf("notice after the charge's answer = %+v, want ended_before", end)
		}
		if n := w.eventCount("card.revoked"); n != before+1 {
			t.Errorf("%d card.revoked events, want 1", n-before)
		}
		if got := w.notices(t, "ICBC", c.AgreementNo); len(got) != 1 || got[0].Outcome != "ended_before" ||
			got[0].Merchant != c.MerchantID {
			t.Errorf("recorded %+v, want one notice, ended_before, of the card's merchant", got)
		}
	})

	t.Run("a card that ended without its fingerprint is found ended", func(t *testing.T) {
		revoked := w.bindForAgreement(t, w.merchant, "ICBC", "end-revoked")
		unbound := w.bindForAgreement(t, w.merchant, "ICBC", "end-unbound")
		w.forgetFingerprints(t, revoked.CardID, unbound.CardID)
		if card, err := w.svc.Revoke(ctx, revoked.MerchantID, revoked.CardID, "card_closed"); err != nil || card.Status != binding.CardRevoked {
			t.Fatalf("revoke = %+v, %v", card, err)
		}
		if card, err := w.svc.Unbind(ctx, unbound.MerchantID, unbound.CardID); err != nil || card.Status != binding.CardUnbound {
			t.Fatalf("unbind = %+v, %v", card, err)
		}
		before := w.eventCount("card.revoked")
		for _, x := range []boundAgreement{revoked, unbound} {
			if !w.hasFingerprint(t, x.CardID) {
				t.Errorf("card %s ended without its agreement fingerprint", x.CardID)
			}
			end, err := w.svc.EndAgreement(ctx, x.notice(at))
			if err != nil {
				t.Fatal(err)
			}
			if end.Outcome != binding.NoticeEndedBefore || len(end.Revoked) != 0 {
				t.Errorf("notice about an ended card = %+v, want ended_before", end)
			}
		}
		if got := w.cardStatus(t, unbound.MerchantID, unbound.CardID); got != binding.CardUnbound {
			t.Errorf("unbound card after the notice = %s, want unbound", got)
		}
		if n := w.eventCount("card.revoked"); n != before {
			t.Errorf("%d card.revoked events for ended cards, want none", n-before)
		}
	})

	t.Run("a notice without its fields is refused", func(t *testing.T) {
		for _, n := range []binding.AgreementNotice{
			{AgreementNo: ccb.AgreementNo, EndedAt: at},
			{BankCode: "CCB", EndedAt: at},
			{BankCode: "CCB", AgreementNo: ccb.AgreementNo},
		} {
			if _, err := w.svc.EndAgreement(ctx, n); err == nil {
				t.Errorf("notice %+v: no error", binding.AgreementNotice{BankCode: n.BankCode, EndedAt: n.EndedAt})
			}
		}
		if got := w.cardStatus(t, ccb.MerchantID, ccb.CardID); got != binding.CardActive {
			t.Errorf("CCB card = %s, want active", got)
		}
	})
}

// TestAgreementFingerprint: the fingerprint a card gets is the HSM's keyed
// fingerprint of the agreement number the bank made, in its own domain.
func TestAgreementFingerprint(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	ownAgreementNumbers(t, w)
	a := w.bindForAgreement(t, w.merchant, "CCB", "follow-a")
	// Fingerprint a's agreement (any notice at CCB fills the bank's cards).
	if _, err := w.svc.EndAgreement(ctx, binding.AgreementNotice{BankCode: "CCB", AgreementNo: "AGR-NONE-" + a.CardID,
		EndedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if !w.hasFingerprint(t, a.CardID) {
		t.Fatal("no fingerprint after a notice at the card's bank")
	}
	var fp []byte
	if err := w.Pool.QueryRow(ctx, `SELECT agreement_fp FROM cards WHERE id = $1`, a.CardID).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	want, err := w.Vault.Fingerprint(ctx, binding.DomainAgreement, []byte(a.AgreementNo))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fp, want) {
		t.Error("the stored fingerprint is not the HSM's fingerprint of the card's agreement number")
	}
	pan, err := w.Vault.Fingerprint(ctx, binding.DomainPAN, []byte(a.AgreementNo))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(fp, pan) {
		t.Error("the agreement fingerprint is the one a card number of the same digits would have")
	}
}
