package binding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Revocation: a card whose agreement ended at the bank becomes revoked,
// and its mandates end with it (Config.CardEnded). Two things tell
// quickpay an agreement ended: a charge answered "agreement invalid"
// (Revoke, in cards.go) and the bank's own notice that the cardholder
// ended it there (EndAgreement). Either way the card is revoked once,
// card.revoked emitted once, and what the other learns later changes
// nothing.
//
// A notice names the agreement, not the card: cards.agreement_fp, the
// agreement number's keyed fingerprint (domain DomainAgreement, an HMAC in
// the HSM like pan_fp), finds the card (migration 026). It is NULL until
// computed: for cards written before the column, and for any written
// without one (setActiveCardAgreement clears it with a new number). A
// notice no fingerprint answers fingerprints its bank's active cards that
// have none (fillAgreementFPs), each once in its life, and looks again; a
// bank whose cards are all fingerprinted costs a notice one index probe
// there. A card that ends without one gets it as it ends
// (fingerprintEnding), so that a later notice finds it ended. Binding
// fingerprints a card's agreement as it stores it (fingerprintAgreement),
// so the fill has only the old rows to do.

// DomainAgreement is the fingerprint domain of bank agreement numbers.
const DomainAgreement = "agreement"

// ReasonAgreementTerminated is the audited reason of a card revoked by its
// bank's notice.
const ReasonAgreementTerminated = "agreement_terminated"

// AgreementNotice is a bank's verified word that a cardholder ended an
// agreement there.
type AgreementNotice struct {
	BankCode    string
	AgreementNo string
	EndedAt     time.Time // when the bank ended it, on its clock
}

// NoticeOutcome is what quickpay made of an agreement notice, the set the
// bank_notices.outcome CHECK holds.
type NoticeOutcome string

// Notice outcomes.
const (
	NoticeRevoked          NoticeOutcome = "revoked"           // active cards holding the agreement were revoked
	NoticeEndedBefore      NoticeOutcome = "ended_before"      // the cards holding it had ended already (a repeat, an unbind)
	NoticeUnknownAgreement NoticeOutcome = "unknown_agreement" // no card holds it: recorded for operators only
)

// AgreementEnd is what EndAgreement did.
type AgreementEnd struct {
	NoticeID string // the bank_notices row that records the notice (its first delivery's)
	Outcome  NoticeOutcome
	Revoked  []Card // the cards this notice revoked: none on a repeat
}

// noticeKindAgreement is bank_notices.kind of an agreement notice.
const noticeKindAgreement = "agreement_terminated"

