package binding

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Cards: reads, unbinding at the bank, revocation, and what other domains
// (mandates) need of a card.

// What other domains (mandates) need of a card: its reserved phone, to text
// the member, and its agreement number, to charge it. Both are decrypted in
// the HSM and each decryption is audited. Charges read agreement numbers
// in batches (Agreements).

// CardPhone returns the card and the phone number reserved at the bank,
// which the binding's four elements carried, read on q: a caller that
// holds a transaction passes it (and carries it for the decryption's audit
// row, audit.WithExecer), so no second connection is needed. Errors:
// ErrNotFound.
func (s *Service) CardPhone(ctx context.Context, q Querier, merchantID, cardID string, who sensitive.Access) (Card, string, error) {
	var bindingID string
	var phoneCT []byte
	c, err := scanCardWith(q.QueryRow(ctx, `SELECT `+cardColsC+`, b.id, b.phone_ct FROM cards c
		JOIN bindings b ON b.id = c.binding_id AND b.merchant_id = c.merchant_id
		WHERE c.merchant_id = $1 AND c.id = $2`, merchantID, cardID), &bindingID, &phoneCT)
	if err != nil {
		return Card{}, "", err
	}
	phone, err := s.vault.Decrypt(ctx, phoneCT, BindingAAD(merchantID, bindingID, "phone"), who)
	if err != nil {
		return Card{}, "", fmt.Errorf("card %s phone: %w", cardID, err)
	}
	return c, string(phone), nil
}

// CardRef names one merchant's card.
type CardRef struct{ MerchantID, CardID string }

// CardAgreement is a card with its decrypted bank agreement number, or the
// error that kept the number from being decrypted.
type CardAgreement struct {
	Card      Card
	Agreement string
	Err       error
}

