package binding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// callTimeout bounds the bank's part of a call its caller cannot cancel
// (a claimed confirm or unbind, a reserved resend): the wait for a slot at
// the bank's gate and the call (its adapter has its own, shorter, timeout).
const callTimeout = 30 * time.Second

// applyTimeout bounds writing the bank's answer. It runs on a context of
// its own, so a call that used all of callTimeout (queued at the gate, then
// bankadapters.ErrNotSent) still writes its answer and releases its claim.
const applyTimeout = 15 * time.Second

// claimTTL is how long a claim holds. A call that holds one has ended by
// then (callTimeout and applyTimeout bound it, with 15 s to spare for the
// claim's own statement and clock differences between instances), so a
// claim past its claim_until belongs to a call that died between the
// bank's answer and its second transaction, and the next call takes it
// over.
const claimTTL = callTimeout + applyTimeout + 15*time.Second

// callBank makes a claimed call at bank code: fn runs under callTimeout,
// whatever the caller does now (once the bank has answered, its answer
// must be written). A bank with no channel here is ErrBankUnavailable.
func (s *Service) callBank(ctx context.Context, code string, fn func(context.Context, bankadapters.Bank) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.callTimeout)
	defer cancel()
	bank, ok := s.banks.Bank(code)
	if !ok {
		return fmt.Errorf("%w: no channel to bank %s", ErrBankUnavailable, code)
	}
	return fn(ctx, bank)
}

// afterCall returns the context that writes a call's answer: bounded by
// applyTimeout, whatever the caller or the call's own deadline did.
func afterCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
}

// Confirm checks the user's code. On success the card is created (and,
// for an implicit binding, the member), binding.bound is emitted, and the
// binding is bound. Confirming a bound binding again returns it.
//
// It runs in three steps, none waiting on the bank inside a transaction:
//
//  1. Claim: one statement claims the binding (claimBinding). A binding
//     another confirm holds is waited for, polling with a bounded wait
//     (claimWait): two confirms of one binding make one bank confirm, and
//     the second returns the binding the first bound. A resend sends
//     nothing while the claim is held (resend.go).
//  2. Call the bank, under a context the caller cannot cancel: once the
//     bank confirms, its agreement exists whatever the caller does, so a
//     caller that hangs up must not leave it unwritten.
//  3. Apply the answer in one transaction (a unit), which re-reads the
//     binding under its lock, checks the claim is still this call's, and
//     releases it with the binding's write.
//
// The crash window is between 2 and 3: the bank has answered and nothing
// is written. The claim stays until claim_until; then the next confirm
// takes it over and asks the bank again with the user's code. A bank that
// confirmed the first call answers a repeat with the same code with the
// session's agreement (bankadapters.Bank's contract, which banksim keeps):
// that settles the window, the card made once with the one agreement. A
// repeat with another code is answered "session finished": the binding
// expires and the bank keeps an agreement quickpay does not know, which the
// audit row (otp.verify, after_lapsed_claim) and the log name for
// operators.
//
// Errors: ErrNotFound, *FieldError, *OTPIncorrectError (with attempts
// left), ErrOTPAttemptsExceeded, ErrBindingExpired, ErrBindingNotPending,
// ErrCardBoundElsewhere, *IdentityMismatchError, ErrCardDeclined,
// ErrBankUnavailable (the bank did not answer, a call was never sent, or
// another confirm holds the binding past the caller's patience).
func (s *Service) Confirm(ctx context.Context, merchantID, id string, otp sensitive.OTP) (_ Binding, err error) {
	defer func() { s.otp.Verify(OTPKindBind, VerifyOutcome(err)) }()
	if !ValidOTP(otp.Reveal()) {
		return Binding{}, &FieldError{Field: "otp", Message: "must be 6 digits"}
	}
	b, err := s.claimForConfirm(ctx, merchantID, id)
	if err != nil || b.ClaimedBy == "" {
		return b.Binding, err // an error, or bound already
	}
	token, lapsed := b.ClaimedBy, b.lapsedClaim

	var agreementNo string
	berr := s.callBank(ctx, b.Card.BankCode, func(ctx context.Context, bank bankadapters.Bank) (err error) {
		agreementNo, err = bank.BindConfirm(ctx, b.BankBindRef, otp)
		return err
	})
	if s.crashed("confirm") {
		return Binding{}, errCrashed // the crash window: see above
	}
	ctx, cancel := afterCall(ctx)
	defer cancel()

	var out Binding
	err = s.inTx(ctx, func(u *unit) error {
		cur, held, err := u.claimed(merchantID, id, token)
		if err != nil || !held {
			out = cur.Binding
			return err
		}
		if berr != nil {
			out, err = u.refused(cur, berr, lapsed)
			return err
		}
		u.audit(merchantID, "otp.verify", cur.ID, audit.OutcomeOK, nil)
		out, err = u.confirmed(cur, agreementNo)
		return err
	})
	// err is the unit's answer once committed (out is the binding as
	// written: a failed one with its refusal), or the transaction's.
	return out, err
}

