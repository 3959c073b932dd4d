package binding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Errors of ReleaseAgreement.
var (
	// ErrNoAgreement: the binding holds no agreement at the bank that
	// quickpay could release: it never reached one, or it was refused
	// before bindings kept the agreement (migration 033), or the bank
	// keeps one quickpay never learnt (Confirm's crash window).
	ErrNoAgreement = errors.New("binding has no agreement to release")
	// ErrAlreadyReleased: the binding's agreement was released before;
	// ReleaseAgreement did nothing.
	ErrAlreadyReleased = errors.New("agreement already released")
)

// AgreementAAD is the AAD of the agreement a refused binding keeps until
// the bank has released it.
func AgreementAAD(merchantID, bindingID string) []byte {
	return BindingAAD(merchantID, bindingID, "agreement")
}

// ReleaseAgreement asks the bank to end the agreement of merchantID's
// binding bindingID: one the bank confirmed and quickpay refused
// (identity_mismatch, card_bound_elsewhere), whose release right after the
// refusal the bank did not accept. It is an operator's action: actor names
// the operator in the audit entry bind.release, which records the outcome
// (ok, or failed with the bank's code).
//
// It follows the claim, call, apply rule (docs/decisions.md "No bank call
// inside a transaction"): it claims the binding (a release that another
// call holds is waited for), decrypts the kept agreement (an audited
// decryption by actor), asks the bank's Unbind under a context the caller
// cannot cancel, and writes the answer in a second transaction while it
// still holds the claim. A bank that answers it knows no such agreement
// has ended it already: that is released too (agreement_gone). Once
// released, the kept agreement is dropped.
//
// It returns the binding and nil once the bank released the agreement;
// the binding and ErrAlreadyReleased when it was released before (nothing
// is done, nothing audited); ErrNoAgreement when the binding keeps no
// agreement; ErrNotFound for another merchant's or an unknown binding;
// ErrBankUnavailable when the bank did not release it (the agreement stays
// kept, audited failed, for another try).
func (s *Service) ReleaseAgreement(ctx context.Context, merchantID, bindingID, actor string) (Binding, error) {
	if !ids.Valid("bnd", bindingID) {
		return Binding{}, ErrNotFound
	}
	b, agreementCT, err := s.claimForRelease(ctx, merchantID, bindingID)
	if err != nil {
		return b.Binding, err
	}
	token := b.ClaimedBy

	agreement, err := s.vault.Decrypt(ctx, agreementCT, AgreementAAD(merchantID, bindingID), sensitive.Access{
		MerchantID: merchantID, Actor: actor, Subject: bindingID, Reason: "release a refused binding's agreement"})
	if err != nil {
		// Nothing was asked of the bank: the claim is given back.
		if uerr := s.inBatch(ctx, func(u *unit) { queueUnclaimBinding(&u.batch, merchantID, bindingID, token) }); uerr != nil {
			s.log.Error("release claim", "binding", bindingID, "err", uerr)
		}
		return Binding{}, fmt.Errorf("release agreement of %s: %w", bindingID, err)
	}
	berr := s.callBank(ctx, b.Card.BankCode, func(ctx context.Context, bank bankadapters.Bank) error {
		return bank.Unbind(ctx, string(agreement))
	})
	if s.crashed("release") {
		// The crash window: the bank may have released it and nothing is
		// written. The claim lapses; the next release asks the bank again,
		// which answers an ended agreement with success or "agreement
		// invalid", both released.
		return Binding{}, errCrashed
	}
	ctx, cancel := afterCall(ctx)
	defer cancel()

	var out Binding
	err = s.inTx(ctx, func(u *unit) error {
		cur, err := getBinding(u.ctx, u.tx, merchantID, bindingID, true)
		if err != nil {
			return err
		}
		out = cur.Binding
		if cur.ClaimedBy != token {
			// The claim lapsed and another release took it over: that one
			// writes the answer.
			u.s.log.Error("a bank answer came after its claim lapsed; the call that took the claim over settles the release",
				"binding", bindingID)
			u.refuse(fmt.Errorf("%w: another release took over the binding", ErrBankUnavailable))
			return nil
		}
		details := map[string]any{"reason": cur.FailureCode}
		switch {
		case berr == nil:
		case agreementGone(berr):
			details["agreement_gone"], details["bank_code"] = true, bankCode(berr)
		default:
			details["bank_code"] = bankCode(berr)
			u.s.log.Error("an operator's release of a refused binding's agreement failed; the agreement stays kept",
				"binding", bindingID, "bank", cur.Card.BankCode, "err", berr)
			queueUnclaimBinding(&u.batch, merchantID, bindingID, token)
			u.auditBy(actor, merchantID, "bind.release", bindingID, audit.OutcomeFailed, details)
			u.refuse(fmt.Errorf("%w: %v", ErrBankUnavailable, berr))
			return nil
		}
		queueAgreementReleased(&u.batch, merchantID, bindingID, u.s.now())
		u.auditBy(actor, merchantID, "bind.release", bindingID, audit.OutcomeOK, details)
		return nil
	})
	return out, err
}