// Agreements returns cards with their bank agreement numbers, for a batch
// of charges: the cards are read in one query and each number is decrypted
// in the HSM, its audit row written for (actor, reason); all rows commit
// together before any number is returned. A card that does not exist is
// absent from the map; one whose number does not decrypt carries the error.
// Errors: a database error, for the whole batch.
func (s *Service) Agreements(ctx context.Context, refs []CardRef, actor, reason string) (map[CardRef]CardAgreement, error) {
	merchants, ids := make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		merchants[i], ids[i] = r.MerchantID, r.CardID
	}
	out := make(map[CardRef]CardAgreement, len(refs))
	err := s.inTx(ctx, func(u *unit) error {
		clear(out)
		rows, err := u.tx.Query(u.ctx, `SELECT `+cardColsC+`, c.agreement_ct FROM cards c
			JOIN unnest($1::text[], $2::text[]) AS r(merchant_id, id) ON c.merchant_id = r.merchant_id AND c.id = r.id`,
			merchants, ids)
		if err != nil {
			return err
		}
		type sealed struct {
			card Card
			ct   []byte
		}
		var list []sealed
		for rows.Next() {
			var x sealed
			if x.card, err = scanCardWith(rows, &x.ct); err != nil {
				rows.Close()
				return err
			}
			list = append(list, x)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// The decryptions' audit rows are the unit's, written together.
		for _, x := range list {
			c := x.card
			pt, err := s.vault.Decrypt(u.ctx, x.ct, CardAgreementAAD(c.MerchantID, c.ID), sensitive.Access{
				MerchantID: c.MerchantID, Actor: actor, Subject: c.ID, Reason: reason})
			a := CardAgreement{Card: c, Agreement: string(pt)}
			if err != nil {
				a.Err = fmt.Errorf("card %s agreement: %w", c.ID, err)
			}
			out[CardRef{c.MerchantID, c.ID}] = a
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("card agreements: %w", err)
	}
	return out, nil
}

// GetCard returns one of the merchant's cards. Errors: ErrNotFound.
func (s *Service) GetCard(ctx context.Context, merchantID, id string) (Card, error) {
	c, err := getCard(ctx, s.pool, merchantID, id, false)
	return c.Card, err
}

// ListCards returns a member's cards, oldest first. Errors: ErrNotFound
// (no such member).
func (s *Service) ListCards(ctx context.Context, merchantID, memberID string) ([]Card, error) {
	if _, err := getMember(ctx, s.pool, merchantID, memberID); err != nil {
		return nil, err
	}
	return listMemberCards(ctx, s.pool, merchantID, memberID)
}

// Unbind terminates the card's agreement at the bank first, then marks the
// card unbound and emits card.unbound. Unbinding a card that is not active
// returns it; so does unbinding a card whose agreement the bank answers it
// no longer has ("agreement invalid"): the card becomes unbound all the
// same. A bank that does not end the agreement leaves the card active; the
// decryption and the failed try are audited all the same.
//
// Like a confirm it never waits on the bank in a transaction:
//
//  1. Claim the card (it stays active), decrypt its agreement number (the
//     decryption audited in the same transaction), commit. An unbind of a
//     card another unbind holds waits for its claim.
//  2. Call the bank, under a context the caller cannot cancel.
//  3. Apply the answer in a second transaction that checks the claim is
//     still this call's: unbound (claim released with the status), or the
//     refusal audited and the claim released.
//
// The crash window is between 2 and 3: the bank may have ended the
// agreement and the card is still active, claimed. Its claim lapses after
// claimTTL; the next unbind takes it over and asks the bank again, which
// answers "agreement invalid" (or success: unbinding at the bank is
// idempotent), and the card becomes unbound. A charge on it meanwhile is
// answered "agreement invalid" and revokes it.
//
// Errors: ErrNotFound, ErrCardDeclined (the bank refused),
// ErrBankUnavailable.
func (s *Service) Unbind(ctx context.Context, merchantID, id string) (Card, error) {
	token := ids.New("clm")
	var c cardRow
	var agreement []byte
	for w := newClaimWait(); ; {
		now := s.now()
		var claimed bool
		err := s.inTx(ctx, func(u *unit) error {
			var err error
			if c, claimed, err = claimCard(u.ctx, u.tx, merchantID, id, token, now.Add(claimTTL), now); err != nil || !claimed {
				return err
			}
			agreement, err = s.vault.Decrypt(u.ctx, c.AgreementCT, CardAgreementAAD(merchantID, c.ID), sensitive.Access{
				MerchantID: merchantID, Actor: actor(merchantID), Subject: c.ID, Reason: "unbind at bank"})
			return err
		})
		if err != nil {
			return Card{}, err
		}
		if claimed {
			break
		}
		if c, err = getCard(ctx, s.pool, merchantID, id, false); err != nil {
			return Card{}, err
		}
		switch status := CardStatus(c.Status); status {
		case CardUnbound, CardRevoked:
			return c.Card, nil
		case CardActive:
		default:
			return Card{}, status.Check()
		}
		if err := w.wait(ctx); err != nil {
			return Card{}, fmt.Errorf("%w: another call is unbinding the card: %w", ErrBankUnavailable, err)
		}
	}

	berr := s.callBank(ctx, c.BankCode, func(ctx context.Context, bank bankadapters.Bank) error {
		return bank.Unbind(ctx, string(agreement))
	})
	if s.crashed("unbind") {
		return Card{}, errCrashed // the crash window: see above
	}
	ctx, cancel := afterCall(ctx)
	defer cancel()

	var out Card
	err := s.inTx(ctx, func(u *unit) error {
		cur, err := getCard(u.ctx, u.tx, merchantID, id, true)
		if err != nil {
			return err
		}
		out = cur.Card
		if cur.ClaimedBy != token || cur.Status != CardActive {
			// Ended meanwhile (revoked), or the claim lapsed and another
			// unbind took it over: that call settles the card.
			if cur.Status == CardActive {
				u.refuse(fmt.Errorf("%w: another call took over the card", ErrBankUnavailable))
			}
			return nil
		}
		details := map[string]any(nil)
		if agreementGone(berr) {
			// The bank dropped the agreement already (the cardholder ended
			// it there, or an unbind that died in its window did): what
			// unbinding asks for is done.
			details = map[string]any{"agreement_gone": true, "bank_code": bankCode(berr)}
		} else if berr != nil {
			u.audit(merchantID, "card.unbind", cur.ID, audit.OutcomeFailed, map[string]any{
				"class": bankadapters.OutcomeOf(berr), "bank_code": bankCode(berr)})
			queueReleaseCard(&u.batch, merchantID, cur.ID, token)
			u.refuse(unbindError(berr))
			return nil
		}
		if bytes.Equal(cur.AgreementCT, c.AgreementCT) {
			u.fingerprintEnding(cur, agreement)
		} else {
			u.fingerprintEnding(cur, nil)
		}
		u.endCard(cur.Card, CardUnbound)
		out.Status = CardUnbound
		u.audit(merchantID, "card.unbind", cur.ID, audit.OutcomeOK, details)
		u.emit(cardEvent(out, webhooks.EventCardUnbound))
		return nil
	})
	if err != nil {
		return Card{}, err
	}
	return out, nil
}

// agreementGone reports whether the bank refused an unbind because it
// knows no live agreement by that number.
func agreementGone(err error) bool {
	var be *bankadapters.Error
	return errors.As(err, &be) && be.Reason == bankadapters.ReasonAgreementInvalid
}

// unbindError turns the bank's answer to an unbind into the domain's error:
// a refusal is final, anything else may be tried again.
func unbindError(err error) error {
	switch o := bankadapters.OutcomeOf(err); o {
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
		return fmt.Errorf("%w: %v", ErrCardDeclined, err)
	case bankadapters.OutcomeUnavailable, bankadapters.OutcomeProcessing, bankadapters.OutcomeElementsMismatch,
		bankadapters.OutcomeAlreadyBound, bankadapters.OutcomeOTPWrong, bankadapters.OutcomeOTPExpired,
		bankadapters.OutcomeOTPAttemptsExceeded, bankadapters.OutcomeSuccess:
		return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
	default:
		return fmt.Errorf("binding: bank outcome %q not handled at unbind: %w", o, err)
	}
}

// Revoke marks a card revoked when quickpay learns its agreement ended at
// the bank (a charge answered "agreement invalid" or "card closed"; reason
// says which), whatever call holds it: an unbind in flight then finds it
// ended. The card's mandates are cancelled in the same transaction
// (Config.CardEnded) and card.revoked is emitted, once: revoking a card
// that is not active returns it and changes nothing (revoke.go). Errors:
// ErrNotFound.
func (s *Service) Revoke(ctx context.Context, merchantID, id, reason string) (Card, error) {
	var out Card
	err := s.inTx(ctx, func(u *unit) error {
		c, err := getCard(u.ctx, u.tx, merchantID, id, true)
		if err != nil {
			return err
		}
		out = c.Card
		if c.Status != CardActive {
			return nil
		}
		u.fingerprintEnding(c, nil)
		out = u.revoke(c.Card, actor(merchantID), reason)
		return nil
	})
	return out, err
}