// EndAgreement acts on a bank's notice that a cardholder ended an
// agreement there: every active card of that bank holding it is revoked,
// its mandates cancelled in the same transaction (Config.CardEnded),
// card.revoked emitted, and the notice recorded in bank_notices. A notice
// for an agreement no card holds is recorded (outcome unknown_agreement)
// and logged for operators, and is no error: the bank is to stop sending
// it. Idempotent: the bank's retries and replays of a notice revoke
// nothing more and are recorded once.
//
// Errors: the database's and the HSM's (the bank sends the notice again).
func (s *Service) EndAgreement(ctx context.Context, n AgreementNotice) (AgreementEnd, error) {
	if n.BankCode == "" || n.AgreementNo == "" || n.EndedAt.IsZero() {
		return AgreementEnd{}, errors.New("binding: an agreement notice needs its bank, agreement number and time")
	}
	fps, err := s.vault.Fingerprints(ctx, DomainAgreement, []byte(n.AgreementNo))
	if err != nil {
		return AgreementEnd{}, fmt.Errorf("agreement notice from %s: %w", n.BankCode, err)
	}
	held, err := agreementHeld(ctx, s.pool, n.BankCode, fps)
	if err != nil {
		return AgreementEnd{}, fmt.Errorf("agreement notice from %s: %w", n.BankCode, err)
	}
	if !held {
		if _, err := s.fillAgreementFPs(ctx, n.BankCode); err != nil {
			return AgreementEnd{}, fmt.Errorf("agreement notice from %s: %w", n.BankCode, err)
		}
	}
	rec := bankNoticeRow{ID: ids.New("bnt"), BankCode: n.BankCode, Kind: noticeKindAgreement, AgreementFP: fps[0],
		EndedAt: n.EndedAt.UTC().Truncate(time.Microsecond)}
	if rec.AgreementCT, err = s.vault.Encrypt(ctx, []byte(n.AgreementNo), BankNoticeAAD(n.BankCode, rec.ID)); err != nil {
		return AgreementEnd{}, fmt.Errorf("agreement notice from %s: %w", n.BankCode, err)
	}
	var out AgreementEnd
	err = s.inTx(ctx, func(u *unit) error {
		out.NoticeID = rec.ID
		cards, err := lockCardsByAgreement(u.ctx, u.tx, n.BankCode, fps)
		if err != nil {
			return err
		}
		for _, c := range cards {
			rec.CardIDs = append(rec.CardIDs, c.ID)
			switch c.Status {
			case CardActive:
				out.Revoked = append(out.Revoked, u.revoke(c.Card, "bank:"+n.BankCode, ReasonAgreementTerminated))
			case CardUnbound, CardRevoked:
			default:
				return c.Status.Check()
			}
		}
		switch {
		case len(cards) == 0:
			out.Outcome = NoticeUnknownAgreement
		case len(out.Revoked) > 0:
			out.Outcome = NoticeRevoked
		default:
			out.Outcome = NoticeEndedBefore
		}
		if len(cards) > 0 {
			rec.MerchantID = cards[0].MerchantID
		}
		rec.Outcome, rec.ReceivedAt = out.Outcome, s.now()
		return insertBankNotice(u.ctx, u.tx, rec, &out.NoticeID)
	})
	if err != nil {
		return AgreementEnd{}, fmt.Errorf("agreement notice from %s: %w", n.BankCode, err)
	}
	if out.Outcome == NoticeUnknownAgreement {
		s.log.Warn("bank notice: an agreement no card holds ended at the bank; recorded for operators",
			"bank", n.BankCode, "notice", out.NoticeID)
	}
	return out, nil
}

// BankNoticeAAD is the AAD of a bank notice's agreement number.
func BankNoticeAAD(bankCode, noticeID string) []byte {
	return []byte("bank_notice|" + bankCode + "|" + noticeID + "|agreement")
}

// revoke ends the active card c as revoked (its mandates end with it:
// endCard), audits it for actor with reason, and emits card.revoked.
func (u *unit) revoke(c Card, actor, reason string) Card {
	u.endCard(c, CardRevoked)
	c.Status = CardRevoked
	u.auditAs(actor, c.MerchantID, "card.revoke", c.ID, audit.OutcomeOK, map[string]any{"reason": reason})
	u.emit(cardEvent(c, webhooks.EventCardRevoked))
	return c
}

// auditAs is audit with an actor other than the merchant's API client (a
// bank, a worker).
func (u *unit) auditAs(actor, merchantID, action, subject, outcome string, details map[string]any) {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	// Under the unit's collector only marshalling details can fail, and
	// they are ids, codes and outcomes.
	if err := audit.Write(u.ctx, nil, audit.Entry{MerchantID: merchantID, Actor: actor, Action: action,
		Subject: subject, Details: d}); err != nil {
		panic(fmt.Sprintf("binding: audit row %s: %v", action, err))
	}
}

