package mandate

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// otpDomain is the fingerprint domain of consent codes: the code is hashed
// with its mandate id, so a hash says nothing outside its row.
const otpDomain = "mandate_otp"

// CreateInput is a new mandate.
type CreateInput struct {
	CardID      string
	Reference   string
	Description string
	AmountType  AmountType
	Amount      int64 // fixed
	MaxAmount   int64 // variable
	Currency    string
	Schedule    Schedule
	NoticeDays  int
}

func (in *CreateInput) validate() error {
	if in.Currency == "" {
		in.Currency = "CNY"
	}
	if !ids.Valid("card", in.CardID) {
		return &FieldError{Field: "card_id", Message: "must be a card id"}
	}
	// Both reach the consent SMS (text.go).
	if err := checkText("reference", in.Reference, 1, MaxReferenceLength); err != nil {
		return err
	}
	if err := checkText("description", in.Description, 0, MaxDescriptionLength); err != nil {
		return err
	}
	switch {
	case in.Currency != "CNY":
		return &FieldError{Field: "currency", Message: "must be CNY"}
	case in.NoticeDays < 0 || in.NoticeDays > MaxNoticeDays:
		return &FieldError{Field: "notice_days", Message: fmt.Sprintf("must be 0–%d", MaxNoticeDays)}
	}
	switch in.AmountType {
	case AmountFixed:
		if in.Amount <= 0 || in.Amount > MaxAmount {
			return &FieldError{Field: "amount", Message: fmt.Sprintf("fixed mandates need amount 1–%d fen", MaxAmount)}
		}
		if in.MaxAmount != 0 {
			return &FieldError{Field: "max_amount", Message: "is for variable mandates"}
		}
	case AmountVariable:
		if in.MaxAmount <= 0 || in.MaxAmount > MaxAmount {
			return &FieldError{Field: "max_amount", Message: fmt.Sprintf("variable mandates need max_amount 1–%d fen", MaxAmount)}
		}
		if in.Amount != 0 {
			return &FieldError{Field: "amount", Message: "is for fixed mandates"}
		}
	default:
		return &FieldError{Field: "amount_type", Message: "must be fixed or variable"}
	}
	if in.Schedule.Timezone == "" {
		in.Schedule.Timezone = DefaultTimezone
	}
	return in.Schedule.Validate()
}

// Create starts a mandate on an active card of the merchant's member and
// texts the member a consent code. The mandate is pending until Confirm.
//
// The mandate (with the code's hash) and the phone's count are written
// and committed first; the carrier is asked after, outside any
// transaction. A text the carrier refuses expires the mandate
// (consent_not_sent) and answers ErrSMSUnavailable: the merchant creates
// it again, and a late text cannot confirm a mandate the merchant was told
// failed. A crash between the commit and the text leaves it pending with
// no code sent: it can be resent, and it expires with its code.
//
// Errors: *FieldError, ErrNotFound (card), ErrCardNotActive, rate
// limited (PhoneLimit), ErrSMSUnavailable.
// CheckTerms checks terms as Create does, before there is a card: those a
// binding session carries until its card is bound. in.CardID is not
// checked. Errors: *FieldError.
func (s *Service) CheckTerms(in CreateInput) error {
	in.CardID = ids.New("card")
	if err := in.validate(); err != nil {
		return err
	}
	m := mandateRow{Mandate: Mandate{Schedule: in.Schedule}}
	now := s.now()
	s.setNext(&m, m.Schedule.DateAt(now))
	if m.NextPeriod == "" {
		return &FieldError{Field: "schedule.end_date", Message: "no charge date is left between today and end_date"}
	}
	return nil
}

