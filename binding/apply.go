package binding

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Apply: a binding begins. The four elements are checked, the card routed
// and tokenized, the abuse limits taken, and the bank asked to text its
// code; the binding is saved only once the bank has (a refusal saves
// nothing but its audit row). No transaction is open during the bank's
// call: the binding's row does not exist yet.

// BindInput starts a binding: MemberID or ExternalUserID (implicit), and
// the four elements; Expiry and CVV2 for credit cards.
type BindInput struct {
	MemberID       string
	ExternalUserID string
	HolderName     string
	IDNumber       sensitive.IDNumber
	CardNumber     sensitive.PAN
	Phone          string
	Expiry         sensitive.Expiry
	CVV2           sensitive.CVV2
}

// StartBinding validates, routes and tokenizes the card, checks it against
// the member's identity and the merchant's cards, and asks the bank to send
// its code. A card already bound to the same member returns that card
// (Binding.Existing) without a bank call.
//
// Errors: *FieldError, ErrNotFound (member), ErrCardUnsupported,
// *IdentityMismatchError, ErrCardBoundElsewhere, *ElementsMismatchError,
// ErrCardDeclined, ErrBankUnavailable.
func (s *Service) StartBinding(ctx context.Context, merchantID string, in BindInput) (out Binding, err error) {
	defer func() { s.otp.sent(OTPKindBindApply, out, err) }()
	now := s.now()
	switch {
	case (in.MemberID == "") == (in.ExternalUserID == ""):
		return Binding{}, &FieldError{Field: "member_id", Message: "give member_id or external_user_id, not both"}
	case in.ExternalUserID != "" && !ValidExternalID(in.ExternalUserID):
		return Binding{}, &FieldError{Field: "external_user_id", Message: "must be 1–128 printable characters"}
	case !ValidName(in.HolderName):
		return Binding{}, &FieldError{Field: "holder_name", Message: "must be 2–30 letters (· allowed)"}
	case !ValidResidentID(in.IDNumber.Reveal(), now):
		return Binding{}, &FieldError{Field: "id_number", Message: "is not a valid 18-character resident ID number"}
	case !ValidPAN(in.CardNumber.Reveal()):
		return Binding{}, &FieldError{Field: "card_number", Message: "must be 13–19 digits passing the Luhn check"}
	case !ValidMobile(in.Phone):
		return Binding{}, &FieldError{Field: "phone", Message: "must be a mainland mobile number"}
	}
	route, err := s.banks.Route(in.CardNumber)
	if err != nil {
		return Binding{}, ErrCardUnsupported
	}
	bank, ok := s.banks.Bank(route.BankCode)
	if !ok {
		return Binding{}, ErrCardUnsupported
	}
	switch route.CardType {
	case bankadapters.Credit:
		switch {
		case !ValidExpiry(in.Expiry.Reveal(), now):
			return Binding{}, &FieldError{Field: "expiry", Message: "credit cards need expiry as MMYY, not in the past"}
		case !ValidCVV2(in.CVV2.Reveal()):
			return Binding{}, &FieldError{Field: "cvv2", Message: "credit cards need a 3-digit cvv2"}
		}
	case bankadapters.Debit:
		// Debit cards take neither expiry nor CVV2: drop them rather than
		// send them.
		in.Expiry, in.CVV2 = sensitive.Expiry{}, sensitive.CVV2{}
	default:
		return Binding{}, fmt.Errorf("binding: card type %q of BIN route not handled", route.CardType)
	}

	// The member, if it exists already, and the card, if it is active
	// here already; in the same round trip, the first statement of the
	// abuse limits' take, which counts the card and phone where they are
	// new in their windows.
	fps, err := s.vault.Fingerprints(ctx, DomainPAN, []byte(in.CardNumber.Reveal()))
	if err != nil {
		return Binding{}, err
	}
	keys := applyKeys{card: fps[0]}
	if keys.id, err = s.idFP(ctx, in.IDNumber); err != nil {
		return Binding{}, err
	}
	if s.limiter != nil {
		if keys.phone, err = s.vault.Fingerprint(ctx, DomainPhone, []byte(in.Phone)); err != nil {
			return Binding{}, err
		}
	}
	var batch pgx.Batch
	take, err := s.queueApply(&batch, now, keys)
	if err != nil {
		return Binding{}, err
	}
	member, card, err := findMemberAndCard(ctx, s.pool, &batch, merchantID, in.MemberID, in.ExternalUserID, fps)
	if err != nil {
		return Binding{}, err
	}
	// What an answer given without the bank gives back: what the take has
	// counted so far.
	giveBack := func() {}
	defer func() { giveBack() }()
	if take != nil {
		giveBack = func() {
			if err := take.Cancel(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("abuse limits: giving back an apply answered here", "err", err)
			}
		}
	}

	// Quickpay's own answers come before the limits: they need no bank.
	if member == nil && in.MemberID != "" {
		return Binding{}, ErrNotFound
	}
	if member != nil {
		if err := s.checkIdentity(ctx, *member, in.HolderName, in.IDNumber, keys.id); err != nil {
			return Binding{}, err
		}
	}
	if card != nil {
		if member == nil || card.MemberID != member.ID {
			return Binding{}, ErrCardBoundElsewhere
		}
		return s.existingCardBinding(ctx, merchantID, *member, *card, route, in, keys)
	}
	if take != nil {
		// A refusal counts nothing and writes no audit row: a flood of
		// them must cost little.
		err := take.Finish(ctx)
		if errors.Is(err, limits.ErrLimited) {
			giveBack = func() {}
			return Binding{}, limited(err)
		}
		// Counted (or, after an error, perhaps counted): all of it.
		giveBack = func() { s.settleApply(ctx, now, keys, false, true, true) }
		if err != nil {
			return Binding{}, err
		}
	}

	b := bindingRow{Binding: Binding{
		ID: ids.New("bnd"), MerchantID: merchantID, ExternalUserID: in.ExternalUserID, Status: StatusOTPSent,
		Card: CardInfo{BankCode: route.BankCode, BankName: route.BankName, CardType: string(route.CardType),
			MaskedPAN: in.CardNumber.Masked(), Last4: in.CardNumber.Last4()},
		OTPExpiresAt: now.Add(OTPValidity), OTPSends: 1, OTPLastSentAt: now, CreatedAt: now,
	}}
	if member != nil {
		b.MemberID, b.ExternalUserID = member.ID, ""
	}
	if err := s.sealBinding(ctx, &b, in, keys); err != nil {
		return Binding{}, err
	}

	// The bank is asked: from here its answer settles the take.
	giveBack = func() {}
	sess, err := bank.BindApply(ctx, bankadapters.BindRequest{
		RequestNo: b.ID, CardNumber: in.CardNumber, HolderName: in.HolderName, IDNumber: in.IDNumber,
		Phone: in.Phone, Expiry: in.Expiry, CVV2: in.CVV2,
	})
	if err != nil {
		// The refusal's audit row is written on its own: no binding is
		// saved. A failure to write it is logged; the answer stands.
		if aerr := s.inBatch(ctx, func(u *unit) {
			u.audit(merchantID, "bind.apply", b.ID, audit.OutcomeFailed, map[string]any{
				"bank": route.BankCode, "class": bankadapters.OutcomeOf(err), "bank_code": bankCode(err)})
		}); aerr != nil {
			s.log.Error("audit", "action", "bind.apply", "subject", b.ID, "err", aerr)
		}
		switch bankadapters.OutcomeOf(err) {
		case bankadapters.OutcomeElementsMismatch:
			s.settleApply(ctx, now, keys, true, true, false)
		case bankadapters.OutcomeAlreadyBound:
			s.settleApply(ctx, now, keys, false, true, true)
		case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
			s.settleApply(ctx, now, keys, false, true, false)
		case bankadapters.OutcomeUnavailable:
			if errors.Is(err, bankadapters.ErrNotSent) {
				// The bank never saw it: no apply, no text.
				s.settleApply(ctx, now, keys, false, true, true)
			}
			// Else not the card's doing, and a text may have gone out:
			// the take stands as counted.
		case bankadapters.OutcomeProcessing, bankadapters.OutcomeOTPWrong,
			bankadapters.OutcomeOTPExpired, bankadapters.OutcomeOTPAttemptsExceeded, bankadapters.OutcomeSuccess:
			// Not the card's doing: the take stands as counted.
		default:
			return Binding{}, fmt.Errorf("binding: bank outcome %q not handled at apply: %w", bankadapters.OutcomeOf(err), err)
		}
		return Binding{}, s.bankError(err)
	}
	b.BankBindRef = sess.BindRef
	if err := s.inBatch(ctx, func(u *unit) {
		queueInsertBinding(&u.batch, b)
		u.audit(merchantID, "bind.apply", b.ID, audit.OutcomeOK, map[string]any{"bank": route.BankCode})
		u.audit(merchantID, "otp.send", b.ID, audit.OutcomeOK, map[string]any{"send": 1, "by": "bank"})
	}); err != nil {
		return Binding{}, fmt.Errorf("save binding: %w", err)
	}
	return b.Binding, nil
}