// confirmClaim is a binding claimed for a confirm.
type confirmClaim struct {
	bindingRow
	// lapsedClaim: the claim taken over had lapsed, so an earlier confirm
	// may have reached the bank and died before writing its answer.
	lapsedClaim bool
}

// claimForConfirm claims the binding for a confirm, waiting while another
// call holds it. It returns the binding with ClaimedBy set when claimed;
// without, a binding bound already. Errors: ErrNotFound,
// ErrBindingExpired (the expiry written), the waiting refusals,
// ErrBankUnavailable (another call held it past the wait).
func (s *Service) claimForConfirm(ctx context.Context, merchantID, id string) (confirmClaim, error) {
	token := ids.New("clm")
	w := newClaimWait()
	for {
		now := s.now()
		b, ok, lapsed, err := claimBinding(ctx, s.pool, merchantID, id, token, now.Add(claimTTL), now)
		if err != nil {
			return confirmClaim{}, err
		}
		if ok {
			return confirmClaim{bindingRow: b, lapsedClaim: lapsed}, nil
		}
		if b, err = getBinding(ctx, s.pool, merchantID, id, false); err != nil {
			return confirmClaim{}, err
		}
		switch b.Status {
		case StatusBound:
			return confirmClaim{bindingRow: b}, nil
		case StatusOTPSent:
		case StatusFailed, StatusExpired:
			return confirmClaim{}, waiting(b)
		default:
			return confirmClaim{}, b.Status.Check()
		}
		if b.claim.live(now) {
			if err := w.wait(ctx); err != nil {
				return confirmClaim{}, fmt.Errorf("%w: another call is confirming the binding: %w", ErrBankUnavailable, err)
			}
			continue
		}
		// Not claimable and not held: the code has run out (or the row
		// changed between the two statements: claim again).
		if err := s.inTx(ctx, func(u *unit) error {
			b, err := getBinding(u.ctx, u.tx, merchantID, id, true)
			if err == nil {
				u.expireIfDue(b, s.now())
			}
			return err
		}); err != nil {
			return confirmClaim{}, err
		}
		if err := w.wait(ctx); err != nil {
			return confirmClaim{}, fmt.Errorf("%w: %w", ErrBankUnavailable, err)
		}
	}
}

// claimWait paces a call that waits for another's claim: it polls, from
// 10 ms doubling to 200 ms, for at most claimTTL of real time (a claim
// lapses by then on every instance's clock) or until ctx ends.
type claimWait struct {
	next     time.Duration
	deadline time.Time
}

func newClaimWait() *claimWait {
	return &claimWait{next: 10 * time.Millisecond, deadline: time.Now().Add(claimTTL)}
}