func (s *Service) Create(ctx context.Context, merchantID string, in CreateInput) (_ Mandate, err error) {
	defer func() { s.cfg.OTPMetrics.Send(binding.OTPKindConsent, consentSendOutcome(err)) }()
	if err := in.validate(); err != nil {
		return Mandate{}, err
	}
	now := s.now()
	m := mandateRow{Mandate: Mandate{
		ID: ids.New("mdt"), MerchantID: merchantID, CardID: in.CardID, Reference: in.Reference,
		Description: in.Description, AmountType: in.AmountType, Amount: in.Amount, MaxAmount: in.MaxAmount,
		Currency: in.Currency, Schedule: in.Schedule, NoticeDays: in.NoticeDays, Status: StatusPendingConfirmation,
		OTPExpiresAt: now.Add(OTPValidity), OTPSends: 1, OTPLastSentAt: now, CreatedAt: now, UpdatedAt: now,
	}}
	card, phone, err := s.cfg.Cards.CardPhone(ctx, s.pool, merchantID, in.CardID, sensitive.Access{
		MerchantID: merchantID, Actor: actor(merchantID), Subject: in.CardID, Reason: "mandate consent sms"})
	if errors.Is(err, binding.ErrNotFound) {
		return Mandate{}, ErrNotFound
	} else if err != nil {
		return Mandate{}, err
	}
	if card.Status != binding.CardActive {
		return Mandate{}, ErrCardNotActive
	}
	m.MemberID = card.MemberID
	s.setNext(&m, m.Schedule.DateAt(now))
	if m.NextPeriod == "" {
		return Mandate{}, &FieldError{Field: "schedule.end_date", Message: "no charge date is left between today and end_date"}
	}
	payee, err := s.cfg.Payees.PayeeName(ctx, merchantID)
	if err != nil {
		return Mandate{}, err
	}
	hash, text, err := s.consentCode(ctx, m, card, payee)
	if err != nil {
		return Mandate{}, err
	}
	m.OTPHash = hash
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := insertMandate(ctx, tx, m); err != nil {
			return fmt.Errorf("insert mandate: %w", err)
		}
		// Counted with the mandate, before the carrier is asked, and kept
		// if it fails.
		if err := s.takeSMS(ctx, tx, phone); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, m.MerchantID, "mandate.create", m.ID, audit.OutcomeOK,
			map[string]any{"card": m.CardID, "otp_send": 1})
	})
	if err != nil {
		return Mandate{}, err
	}
	serr := s.cfg.SMS.Send(ctx, phone, text)
	if serr == nil {
		return m.Mandate, nil
	}
	// Recorded whatever the caller does now, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := db.InTx(rctx, s.pool, func(tx pgx.Tx) error {
		later := s.now()
		m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
			StatusExpired, "consent_not_sent", nil, "", time.Time{}, later
		if err := updateMandate(rctx, tx, m); err != nil {
			return err
		}
		return s.auditTx(rctx, tx, merchantID, "mandate.otp_send", m.ID, audit.OutcomeFailed, map[string]any{"send": 1})
	}); err != nil {
		return Mandate{}, errors.Join(fmt.Errorf("%w: %v", ErrSMSUnavailable, serr), err)
	}
	return Mandate{}, fmt.Errorf("%w: %v", ErrSMSUnavailable, serr)
}

// consentCode makes a fresh consent code for m: its keyed hash, to store,
// and the text that carries it to the member (payee: PayeeName's).
func (s *Service) consentCode(ctx context.Context, m mandateRow, card binding.Card, payee string) (hash []byte, text string, err error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return nil, "", err
	}
	code := fmt.Sprintf("%06d", n.Int64())
	if hash, err = s.cfg.Hasher.Fingerprint(ctx, otpDomain, []byte(m.ID+"|"+code)); err != nil {
		return nil, "", err
	}
	payee = smsText(payee, maxPayeeLength)
	// The code comes first (carriers and phones pick the first digits);
	// then whom the member pays, for what, how much, from which card, and
	// how to end the authority later: through the payee (which cancels
	// the mandate) or at the issuing bank (which ends the agreement, and
	// quickpay then cancels the card's mandates).
	text = fmt.Sprintf("【quickpay】验证码%s，5分钟内有效。您正在授权%s从卡尾号%s的银行卡代扣：%s，%s。"+
		"如需取消授权，请联系%s，或联系发卡银行解除代扣协议。验证码请勿告诉他人。", code,
		payee, card.Last4, smsLabel(m.Description, m.Reference), amountText(m.Mandate), payee)
	return hash, text, nil
}

// takeSMS counts a text to phone against its abuse limit, on q (a
// transaction the caller holds, or the pool).
func (s *Service) takeSMS(ctx context.Context, q binding.Querier, phone string) error {
	if s.cfg.PhoneLimit == nil {
		return nil
	}
	return s.cfg.PhoneLimit.TakeSMS(ctx, q, phone)
}

