package binding

import (
	"context"
	"fmt"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
)

// Resend asks the bank for a fresh code: at least 60 s after the last one,
// at most 5 sends, within the phone's daily texts.
//
// Like a confirm it never waits on the bank in a transaction:
//
//  1. Reserve, in one transaction: the binding's send count, the new
//     code's expiry, and the phone's count (a caller who hangs up once the
//     bank has been asked has used the send). A binding a confirm holds
//     (its claim live) is refused, ErrBindingNotPending: a resend must not
//     text a new code while the bank checks the old one. The resend takes
//     no claim itself, so a confirm with the new code may run while the
//     bank texts it.
//  2. Call the bank.
//  3. Apply the answer in a second transaction, under a context the caller
//     cannot cancel. A binding settled meanwhile, or that a confirm holds
//     now, keeps its state: that confirm's answer settles it.
//
// A crash between 2 and 3 leaves the reservation: the send is counted and
// the new code's expiry set, as for a code that may have gone out.
//
// Errors: ErrNotFound, ErrBindingExpired, ErrBindingNotPending,
// *ResendTooSoonError, ErrResendLimit, *RateLimitedError,
// ErrBankUnavailable (the binding stays); ErrCardDeclined,
// *ElementsMismatchError, ErrOTPAttemptsExceeded, ErrCardBoundElsewhere
// (the bank refused: the binding has failed). A card bound to the same
// member meanwhile returns the binding bound to it.
func (s *Service) Resend(ctx context.Context, merchantID, id string) (res Binding, rerr error) {
	defer func() { s.otp.sent(OTPKindBindResend, res, rerr) }()
	var b bindingRow
	now := s.now()
	err := s.inTx(ctx, func(u *unit) error {
		var err error
		if b, err = getBinding(u.ctx, u.tx, merchantID, id, true); err != nil {
			return err
		}
		if err := waiting(b); err != nil {
			return err
		}
		if b.claim.live(now) {
			return fmt.Errorf("%w: its code is being confirmed", ErrBindingNotPending)
		}
		if u.expireIfDue(b, now) {
			return nil
		}
		if b.OTPSends >= OTPMaxSends {
			return ErrResendLimit
		}
		if wait := b.ResendAfter().Sub(now); wait > 0 {
			return &ResendTooSoonError{RetryAfter: wait}
		}
		if _, ok := s.banks.Bank(b.Card.BankCode); !ok {
			return ErrBankUnavailable
		}
		if s.limiter != nil {
			fp, err := s.phoneFP(u.ctx, b)
			if err != nil {
				return err
			}
			// In this transaction: its connection and the binding's lock
			// are held, so a take on the pool could wait on a connection
			// that every other resend holds too.
			if err := s.takeSMS(u.ctx, u.tx, now, fp); err != nil {
				return err
			}
		}
		// The new code's validity starts with its send: a confirm or read
		// during the bank's call must not expire the binding at the old
		// code's expiry, nor must a crash before the answer is written.
		b.OTPSends++
		b.OTPLastSentAt, b.OTPExpiresAt = now, now.Add(OTPValidity)
		u.save(b, "")
		return nil
	})
	if err != nil {
		return Binding{}, err
	}
	bank, _ := s.banks.Bank(b.Card.BankCode)
	callCtx, cancelCall := context.WithTimeout(ctx, s.callTimeout)
	berr := bank.BindResend(callCtx, b.BankBindRef)
	cancelCall()
	if s.crashed("resend") {
		return Binding{}, errCrashed
	}
	// The answer is written whatever the caller does now, bounded.
	ctx, cancel := afterCall(ctx)
	defer cancel()
	var out Binding
	err = s.inTx(ctx, func(u *unit) error {
		b, err := getBinding(u.ctx, u.tx, merchantID, id, true)
		if err != nil {
			return err
		}
		out, err = u.resent(b, berr)
		return err
	})
	// err is the unit's answer once committed, or the transaction's.
	return out, err
}

// resent applies the bank's answer to a resend whose send b counts.
func (u *unit) resent(b bindingRow, berr error) (Binding, error) {
	if berr == nil {
		// The code's expiry was set with the reservation.
		u.audit(b.MerchantID, "otp.send", b.ID, audit.OutcomeOK, map[string]any{"send": b.OTPSends, "by": "bank"})
		return b.Binding, nil
	}
	// The failed send is audited and committed either way.
	u.audit(b.MerchantID, "otp.send", b.ID, audit.OutcomeFailed, map[string]any{
		"send": b.OTPSends, "class": bankadapters.OutcomeOf(berr)})
	if b.Status != StatusOTPSent {
		// Settled meanwhile (confirmed, failed): the bank's answer to this
		// resend changes nothing.
		u.refuse(waiting(b))
		return Binding{}, nil
	}
	if b.claim.live(u.s.now()) {
		// A confirm took the binding during the bank's call: its answer
		// settles the binding, whatever the bank said to this resend.
		u.refuse(fmt.Errorf("%w: its code is being confirmed", ErrBindingNotPending))
		return Binding{}, nil
	}
	switch outcome := bankadapters.OutcomeOf(berr); outcome {
	case bankadapters.OutcomeOTPExpired:
		// The bank has forgotten the session.
		return u.fail(b, StatusExpired, "binding_expired", bankCode(berr), ErrBindingExpired), nil
	case bankadapters.OutcomeOTPAttemptsExceeded:
		b.OTPAttempts = OTPMaxAttempts
		return u.fail(b, StatusFailed, "otp_attempts_exceeded", bankCode(berr), ErrOTPAttemptsExceeded), nil
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
		// The bank refuses the card now (frozen, closed since apply): no
		// code will come, so the binding ends.
		return u.fail(b, StatusFailed, "card_declined", bankCode(berr), ErrCardDeclined), nil
	case bankadapters.OutcomeElementsMismatch:
		return u.fail(b, StatusFailed, "elements_mismatch", bankCode(berr), u.s.bankError(berr)), nil
	case bankadapters.OutcomeAlreadyBound:
		// Another binding of the card was confirmed meanwhile.
		return u.alreadyBound(b, berr, "")
	case bankadapters.OutcomeUnavailable, bankadapters.OutcomeProcessing, bankadapters.OutcomeOTPWrong:
		// Not sent, or no answer: the binding stays, retryable once the
		// gap has passed (the send is used, and the expiry it set stays: a
		// code may have gone out).
		u.refuse(fmt.Errorf("%w: %v", ErrBankUnavailable, berr))
		return Binding{}, nil
	default:
		return Binding{}, fmt.Errorf("binding: resend refused with an outcome not handled: %q: %w", outcome, berr)
	}
}