// fingerprintEnding gives a card that is ending (revoked, unbound) without
// an agreement fingerprint one, with the unit's writes, so that a notice
// of its bank about the agreement finds the card ended rather than no
// card. agreementNo is the number when the caller has it decrypted for
// the sealed agreement of c; else it is decrypted here, audited. The card
// ends all the same when the number does not decrypt or the HSM refuses
// the fingerprint: that is logged (the card's id only).
func (u *unit) fingerprintEnding(c cardRow, agreementNo []byte) {
	if c.AgreementFP != nil {
		return
	}
	if agreementNo == nil {
		pt, err := u.s.vault.Decrypt(u.ctx, c.AgreementCT, CardAgreementAAD(c.MerchantID, c.ID), sensitive.Access{
			MerchantID: c.MerchantID, Actor: fillActor, Subject: c.ID, Reason: "agreement fingerprint"})
		if err != nil {
			u.s.log.Error("card agreement does not decrypt; the card ends without its fingerprint", "card", c.ID, "err", err)
			return
		}
		defer clear(pt)
		agreementNo = pt
	}
	fp, err := u.s.vault.Fingerprint(u.ctx, DomainAgreement, agreementNo)
	if err != nil {
		u.s.log.Error("card agreement fingerprint failed; the card ends without it", "card", c.ID, "err", err)
		return
	}
	queueFillAgreementFP(&u.batch, c.MerchantID, c.ID, c.AgreementCT, fp)
}

// fingerprintAgreement records, with the unit's writes, the fingerprint of
// agreementNo as the agreement of the merchant's card cardID, which the
// unit's transaction stores: the key EndAgreement finds the card by.
// Errors: the HSM's.
func (u *unit) fingerprintAgreement(merchantID, cardID, agreementNo string) error {
	fp, err := u.s.vault.Fingerprint(u.ctx, DomainAgreement, []byte(agreementNo))
	if err != nil {
		return fmt.Errorf("card %s agreement fingerprint: %w", cardID, err)
	}
	queueSetAgreementFP(&u.batch, merchantID, cardID, fp)
	return nil
}

// fillBatch is how many cards one transaction of fillAgreementFPs
// fingerprints.
const fillBatch = 200

// fillActor is who decrypts agreement numbers to fingerprint them.
const fillActor = "worker:agreement_fp"

// fillAgreementFPs fingerprints the agreement numbers of bankCode's active
// cards that have none, fillBatch cards a transaction, each decryption
// audited, and returns how many it filled. A card whose number does not
// decrypt is logged (its id only) and left without one. A card whose
// agreement changed meanwhile is left for the next fill.
func (s *Service) fillAgreementFPs(ctx context.Context, bankCode string) (int, error) {
	filled, after := 0, ""
	for {
		var n int
		var last string
		err := s.inTx(ctx, func(u *unit) error {
			n, last = 0, ""
			list, err := unfingerprintedAgreements(u.ctx, u.tx, bankCode, after, fillBatch)
			if err != nil {
				return err
			}
			for _, c := range list {
				last = c.ID
				pt, err := s.vault.Decrypt(u.ctx, c.AgreementCT, CardAgreementAAD(c.MerchantID, c.ID), sensitive.Access{
					MerchantID: c.MerchantID, Actor: fillActor, Subject: c.ID, Reason: "agreement fingerprint"})
				if err != nil {
					s.log.Error("card agreement does not decrypt; left without a fingerprint", "card", c.ID, "err", err)
					continue
				}
				fp, err := s.vault.Fingerprint(u.ctx, DomainAgreement, pt)
				clear(pt)
				if err != nil {
					return fmt.Errorf("card %s agreement fingerprint: %w", c.ID, err)
				}
				queueFillAgreementFP(&u.batch, c.MerchantID, c.ID, c.AgreementCT, fp)
				n++
			}
			return nil
		})
		if err != nil {
			return filled, fmt.Errorf("fingerprint %s agreements: %w", bankCode, err)
		}
		filled += n
		if last == "" {
			if filled > 0 {
				s.log.Info("card agreements fingerprinted", "bank", bankCode, "cards", filled)
			}
			return filled, nil
		}
		after = last
	}
}