// Confirm checks the member's consent code and activates the mandate.
// Confirming an active mandate again returns it.
//
// Errors: ErrNotFound, *FieldError, *OTPIncorrectError,
// ErrOTPAttemptsExceeded, ErrConsentExpired, ErrInvalidState.
func (s *Service) Confirm(ctx context.Context, merchantID, id string, otp sensitive.OTP) (_ Mandate, rerr error) {
	defer func() { s.cfg.OTPMetrics.Verify(binding.OTPKindConsent, consentVerifyOutcome(rerr)) }()
	code := otp.Reveal()
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return Mandate{}, &FieldError{Field: "otp", Message: "must be 6 digits"}
	}
	var out Mandate
	var final error
	err := s.pending(ctx, merchantID, id, &final, func(tx pgx.Tx, m *mandateRow, now time.Time) error {
		if m.Status == StatusActive {
			out = m.Mandate
			return nil
		}
		fps, err := s.cfg.Hasher.Fingerprints(ctx, otpDomain, []byte(m.ID+"|"+code))
		if err != nil {
			return err
		}
		match := 0
		for _, fp := range fps {
			match |= subtle.ConstantTimeCompare(fp, m.OTPHash)
		}
		if match != 1 {
			m.OTPAttempts++
			if m.OTPAttempts >= OTPMaxAttempts {
				m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate =
					StatusExpired, "otp_attempts_exceeded", nil, "", time.Time{}
				final = ErrOTPAttemptsExceeded
			} else {
				final = &OTPIncorrectError{AttemptsLeft: m.AttemptsLeft()}
			}
			m.UpdatedAt = now
			if err := updateMandate(ctx, tx, *m); err != nil {
				return err
			}
			return s.auditTx(ctx, tx, merchantID, "mandate.otp_verify", m.ID, audit.OutcomeFailed,
				map[string]any{"attempt": m.OTPAttempts})
		}
		m.Status, m.StatusReason, m.OTPHash, m.UpdatedAt = StatusActive, "", nil, now
		s.setNext(m, m.Schedule.DateAt(now))
		if m.NextPeriod == "" {
			m.Status, m.StatusReason = StatusCompleted, "end_date"
		}
		if err := updateMandate(ctx, tx, *m); err != nil {
			return err
		}
		if err := s.auditTx(ctx, tx, merchantID, "mandate.activate", m.ID, audit.OutcomeOK, nil); err != nil {
			return err
		}
		out = m.Mandate
		if err := s.emit(ctx, tx, merchantID, "mandate.activated", mandateEvent(m.Mandate)); err != nil {
			return err
		}
		if m.Status == StatusCompleted {
			// Consented after its last charge date: it ends at once.
			if err := s.auditTx(ctx, tx, merchantID, "mandate.complete", m.ID, audit.OutcomeOK,
				map[string]any{"status": m.Status, "reason": m.StatusReason}); err != nil {
				return err
			}
			return s.emit(ctx, tx, merchantID, "mandate.completed", mandateEvent(m.Mandate))
		}
		return nil
	})
	if err != nil {
		return Mandate{}, err
	}
	if final != nil {
		return Mandate{}, final
	}
	return out, nil
}

// pending runs fn on a mandate locked in a transaction, after checking it
// waits for its consent code (or is active, which fn may accept). A code
// that has run out expires the mandate and sets *final.
func (s *Service) pending(ctx context.Context, merchantID, id string, final *error,
	fn func(tx pgx.Tx, m *mandateRow, now time.Time) error) error {
	if !ids.Valid("mdt", id) {
		return ErrNotFound
	}
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		m, err := getMandate(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		now := s.now()
		switch {
		case m.Status == StatusActive:
			return fn(tx, &m, now)
		case m.Status == StatusExpired && m.StatusReason == "otp_attempts_exceeded":
			return ErrOTPAttemptsExceeded
		case m.Status == StatusExpired:
			return ErrConsentExpired
		case m.Status != StatusPendingConfirmation:
			return ErrInvalidState
		case now.After(m.OTPExpiresAt):
			m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
				StatusExpired, "consent_expired", nil, "", time.Time{}, now
			*final = ErrConsentExpired
			if err := updateMandate(ctx, tx, m); err != nil {
				return err
			}
			return s.auditTx(ctx, tx, merchantID, "mandate.expire", m.ID, audit.OutcomeOK, nil)
		}
		return fn(tx, &m, now)
	})
}