func (w *claimWait) wait(ctx context.Context) error {
	if time.Now().After(w.deadline) {
		return errors.New("waited the longest a claim holds")
	}
	t := time.NewTimer(w.next)
	defer t.Stop()
	w.next = min(2*w.next, 200*time.Millisecond)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// claimed re-reads a binding under its lock in the unit that applies a
// bank's answer, and reports whether token still holds its claim. One
// that lost it (it lapsed and another call took it over) writes nothing:
// the binding as it is now is answered if bound, else ErrBankUnavailable.
func (u *unit) claimed(merchantID, id, token string) (bindingRow, bool, error) {
	b, err := getBinding(u.ctx, u.tx, merchantID, id, true)
	if err != nil {
		return b, false, err
	}
	if b.ClaimedBy == token {
		return b, true, nil
	}
	u.s.log.Error("a bank answer came after its claim lapsed; the call that took the claim over settles the binding",
		"binding", b.ID)
	if b.Status != StatusBound {
		u.refuse(fmt.Errorf("%w: another call took over the binding", ErrBankUnavailable))
		return bindingRow{}, false, nil
	}
	return b, false, nil
}

// expireIfDue ends a binding whose code has run out, if no live claim
// holds it (a confirm at the bank settles it itself), and answers
// ErrBindingExpired after commit. It reports whether it did.
func (u *unit) expireIfDue(b bindingRow, now time.Time) bool {
	if b.Status != StatusOTPSent || b.claim.live(now) || !now.After(b.OTPExpiresAt) {
		return false
	}
	u.fail(b, StatusExpired, "binding_expired", "", ErrBindingExpired)
	u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, map[string]any{"reason": "expired"})
	return true
}

// waiting checks a binding's status still waits for a code.
func waiting(b bindingRow) error {
	switch b.Status {
	case StatusOTPSent:
		return nil
	case StatusExpired:
		return ErrBindingExpired
	case StatusFailed:
		if b.FailureCode == "otp_attempts_exceeded" {
			return ErrOTPAttemptsExceeded
		}
		return ErrBindingNotPending
	case StatusBound:
		return ErrBindingNotPending
	default:
		return b.Status.Check()
	}
}

// refused applies the bank's refusal of a code or a binding. lapsed: the
// claim this confirm took over had lapsed (see Confirm's crash window).
func (u *unit) refused(b bindingRow, berr error, lapsed bool) (Binding, error) {
	outcome := bankadapters.OutcomeOf(berr)
	details := map[string]any{"class": outcome, "bank_code": bankCode(berr)}
	if lapsed {
		details["after_lapsed_claim"] = true
	}
	switch outcome {
	case bankadapters.OutcomeOTPWrong:
		u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		b.OTPAttempts++
		if b.OTPAttempts >= OTPMaxAttempts {
			return u.fail(b, StatusFailed, "otp_attempts_exceeded", bankCode(berr), ErrOTPAttemptsExceeded), nil
		}
		u.save(b, bankCode(berr))
		u.refuse(&OTPIncorrectError{AttemptsLeft: b.AttemptsLeft()})
		return b.Binding, nil
	case bankadapters.OutcomeOTPAttemptsExceeded:
		u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		b.OTPAttempts = OTPMaxAttempts
		return u.fail(b, StatusFailed, "otp_attempts_exceeded", bankCode(berr), ErrOTPAttemptsExceeded), nil
	case bankadapters.OutcomeOTPExpired:
		u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		if lapsed {
			u.s.log.Error("the bank finished a binding's session after a confirm died before writing its answer; "+
				"the bank may keep an agreement quickpay does not know: release it at the bank",
				"binding", b.ID, "bank", b.Card.BankCode)
		}
		return u.fail(b, StatusExpired, "binding_expired", bankCode(berr), ErrBindingExpired), nil
	case bankadapters.OutcomeAlreadyBound:
		return u.alreadyBound(b, berr, "otp.verify")
	case bankadapters.OutcomeUnavailable, bankadapters.OutcomeProcessing:
		// Not sent (bankadapters.ErrNotSent), or no answer: the binding
		// stays as it was, its claim released; the user may try again.
		u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		u.save(b, "")
		u.refuse(fmt.Errorf("%w: %v", ErrBankUnavailable, berr))
		return Binding{}, nil
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline, bankadapters.OutcomeElementsMismatch:
		u.audit(b.MerchantID, "otp.verify", b.ID, audit.OutcomeFailed, details)
		return u.fail(b, StatusFailed, "card_declined", bankCode(berr), ErrCardDeclined), nil
	default:
		// A refusal this code does not know (OutcomeSuccess with an error
		// included) must not pass for one it does: the transaction rolls
		// back and the claim lapses.
		return Binding{}, fmt.Errorf("binding: confirm refused with an outcome not handled: %q: %w", outcome, berr)
	}
}

