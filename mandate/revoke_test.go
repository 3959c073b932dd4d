package mandate_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
)

// revocationEvent is an event with the fields a revocation's events carry.
type revocationEvent struct {
	Type string
	Data struct {
		CardID       string  `json:"card_id"`
		MandateID    string  `json:"mandate_id"`
		ChargeID     string  `json:"charge_id"`
		Status       string  `json:"status"`
		StatusReason *string `json:"status_reason"`
		FailureCode  *string `json:"failure_code"`
	}
}

// revocationEvents returns every event of merchantID, oldest first.
func (w *world) revocationEvents(t *testing.T, merchantID string) []revocationEvent {
	t.Helper()
	var out []revocationEvent
	for after := ""; ; {
		evs, more, err := w.hooks.ListEvents(context.Background(), merchantID, after, webhooks.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			e := revocationEvent{Type: ev.Type}
			if err := json.Unmarshal(ev.Data, &e.Data); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		if !more || len(evs) == 0 {
			return out
		}
		after = evs[len(evs)-1].ID
	}
}

// count is how many events of typ match.
func count(evs []revocationEvent, typ string, match func(revocationEvent) bool) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ && match(e) {
			n++
		}
	}
	return n
}

// TestCardRevoked: the two ways quickpay learns that a card's agreement
// ended at its bank, the bank's notice (EndAgreement) and a charge the bank
// answers "agreement invalid", end the card the same way, in both
// dialects: the card revoked, its mandates cancelled with status_reason
// card_revoked, their charges not yet sent failed (mandate_cancelled),
// nothing debited, and card.revoked, mandate.cancelled and charge.failed
// emitted once each. Learning it again, either way, changes nothing.
func TestCardRevoked(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	// A day of the test's own, far ahead: every banksim numbers its
	// agreements from 1 under the bank's date, and the package's worlds
	// share one database (an agreement number is a real bank's own).
	w.setDay(day("2158-03-10"))
	for _, bank := range []string{"ICBC", "CCB"} {
		for _, how := range []string{"notice", "agreement invalid"} {
			t.Run(bank+", "+how, func(t *testing.T) {
				c := w.bindCard(t, bank, 1_000_000)
				var mandates []mandate.Mandate
				var charged mandate.Mandate
				if how == "agreement invalid" {
					charged = w.mandate(t, c, w.dueToday(10_000))
					mandates = append(mandates, charged)
				}
				later := w.mandate(t, c, mandate.CreateInput{AmountType: mandate.AmountVariable, MaxAmount: 50_000,
					Schedule: mandate.Schedule{Interval: mandate.IntervalMonth, DayOfMonth: 20, StartDate: w.today()}})
				mandates = append(mandates, later)
				posted, err := w.svc.PostCharge(ctx, c.Merchant, later.ID, mandate.ChargeInput{Amount: 4321})
				if err != nil || posted.Status != mandate.ChargeScheduled {
					t.Fatalf("posted charge = %+v, %v; want scheduled", posted, err)
				}
				failures := map[string]string{posted.ID: "mandate_cancelled"}

				// notice ends the agreement at banksim, as the cardholder
				// would, and hands quickpay the bank's notice of it.
				notice := func() binding.AgreementEnd {
					t.Helper()
					ended, err := w.SimCtl.TerminateAgreement(ctx, c.CardNumber, "")
					if err != nil || len(ended) != 1 {
						t.Fatalf("terminate at banksim: %d agreements ended, %v", len(ended), err)
					}
					end, err := w.svc.EndAgreement(ctx, bank, bankadapters.Notice{Kind: bankadapters.NoticeAgreementTerminated,
						AgreementNo: ended[0].AgreementNo, At: w.clock.Now()})
					if err != nil {
						t.Fatal(err)
					}
					return end
				}
				switch how {
				case "notice":
					if end := notice(); end.Outcome != binding.NoticeRevoked || len(end.Revoked) != 1 || end.Revoked[0].ID != c.ID {
						t.Errorf("notice = %+v, want card %s revoked", end, c.ID)
					}
				case "agreement invalid":
					w.fault(t, simclient.Fault{BankCode: bank, Operation: "charge", Mode: simclient.FaultDecline, Code: "agreement_invalid"})
					if st := w.runDue(t); st.Claimed != 1 {
						t.Fatalf("claimed %d, want 1", st.Claimed)
					}
					ch := w.oneCharge(t, charged)
					failures[ch.ID] = "agreement_invalid"
				default:
					t.Fatalf("how %q", how)
				}

				check := func(when string) {
					t.Helper()
					if got := w.cardStatus(t, c); got != binding.CardRevoked {
						t.Errorf("%s: card = %s, want revoked", when, got)
					}
					for _, m := range mandates {
						got := w.getMandate(t, m)
						if got.Status != mandate.StatusCancelled || got.StatusReason != "card_revoked" || !got.NextChargeDate.IsZero() {
							t.Errorf("%s: mandate = %s (%s) next %v, want cancelled (card_revoked)", when, got.Status,
								got.StatusReason, got.NextChargeDate)
						}
					}
					for id, failure := range failures {
						ch, err := w.svc.GetCharge(ctx, c.Merchant, id)
						if err != nil || ch.Status != mandate.ChargeFailed || ch.FailureCode != failure {
							t.Errorf("%s: charge = %s (%s), %v; want failed (%s)", when, ch.Status, ch.FailureCode, err, failure)
						}
					}
					evs := w.revocationEvents(t, c.Merchant)
					if n := count(evs, "card.revoked", func(e revocationEvent) bool {
						return e.Data.CardID == c.ID && e.Data.Status == string(binding.CardRevoked)
					}); n != 1 {
						t.Errorf("%s: %d card.revoked events, want 1", when, n)
					}
					for _, m := range mandates {
						if n := count(evs, "mandate.cancelled", func(e revocationEvent) bool {
							return e.Data.MandateID == m.ID && e.Data.ChargeID == "" && e.Data.StatusReason != nil &&
								*e.Data.StatusReason == "card_revoked"
						}); n != 1 {
							t.Errorf("%s: %d mandate.cancelled events (card_revoked) of a mandate, want 1", when, n)
						}
					}
					for id, failure := range failures {
						if n := count(evs, "charge.failed", func(e revocationEvent) bool {
							return e.Data.ChargeID == id && e.Data.FailureCode != nil && *e.Data.FailureCode == failure
						}); n != 1 {
							t.Errorf("%s: %d charge.failed events (%s) of a charge, want 1", when, n, failure)
						}
					}
					if l := w.ledger(t, c); len(l) != 0 {
						t.Errorf("%s: the bank debited the card %d times, want never", when, len(l))
					}
				}
				check("ended")

				// Learning it again: the bank's notice of an agreement it
				// ended (after the charge's answer, the first one; after the
				// notice, its repeat), and a charge's answer.
				if how == "agreement invalid" {
					if end := notice(); end.Outcome != binding.NoticeEndedBefore || len(end.Revoked) != 0 {
						t.Errorf("the notice after the charge's answer = %+v, want ended_before", end)
					}
				} else {
					end, err := w.bindings.EndAgreement(ctx, binding.AgreementNotice{BankCode: bank,
						AgreementNo: w.agreementOf(t, c), EndedAt: w.clock.Now()})
					if err != nil || end.Outcome != binding.NoticeEndedBefore || len(end.Revoked) != 0 {
						t.Errorf("the notice again = %+v, %v; want ended_before", end, err)
					}
				}
				if card, err := w.bindings.Revoke(ctx, c.Merchant, c.ID, bankadapters.ReasonAgreementInvalid); err != nil ||
					card.Status != binding.CardRevoked {
					t.Errorf("revoke again = %+v, %v", card, err)
				}
				check("learnt again")
			})
		}
	}
}

// agreementOf is the number of the one agreement banksim keeps for c's
// card, in any status.
func (w *world) agreementOf(t *testing.T, c card) string {
	t.Helper()
	st, err := w.SimCtl.Account(context.Background(), c.CardNumber)
	if err != nil || len(st.Agreements) != 1 {
		t.Fatalf("bank agreements of the card: %d, %v", len(st.Agreements), err)
	}
	return st.Agreements[0].AgreementNo
}
