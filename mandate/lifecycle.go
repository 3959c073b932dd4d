package mandate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// setNext points m at its first period on or after from, or marks it
// unable to charge more.
func (s *Service) setNext(m *mandateRow, from time.Time) {
	p, ok := m.Schedule.FirstOnOrAfter(from)
	if !ok || (m.Schedule.MaxCharges > 0 && m.ChargesCount >= m.Schedule.MaxCharges) {
		m.NextPeriod, m.NextChargeDate = "", time.Time{}
		return
	}
	m.NextPeriod, m.NextChargeDate = p.Key, p.Date
}

// Get returns one of the merchant's mandates. Errors: ErrNotFound.
func (s *Service) Get(ctx context.Context, merchantID, id string) (Mandate, error) {
	if !ids.Valid("mdt", id) {
		return Mandate{}, ErrNotFound
	}
	m, err := getMandate(ctx, s.pool, merchantID, id, false)
	return s.view(m.Mandate), err
}

// view shows a pending mandate whose consent code ran out as expired, as
// the next write will record it.
func (s *Service) view(m Mandate) Mandate {
	if m.Status == StatusPendingConfirmation && s.now().After(m.OTPExpiresAt) {
		m.Status, m.StatusReason, m.NextPeriod, m.NextChargeDate = StatusExpired, "consent_expired", "", time.Time{}
	}
	if m.Status == StatusPaused {
		// Nothing is charged while paused, and resume picks the next date
		// afresh: the stored one (kept for resume) may have passed.
		m.NextPeriod, m.NextChargeDate = "", time.Time{}
	}
	return m
}

// transition changes a mandate's status in a transaction: fn checks and
// edits it; the change is audited and its event emitted.
func (s *Service) transition(ctx context.Context, merchantID, id, action string,
	fn func(tx pgx.Tx, m *mandateRow, now time.Time) (event string, err error)) (Mandate, error) {
	if !ids.Valid("mdt", id) {
		return Mandate{}, ErrNotFound
	}
	var out Mandate
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		m, err := getMandate(ctx, tx, merchantID, id, true)
		if err != nil {
			return err
		}
		now := s.now()
		before := m.Status
		event, err := fn(tx, &m, now)
		if err != nil {
			return err
		}
		if m.Status != before {
			m.UpdatedAt = now
		}
		out = s.view(m.Mandate)
		if m.Status == before {
			return nil // already there: idempotent
		}
		return s.record(ctx, tx, m, action, event, now)
	})
	return out, err
}

// record writes a mandate's new state, fails its charges that have not
// reached a bank if it stopped charging (paused, cancelled, expired),
// audits and emits. A completed mandate has no period left, but the
// charges of its last periods still go ahead (and are retried).
func (s *Service) record(ctx context.Context, tx pgx.Tx, m mandateRow, action, event string, now time.Time) error {
	if err := updateMandate(ctx, tx, m); err != nil {
		return err
	}
	if m.Status != StatusActive && m.Status != StatusCompleted {
		failed, err := failPendingCharges(ctx, tx, m.MerchantID, m.ID, "mandate_"+string(m.Status), now)
		if err != nil {
			return err
		}
		for _, c := range failed {
			if err := s.emit(ctx, tx, m.MerchantID, "charge.failed", chargeEvent(c)); err != nil {
				return err
			}
		}
	}
	if err := s.auditTx(ctx, tx, m.MerchantID, action, m.ID, audit.OutcomeOK,
		map[string]any{"status": m.Status, "reason": m.StatusReason}); err != nil {
		return err
	}
	if event == "" {
		return nil
	}
	return s.emit(ctx, tx, m.MerchantID, event, mandateEvent(m.Mandate))
}

// Pause stops an active mandate charging: periods that fall due while it
// is paused are skipped, and charges not yet sent to the bank fail with
// mandate_paused. Pausing a paused mandate returns it. Errors: ErrNotFound,
// ErrInvalidState.
func (s *Service) Pause(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.pause", func(_ pgx.Tx, m *mandateRow, _ time.Time) (string, error) {
		switch m.Status {
		case StatusPaused:
			return "", nil
		case StatusActive:
			m.Status, m.StatusReason = StatusPaused, "merchant"
			return "mandate.paused", nil
		case StatusPendingConfirmation, StatusCancelled, StatusExpired, StatusCompleted:
			return "", ErrInvalidState
		default:
			return "", fmt.Errorf("pause: mandate status %q not handled", m.Status)
		}
	})
}