// alreadyBound settles a binding whose confirm or resend the bank refused
// as "already bound": another binding of the same card was confirmed after
// this one began. The card that binding made is returned if it is this
// member's; another member's card makes it card_bound_elsewhere.
//
// action names the refused call's audit row (otp.verify); "" when the
// caller has written it.
func (u *unit) alreadyBound(b bindingRow, berr error, action string) (Binding, error) {
	details := map[string]any{"class": bankadapters.OutcomeOf(berr), "bank_code": bankCode(berr)}
	if action != "" {
		u.audit(b.MerchantID, action, b.ID, audit.OutcomeFailed, details)
	}
	card, err := activeCardByFingerprint(u.ctx, u.tx, b.MerchantID, [][]byte{b.PANFP})
	if errors.Is(err, ErrNotFound) {
		// No card here holds the agreement: another merchant's, or that of
		// a binding of this card whose confirm has not committed yet (it
		// cannot be seen, and failing now would refuse the member its own
		// card). The binding stays, retryable, its claim released: a later
		// try finds that card; for another merchant's it ends when its code
		// expires.
		u.save(b, "")
		u.refuse(fmt.Errorf("%w: the bank has an agreement for the card that no card here holds yet", ErrBankUnavailable))
		return Binding{}, nil
	}
	if err != nil {
		return Binding{}, err
	}
	memberID := b.MemberID
	if memberID == "" {
		m, err := getMemberByExternalID(u.ctx, u.tx, b.MerchantID, b.ExternalUserID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Binding{}, err
		}
		memberID = m.ID
	}
	if memberID != "" && card.MemberID == memberID {
		return u.bind(b, memberID, card.ID, map[string]any{"existing_card": true}), nil
	}
	return u.fail(b, StatusFailed, failureCode(ErrCardBoundElsewhere), bankCode(berr), ErrCardBoundElsewhere), nil
}