// Resend texts a fresh consent code: at least 60 s after the last, at
// most 5 sends, within the phone's daily texts. As binding's resend, the
// send is reserved and committed first, in one short transaction (the
// mandate's count and times, the new code's hash, the phone's count),
// then the carrier is asked, outside any transaction, then the outcome is
// audited: a caller who hangs up once the carrier has been asked has used
// the send, and the code texted is the one stored. A send the carrier
// refused is used too (it may have gone out). Errors: ErrNotFound,
// ErrConsentExpired, ErrInvalidState, *ResendTooSoonError,
// ErrResendLimit, rate limited (PhoneLimit), ErrSMSUnavailable.
func (s *Service) Resend(ctx context.Context, merchantID, id string) (_ Mandate, rerr error) {
	defer func() { s.cfg.OTPMetrics.Send(binding.OTPKindConsentResend, consentSendOutcome(rerr)) }()
	var out Mandate
	var final error
	var phone, text string
	// Read before the transaction: Payees may read on the pool.
	payee, err := s.cfg.Payees.PayeeName(ctx, merchantID)
	if err != nil {
		return Mandate{}, err
	}
	err = s.pending(ctx, merchantID, id, &final, func(tx pgx.Tx, m *mandateRow, now time.Time) error {
		if m.Status != StatusPendingConfirmation {
			return ErrInvalidState
		}
		if m.OTPSends >= OTPMaxSends {
			return ErrResendLimit
		}
		if wait := m.ResendAfter().Sub(now); wait > 0 {
			return &ResendTooSoonError{RetryAfter: wait}
		}
		// The card, the limit and the audit of the phone's decryption
		// all run in this transaction: it holds a connection and the
		// mandate's lock, so it must not wait for a second connection.
		card, p, err := s.cfg.Cards.CardPhone(audit.WithExecer(ctx, tx), tx, merchantID, m.CardID, sensitive.Access{
			MerchantID: merchantID, Actor: actor(merchantID), Subject: m.CardID, Reason: "mandate consent sms"})
		if err != nil {
			return err
		}
		hash, t, err := s.consentCode(ctx, *m, card, payee)
		if err != nil {
			return err
		}
		if err := s.takeSMS(ctx, tx, p); err != nil {
			return err
		}
		m.OTPHash = hash
		m.OTPSends++
		m.OTPLastSentAt, m.OTPExpiresAt, m.UpdatedAt = now, now.Add(OTPValidity), now
		if err := updateMandate(ctx, tx, *m); err != nil {
			return err
		}
		out, phone, text = m.Mandate, p, t
		return nil
	})
	if err != nil {
		return Mandate{}, err
	}
	if final != nil {
		return Mandate{}, final
	}
	serr := s.cfg.SMS.Send(ctx, phone, text)
	// The outcome is recorded whatever the caller does now, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	outcome, details := audit.OutcomeOK, map[string]any{"send": out.OTPSends}
	if serr != nil {
		outcome = audit.OutcomeFailed
	}
	if err := db.InTx(rctx, s.pool, func(tx pgx.Tx) error {
		return s.auditTx(rctx, tx, merchantID, "mandate.otp_send", id, outcome, details)
	}); err != nil {
		return Mandate{}, err
	}
	if serr != nil {
		return Mandate{}, fmt.Errorf("%w: %v", ErrSMSUnavailable, serr)
	}
	return out, nil
}

// consentSendOutcome classifies what a consent code's send returned
// (binding.OTPMetrics); "" for a request refused before any send.
func consentSendOutcome(err error) string {
	switch {
	case errors.Is(err, ErrSMSUnavailable):
		return binding.OTPFailed
	case errors.Is(err, ErrConsentExpired):
		return binding.OTPRefused
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrCardNotActive), errors.Is(err, ErrInvalidState):
		return ""
	default:
		return binding.SendOutcome(err)
	}
}

// consentVerifyOutcome classifies what a consent code's check returned;
// "" for a request refused before any check.
func consentVerifyOutcome(err error) string {
	switch {
	case errors.Is(err, ErrConsentExpired):
		return binding.OTPExpired
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidState):
		return ""
	default:
		return binding.VerifyOutcome(err)
	}
}