// Resume makes a paused mandate charge again from its next period on or
// after today; the periods it skipped are not charged. Resuming an active
// mandate returns it. Errors: ErrNotFound, ErrInvalidState.
func (s *Service) Resume(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.resume", func(_ pgx.Tx, m *mandateRow, now time.Time) (string, error) {
		switch m.Status {
		case StatusActive:
			return "", nil
		case StatusPaused:
			m.Status, m.StatusReason = StatusActive, ""
			// A period already charged stays charged: start after it.
			from := m.Schedule.DateAt(now)
			if !m.NextChargeDate.IsZero() && m.NextChargeDate.After(from) {
				from = m.NextChargeDate
			}
			s.setNext(m, from)
			if m.NextPeriod == "" {
				m.Status, m.StatusReason = StatusCompleted, completionReason(*m)
				return "mandate.completed", nil
			}
			return "mandate.resumed", nil
		case StatusPendingConfirmation, StatusCancelled, StatusExpired, StatusCompleted:
			return "", ErrInvalidState
		default:
			return "", fmt.Errorf("resume: mandate status %q not handled", m.Status)
		}
	})
}

// Cancel ends a mandate for good; charges not yet sent to the bank fail
// with mandate_cancelled. Cancelling a cancelled mandate returns it.
// A completed mandate whose last charge has not gone to the bank yet can
// be cancelled too. Errors: ErrNotFound, ErrInvalidState (expired, or
// completed with nothing left to charge).
// Under WithActor naming an operator, the mandate's status_reason is
// "operator", else "merchant".
func (s *Service) Cancel(ctx context.Context, merchantID, id string) (Mandate, error) {
	return s.transition(ctx, merchantID, id, "mandate.cancel", func(tx pgx.Tx, m *mandateRow, _ time.Time) (string, error) {
		switch m.Status {
		case StatusCancelled:
			return "", nil
		case StatusCompleted:
			// Completed once its last charge was made, which may wait for
			// its date (and its retries) for days yet: that charge can
			// still be stopped.
			pending, err := hasPendingCharges(ctx, tx, m.MerchantID, m.ID)
			if err != nil {
				return "", err
			}
			if !pending {
				return "", ErrInvalidState
			}
			fallthrough
		case StatusActive, StatusPaused, StatusPendingConfirmation:
			reason := "merchant"
			if byOperator(ctx) {
				reason = "operator"
			}
			m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate = StatusCancelled, reason, nil, "", time.Time{}
			return "mandate.cancelled", nil
		case StatusExpired:
			return "", ErrInvalidState
		default:
			return "", fmt.Errorf("cancel: mandate status %q not handled", m.Status)
		}
	})
}

// EndAgreement acts on a bank's verified notice (a NoticeAgreementTerminated)
// that a cardholder ended an agreement at bankCode, as a charge answered
// "agreement invalid" does (revokeIfGone): the card holding it is revoked
// and, in the same transaction, its mandates cancelled with status_reason
// card_revoked and their charges not yet sent to the bank failed
// (CancelForCard); card.revoked, mandate.cancelled and charge.failed are
// emitted. A charge already at the bank is settled by its answer (the bank
// refuses a debit on an ended agreement). Idempotent; a notice for an
// agreement no card holds is recorded and answered. Errors: those of
// binding.Service.EndAgreement.
func (s *Service) EndAgreement(ctx context.Context, bankCode string, n bankadapters.Notice) (binding.AgreementEnd, error) {
	if n.Kind != bankadapters.NoticeAgreementTerminated {
		return binding.AgreementEnd{}, fmt.Errorf("mandate: end agreement: a notice of kind %q", n.Kind)
	}
	return s.cfg.Cards.EndAgreement(ctx, binding.AgreementNotice{BankCode: bankCode, AgreementNo: n.AgreementNo, EndedAt: n.At})
}

// CancelForCard cancels, in the card's transaction, every mandate on a card
// that was unbound or revoked (status is the card's new status).
func (s *Service) CancelForCard(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
	ms, err := lockCardMandates(ctx, tx, merchantID, cardID)
	if err != nil {
		return err
	}
	now := s.now()
	for _, m := range ms {
		m.Status, m.StatusReason, m.OTPHash, m.NextPeriod, m.NextChargeDate, m.UpdatedAt =
			StatusCancelled, "card_"+status, nil, "", time.Time{}, now
		if err := s.record(ctx, tx, m, "mandate.cancel", "mandate.cancelled", now); err != nil {
			return err
		}
	}
	return nil
}

func completionReason(m mandateRow) string {
	if m.Schedule.MaxCharges > 0 && m.ChargesCount >= m.Schedule.MaxCharges {
		return "max_charges"
	}
	return "end_date"
}