// sealBinding encrypts the binding's card and identity, and fingerprints
// them (the card's and the ID number's fingerprints are made already).
func (s *Service) sealBinding(ctx context.Context, b *bindingRow, in BindInput, keys applyKeys) error {
	aad := func(field string) []byte { return BindingAAD(b.MerchantID, b.ID, field) }
	var err error
	if b.PANCT, err = s.vault.Encrypt(ctx, []byte(in.CardNumber.Reveal()), aad("pan")); err != nil {
		return err
	}
	b.PANFP = keys.card
	id, err := s.sealIdentity(ctx, func(field string) []byte {
		if field == "name" {
			field = "holder_name"
		}
		return aad(field)
	}, in.HolderName, in.IDNumber, keys.id, in.Phone)
	if err != nil {
		return err
	}
	b.identity = id
	return nil
}

// existingCardBinding records a binding that found the card already bound
// to this member: it is bound at once, to the existing card.
func (s *Service) existingCardBinding(ctx context.Context, merchantID string, m memberRow, card Card,
	route bankadapters.CardInfo, in BindInput, keys applyKeys) (Binding, error) {
	now := s.now()
	b := bindingRow{Binding: Binding{
		ID: ids.New("bnd"), MerchantID: merchantID, MemberID: m.ID, Status: StatusBound, CardID: card.ID,
		Card: card.CardInfo, OTPExpiresAt: now, OTPLastSentAt: now, OTPSends: 0, CreatedAt: now, Existing: true,
	}}
	if err := s.sealBinding(ctx, &b, in, keys); err != nil {
		return Binding{}, err
	}
	if err := s.inBatch(ctx, func(u *unit) {
		queueInsertBinding(&u.batch, b)
		u.audit(merchantID, "bind.apply", b.ID, audit.OutcomeOK,
			map[string]any{"bank": route.BankCode, "existing_card": card.ID})
	}); err != nil {
		return Binding{}, fmt.Errorf("save binding: %w", err)
	}
	return b.Binding, nil
}

// GetBinding returns one of the merchant's bindings, expiring it first if
// its code has run out. Errors: ErrNotFound.
func (s *Service) GetBinding(ctx context.Context, merchantID, id string) (Binding, error) {
	b, err := getBinding(ctx, s.pool, merchantID, id, false)
	if err != nil {
		return Binding{}, err
	}
	if b.Status == StatusOTPSent && s.now().After(b.OTPExpiresAt) {
		b.Status, b.FailureCode = StatusExpired, "binding_expired"
	}
	return b.Binding, nil
}