// confirmed creates the card (and the implicit member) for a binding the
// bank confirmed with agreementNo.
func (u *unit) confirmed(b bindingRow, agreementNo string) (Binding, error) {
	ctx, tx, s := u.ctx, u.tx, u.s
	now := s.now()
	card := Card{ID: ids.New("card"), MerchantID: b.MerchantID, Status: CardActive, CardInfo: b.Card, CreatedAt: now}
	agreementCT, err := s.vault.Encrypt(ctx, []byte(agreementNo), CardAgreementAAD(b.MerchantID, card.ID))
	if err != nil {
		return Binding{}, err
	}
	// cardTaken: the statement that made the member found an active card
	// with this number already, so inserting the card again would only
	// conflict again.
	cardWritten, cardTaken := false, false
	// What the bank verified of an existing member's identity, recorded
	// only once the card is in: a binding failed below completes nothing.
	var verified func()
	made := ""        // the implicit member made here, if any
	replaced := false // an existing card took this binding's agreement
	if b.MemberID == "" {
		// Implicit: the member is created now, with the card, or found if
		// the same external id bound a card meanwhile.
		m := Member{ID: ids.New("mem"), MerchantID: b.MerchantID, ExternalID: b.ExternalUserID, Kind: KindImplicit, CreatedAt: now}
		card.MemberID = m.ID
		memberWritten, written, err := insertMemberWithCard(ctx, tx, m, b.ID, card, b.PANCT, b.PANFP, agreementCT)
		if err != nil {
			return Binding{}, err
		}
		if !memberWritten {
			// The member exists (made explicitly, or by another binding
			// meanwhile): as below.
			existing, err := lockMember(ctx, tx, whereMemberExternalID, b.MerchantID, b.ExternalUserID)
			if err != nil {
				return Binding{}, err
			}
			if verified, err = u.memberIdentity(existing, b); err != nil {
				return u.refuseAfterBank(b, agreementNo, err)
			}
			m = existing.Member
		}
		if memberWritten {
			made = m.ID
		}
		b.MemberID, card.MemberID = m.ID, m.ID
		cardWritten, cardTaken = written, memberWritten && !written
	} else {
		// Locked: two bindings of a partly declared member confirmed at
		// once must not both complete its identity.
		m, err := lockMember(ctx, tx, whereMemberID, b.MerchantID, b.MemberID)
		if err != nil {
			return Binding{}, err
		}
		if verified, err = u.memberIdentity(m, b); err != nil {
			return u.refuseAfterBank(b, agreementNo, err)
		}
		card.MemberID = m.ID
	}
	if !cardWritten {
		err := errActiveCardExists
		if !cardTaken {
			err = insertCard(ctx, tx, card, b.ID, b.PANCT, b.PANFP, agreementCT)
		}
		if err != nil {
			if !errors.Is(err, errActiveCardExists) {
				return Binding{}, err
			}
			// Another binding of this card won the race.
			existing, err := activeCardByFingerprint(ctx, tx, b.MerchantID, [][]byte{b.PANFP})
			if err != nil {
				return Binding{}, err
			}
			if existing.MemberID != b.MemberID {
				if made != "" {
					// An implicit member exists once its binding succeeds.
					queueDeleteMember(&u.batch, b.MerchantID, made)
				}
				return u.refuseAfterBank(b, agreementNo, ErrCardBoundElsewhere)
			}
			// The bank made this confirm an agreement rather than answer
			// "already bound", so the card's own is gone there: the card
			// keeps the new one. If the card ended meanwhile (unbound,
			// revoked), this binding makes it anew.
			ct, err := s.vault.Encrypt(ctx, []byte(agreementNo), CardAgreementAAD(b.MerchantID, existing.ID))
			if err != nil {
				return Binding{}, err
			}
			if ok, err := setActiveCardAgreement(ctx, tx, b.MerchantID, existing.ID, ct, now); err != nil {
				return Binding{}, err
			} else if ok {
				card, replaced = existing, true
			} else if err := insertCard(ctx, tx, card, b.ID, b.PANCT, b.PANFP, agreementCT); err != nil {
				return Binding{}, err
			}
		}
	}
	if verified != nil {
		verified()
	}
	// The bank's notice that the agreement ended names only its number: the
	// card is found by its keyed fingerprint (revoke.go).
	if err := u.fingerprintAgreement(b.MerchantID, card.ID, agreementNo); err != nil {
		return Binding{}, err
	}
	var details map[string]any
	if replaced {
		details = map[string]any{"agreement_replaced": true}
	}
	return u.bind(b, b.MemberID, card.ID, details), nil
}

// memberIdentity checks a binding the bank confirmed against its existing
// member, read under the member's lock (another binding may have completed
// the identity since this one was checked at apply), and returns what
// records the bank's verification: what the member did not declare is kept
// by reference to this binding (a declared value, checked equal, still
// reads first), so the next binding is checked against both.
func (u *unit) memberIdentity(m memberRow, b bindingRow) (func(), error) {
	if err := u.s.checkBindingIdentity(u.ctx, m, b); err != nil {
		return nil, err
	}
	switch {
	case m.NameFP == nil || m.IDNumberFP == nil:
		return func() { queueSetMemberIdentity(&u.batch, b.MerchantID, m.ID, b) }, nil
	case !m.Verified:
		return func() { queueMarkMemberVerified(&u.batch, b.MerchantID, m.ID) }, nil
	}
	return nil, nil
}