// claimForRelease claims a binding that keeps an agreement for
// ReleaseAgreement, waiting while another release holds it, and returns it
// with the kept agreement's ciphertext. Errors: ErrNotFound, ErrNoAgreement,
// ErrAlreadyReleased (with the binding), ErrBankUnavailable (another call
// held it past the wait).
func (s *Service) claimForRelease(ctx context.Context, merchantID, id string) (bindingRow, []byte, error) {
	token := ids.New("clm")
	w := newClaimWait()
	for {
		now := s.now()
		var ct []byte
		b, err := scanBindingWith(s.pool.QueryRow(ctx, `UPDATE bindings SET claimed_by = $3, claim_until = $4
			WHERE merchant_id = $1 AND id = $2 AND agreement_ct IS NOT NULL
			  AND (claim_until IS NULL OR claim_until <= $5)
			RETURNING `+bindingCols+`, agreement_ct`, merchantID, id, token, now.Add(claimTTL), now), &ct)
		if err == nil {
			return b, ct, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return bindingRow{}, nil, err
		}
		var kept, released bool
		b, err = scanBindingWith(s.pool.QueryRow(ctx, `SELECT `+bindingCols+`, agreement_ct IS NOT NULL,
			agreement_released_at IS NOT NULL FROM bindings WHERE merchant_id = $1 AND id = $2`, merchantID, id),
			&kept, &released)
		switch {
		case err != nil:
			return bindingRow{}, nil, err
		case released:
			return b, nil, ErrAlreadyReleased
		case !kept:
			return bindingRow{}, nil, ErrNoAgreement
		}
		// Kept, and claimed by another release (or the claim lapsed
		// between the two statements: claim again).
		if err := w.wait(ctx); err != nil {
			return bindingRow{}, nil, fmt.Errorf("%w: another call is releasing the agreement: %w", ErrBankUnavailable, err)
		}
	}
}

// keepAgreement keeps, encrypted, the agreement the bank made for a
// binding quickpay refuses, written with the refusal, so that it can be
// released at the bank (releaseAgreement, ReleaseAgreement).
func (u *unit) keepAgreement(b bindingRow, agreementNo string) error {
	ct, err := u.s.vault.Encrypt(u.ctx, []byte(agreementNo), AgreementAAD(b.MerchantID, b.ID))
	if err != nil {
		return fmt.Errorf("keep agreement of %s: %w", b.ID, err)
	}
	u.batch.Queue(`UPDATE bindings SET agreement_ct = $3 WHERE merchant_id = $1 AND id = $2`, b.MerchantID, b.ID, ct)
	return nil
}

// queueAgreementReleased records that the bank released the binding's
// kept agreement: the ciphertext is dropped and any claim released.
func queueAgreementReleased(batch *pgx.Batch, merchantID, id string, now time.Time) {
	batch.Queue(`UPDATE bindings SET agreement_ct = NULL, agreement_released_at = $3, claimed_by = NULL, claim_until = NULL
		WHERE merchant_id = $1 AND id = $2 AND agreement_ct IS NOT NULL`, merchantID, id, now)
}

// queueUnclaimBinding releases the claim token holds on the binding.
func queueUnclaimBinding(batch *pgx.Batch, merchantID, id, token string) {
	batch.Queue(`UPDATE bindings SET claimed_by = NULL, claim_until = NULL
		WHERE merchant_id = $1 AND id = $2 AND claimed_by = $3`, merchantID, id, token)
}

// auditBy holds an audit row of the operation made by actor (an operator),
// not by the merchant's API client.
func (u *unit) auditBy(actor, merchantID, action, subject, outcome string, details map[string]any) {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	if err := audit.Write(u.ctx, nil, audit.Entry{MerchantID: merchantID, Actor: actor, Action: action,
		Subject: subject, Details: d}); err != nil {
		panic(fmt.Sprintf("binding: audit row %s: %v", action, err))
	}
}
