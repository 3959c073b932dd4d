package mandate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// materialize turns one batch of due periods into charges and advances
// their mandates. A fixed mandate's period becomes a charge when its
// notice (or, without notice, its date) is due; a variable mandate's
// period is done on its date: the charge the biller posted goes ahead, and
// without one the period is skipped with a charge.failed event
// (no_amount_posted).
func (s *Service) materialize(ctx context.Context, asOf time.Time) (periods, skipped, claimed, deferred int, err error) {
	now := s.now()
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Candidates: a day's slack covers every zone; the exact check is below.
		horizon := bankDay(asOf).AddDate(0, 0, 1)
		ms, err := lockDueMandates(ctx, tx, horizon, s.cfg.ClaimBatch)
		if err != nil {
			return err
		}
		var ins chargeRows
		var upd mandateAdvances
		var after []func() error
		for i := range ms {
			m := &ms[i]
			p := Period{Key: m.NextPeriod, Date: m.NextChargeDate}
			due := m.Schedule.DueAt(p.Date)
			if m.AmountType == AmountFixed && m.NoticeDays > 0 {
				due = m.Schedule.DueAt(p.Date.AddDate(0, 0, -m.NoticeDays))
			}
			if due.After(asOf) {
				continue
			}
			periods++
			switch m.AmountType {
			case AmountFixed:
				c, noticeAt := s.newCharge(m.Mandate, p, m.Amount, m.Description, now)
				ins.add(c, m.CardID, noticeAt)
				m.ChargesCount++
			case AmountVariable:
				exists, err := periodHasCharge(ctx, tx, m.ID, p.Key)
				if err != nil {
					return err
				}
				if exists {
					m.ChargesCount++
					break
				}
				skipped++
				c, _ := s.newCharge(m.Mandate, p, m.MaxAmount, m.Description, now)
				c.Status, c.FailureCode, c.NextAttemptAt = ChargeFailed, "no_amount_posted", time.Time{}
				// amount is required positive: a skipped period records the
				// mandate's maximum as the amount it would not charge over.
				if err := insertCharge(ctx, tx, c, m.CardID, time.Time{}); err != nil {
					return err
				}
				after = append(after, func() error { return s.emit(ctx, tx, m.MerchantID, "charge.failed", chargeEvent(c)) })
			default:
				return fmt.Errorf("materialize %s: amount type %q", m.ID, m.AmountType)
			}
			m.UpdatedAt = now
			if next, ok := m.Schedule.After(p); ok && (m.Schedule.MaxCharges == 0 || m.ChargesCount < m.Schedule.MaxCharges) {
				m.NextPeriod, m.NextChargeDate = next.Key, next.Date
				upd.add(m.ID, m.NextPeriod, m.NextChargeDate, m.ChargesCount)
				continue
			}
			m.NextPeriod, m.NextChargeDate = "", time.Time{}
			m.Status, m.StatusReason = StatusCompleted, completionReason(*m)
			mm := *m
			after = append(after, func() error { return s.record(ctx, tx, mm, "mandate.complete", "mandate.completed", now) })
		}
		// Charges due now without a notice to wait for go to the bank in
		// this same transaction, inserted as processing with their
		// attempts: no second pass to claim them, no second write of the
		// row.
		p, err := s.planNew(ctx, tx, &ins, asOf)
		if err != nil {
			return err
		}
		inserted, err := ins.insert(ctx, tx, now)
		if err != nil {
			return err
		}
		if claimed, err = s.writeSends(ctx, tx, p, inserted); err != nil {
			return err
		}
		deferred = 0
		for _, id := range p.deferIDs {
			if inserted[id] {
				deferred++
			}
		}
		if err := upd.update(ctx, tx, now); err != nil {
			return err
		}
		for _, f := range after {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	})
	return periods, skipped, claimed, deferred, err
}

// planNew plans the sending of the new charges of ins that are due at
// asOf and need no notice (plan), and marks them in ins: the ones sent go
// in as processing with their first attempt, the deferred ones with their
// next attempt time.
func (s *Service) planNew(ctx context.Context, tx pgx.Tx, ins *chargeRows, asOf time.Time) (sendPlan, error) {
	var list []dueCharge
	row := map[string]int{}
	for i, id := range ins.id {
		if ins.notice[i] == nil && !ins.next[i].After(asOf) {
			list = append(list, dueCharge{id: id, merchantID: ins.merchant[i], cardID: ins.card[i], amount: ins.amount[i]})
			row[id] = i
		}
	}
	if len(list) == 0 {
		return sendPlan{}, nil
	}
	// Planned before the insert, which may skip a charge whose period has
	// one already (ON CONFLICT): such a charge's planned attempt is dropped
	// (writeSends), having only held a card's allowance for this run.
	p, err := s.plan(ctx, tx, list)
	if err != nil {
		return sendPlan{}, err
	}
	for _, a := range p.sends {
		i := row[a.chargeID]
		ins.status[i], ins.attempts[i], ins.next[i] = string(ChargeProcessing), 1, time.Time{}
	}
	for _, id := range p.deferIDs {
		ins.next[row[id]] = p.nextDay
	}
	return p, nil
}