// refuseAfterBank fails a binding the bank confirmed but quickpay must
// refuse (an identity or card conflict found only now). Its agreement is
// released at the bank once the failure has committed (releaseAgreement),
// not in this transaction.
func (u *unit) refuseAfterBank(b bindingRow, agreementNo string, why error) (Binding, error) {
	out := u.fail(b, StatusFailed, failureCode(why), "", why)
	if err := u.keepAgreement(b, agreementNo); err != nil {
		return Binding{}, err
	}
	u.release = &refusedAgreement{b: b, agreementNo: agreementNo, why: why}
	return out, nil
}

// releaseAgreement ends at the bank an agreement made for a binding
// quickpay refused, after the refusal committed, and audits it. The
// refusal kept the agreement, encrypted, on the binding (keepAgreement);
// a release the bank accepts drops it. A crash before it, or a release
// the bank refuses, leaves it kept and live at the bank, for an operator
// to release (ReleaseAgreement); no job retries it.
func (s *Service) releaseAgreement(ctx context.Context, r refusedAgreement) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout+applyTimeout)
	defer cancel()
	b := r.b
	outcome, details := audit.OutcomeOK, map[string]any{"reason": failureCode(r.why)}
	err := fmt.Errorf("no channel to bank %s", b.Card.BankCode)
	if bank, ok := s.banks.Bank(b.Card.BankCode); ok {
		err = bank.Unbind(ctx, r.agreementNo)
	}
	if err != nil {
		outcome, details["bank_code"] = audit.OutcomeFailed, bankCode(err)
		s.log.Error("release of a refused binding's agreement failed; it stays kept for an operator to release (ReleaseAgreement)",
			"binding", b.ID, "bank", b.Card.BankCode, "err", err)
	}
	if err := s.inBatch(ctx, func(u *unit) {
		if outcome == audit.OutcomeOK {
			queueAgreementReleased(&u.batch, b.MerchantID, b.ID, s.now())
		}
		u.audit(b.MerchantID, "bind.release", b.ID, outcome, details)
	}); err != nil {
		s.log.Error("audit", "action", "bind.release", "subject", b.ID, "err", err)
	}
}

func failureCode(err error) string {
	switch {
	case errors.Is(err, ErrCardBoundElsewhere):
		return "card_bound_elsewhere"
	case errors.Is(err, ErrIdentityMismatch):
		return "identity_mismatch"
	}
	return "failed"
}

// checkBindingIdentity refuses a binding whose holder or ID number is not
// the member's, by their fingerprints (see apply's checkIdentity).
func (s *Service) checkBindingIdentity(ctx context.Context, m memberRow, b bindingRow) error {
	for _, f := range []struct {
		field, domain string
		stored, fp    []byte // the member's fingerprint and the binding's
		ct            []byte // the binding's value
	}{
		{"id_number", DomainIDNumber, m.IDNumberFP, b.IDNumberFP, b.IDNumberCT},
		{"holder_name", DomainName, m.NameFP, b.NameFP, b.NameCT},
	} {
		if f.stored == nil || f.fp == nil || string(f.stored) == string(f.fp) {
			continue
		}
		// Different fingerprints may be one value under two fp key
		// versions (a rotation's re-keying has reached one row and not the
		// other): the binding's value is compared as apply compares.
		value, err := s.vault.Decrypt(ctx, f.ct, BindingAAD(b.MerchantID, b.ID, f.field), sensitive.Access{
			MerchantID: b.MerchantID, Actor: actor(b.MerchantID), Subject: b.ID, Reason: "identity check across fp key versions"})
		if err != nil {
			return err
		}
		if ok, err := s.fpMatches(ctx, f.stored, f.domain, value); err != nil || !ok {
			if err != nil {
				return err
			}
			return &IdentityMismatchError{Field: f.field}
		}
	}
	return nil
}