// ChargeInput is a variable mandate's amount for a period.
type ChargeInput struct {
	Amount      int64
	Period      string // defaults to the mandate's next period
	Description string
}

// PostCharge sets a variable mandate's amount for a period (by default its
// next one). It is charged on the period's date, after its notice.
//
// Errors: ErrNotFound, *FieldError, ErrNotVariable, ErrInvalidState (not
// active), ErrAmountOverMax, ErrPeriodCharged.
func (s *Service) PostCharge(ctx context.Context, merchantID, mandateID string, in ChargeInput) (Charge, error) {
	if in.Amount <= 0 {
		return Charge{}, &FieldError{Field: "amount", Message: "must be positive fen"}
	}
	// It reaches the pre-debit SMS (text.go).
	if err := checkText("description", in.Description, 0, MaxDescriptionLength); err != nil {
		return Charge{}, err
	}
	if !ids.Valid("mdt", mandateID) {
		return Charge{}, ErrNotFound
	}
	var c Charge
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Locked: a pause or cancel cannot slip in between the check and
		// the insert and leave a charge on a mandate that no longer charges.
		row, err := getMandate(ctx, tx, merchantID, mandateID, true)
		if err != nil {
			return err
		}
		m := s.view(row.Mandate)
		switch {
		case m.AmountType != AmountVariable:
			return ErrNotVariable
		case m.Status != StatusActive:
			return ErrInvalidState
		case in.Amount > m.MaxAmount:
			return ErrAmountOverMax
		}
		if in.Period == "" {
			in.Period = m.NextPeriod
		}
		p, err := m.Schedule.Period(in.Period)
		if err != nil {
			return err
		}
		if m.NextChargeDate.IsZero() || p.Date.Before(m.NextChargeDate) {
			return &FieldError{Field: "period", Message: "is past: the mandate's next period is " + m.NextPeriod}
		}
		if err := postedWithinMax(ctx, tx, row, p); err != nil {
			return err
		}
		if in.Description == "" {
			in.Description = m.Description
		}
		var noticeAt time.Time
		c, noticeAt = s.newCharge(m, p, in.Amount, in.Description, s.now())
		if err := insertCharge(ctx, tx, c, m.CardID, noticeAt); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, merchantID, "charge.post", c.ID, audit.OutcomeOK,
			map[string]any{"mandate": m.ID, "period": p.Key, "amount": in.Amount})
	})
	if err != nil {
		return Charge{}, err
	}
	return c, nil
}

// postedWithinMax refuses an amount for period p of a variable mandate
// with max_charges when the amounts already posted for its coming periods
// would use up the charges left. Each posted amount becomes a charge on
// its date and counts then; the mandate completes at its max_charges-th,
// so a period posted beyond it would be debited after the member's
// consent ended.
func postedWithinMax(ctx context.Context, q querier, m mandateRow, p Period) error {
	if m.Schedule.MaxCharges == 0 {
		return nil
	}
	ahead, err := chargesAhead(ctx, q, m.ID, m.NextChargeDate, p.Key)
	if err != nil {
		return err
	}
	if left := m.Schedule.MaxCharges - m.ChargesCount; ahead >= left {
		return &FieldError{Field: "period", Message: fmt.Sprintf("is beyond max_charges: %d charges left, %d of them posted already", left, ahead)}
	}
	return nil
}

// newCharge is a scheduled charge of m for period p, and its notice time
// (zero when the mandate gives no notice).
func (s *Service) newCharge(m Mandate, p Period, amount int64, description string, now time.Time) (Charge, time.Time) {
	c := Charge{
		ID: ids.New("chg"), MerchantID: m.MerchantID, MandateID: m.ID, Period: p.Key, ChargeDate: p.Date,
		Amount: amount, Currency: m.Currency, Description: description, Status: ChargeScheduled,
		NextAttemptAt: m.Schedule.DueAt(p.Date), CreatedAt: now, UpdatedAt: now,
	}
	var noticeAt time.Time
	if m.NoticeDays > 0 {
		noticeAt = m.Schedule.DueAt(p.Date.AddDate(0, 0, -m.NoticeDays))
	}
	return c, noticeAt
}

// GetCharge returns one of the merchant's charges with its attempts.
// Errors: ErrNotFound.
func (s *Service) GetCharge(ctx context.Context, merchantID, id string) (Charge, error) {
	if !ids.Valid("chg", id) {
		return Charge{}, ErrNotFound
	}
	return getCharge(ctx, s.pool, merchantID, id)
}
