package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// chargeRows are new charges to insert in one statement: scheduled, or
// processing when planNew sends them at once.
type chargeRows struct {
	id, merchant, mandate, card, period, currency, description []string
	date                                                       []time.Time
	amount                                                     []int64
	next                                                       []time.Time
	notice                                                     []*time.Time
	status                                                     []string
	attempts                                                   []int32
}

func (r *chargeRows) add(c Charge, cardID string, noticeAt time.Time) {
	r.id, r.merchant, r.mandate = append(r.id, c.ID), append(r.merchant, c.MerchantID), append(r.mandate, c.MandateID)
	r.card, r.period, r.currency = append(r.card, cardID), append(r.period, c.Period), append(r.currency, c.Currency)
	r.description, r.date, r.amount = append(r.description, c.Description), append(r.date, c.ChargeDate), append(r.amount, c.Amount)
	r.next = append(r.next, c.NextAttemptAt)
	r.status, r.attempts = append(r.status, string(ChargeScheduled)), append(r.attempts, 0)
	var n *time.Time
	if !noticeAt.IsZero() {
		n = &noticeAt
	}
	r.notice = append(r.notice, n)
}

func (r *chargeRows) insert(ctx context.Context, tx pgx.Tx, now time.Time) (map[string]bool, error) {
	inserted := map[string]bool{}
	if len(r.id) == 0 {
		return inserted, nil
	}
	next := make([]*time.Time, len(r.next))
	for i := range r.next {
		if !r.next[i].IsZero() {
			next[i] = &r.next[i]
		}
	}
	rows, err := tx.Query(ctx, `INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount,
		currency, description, status, attempts_count, next_attempt_at, notice_at, created_at, updated_at)
		SELECT id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, description, status,
			attempts_count, next_attempt_at, notice_at, $14, $14
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::bigint[], $8::text[],
			$9::text[], $10::text[], $11::integer[], $12::timestamptz[], $13::timestamptz[])
			AS u(id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, description,
			status, attempts_count, next_attempt_at, notice_at)
		ON CONFLICT (mandate_id, period) DO NOTHING RETURNING id`,
		r.id, r.merchant, r.mandate, r.card, r.period, r.date, r.amount, r.currency, r.description, r.status,
		r.attempts, next, r.notice, now)
	if err != nil {
		return nil, err
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error { inserted[id] = true; return nil })
	return inserted, err
}

const chargeCols = `id, merchant_id, mandate_id, period, charge_date, amount, currency, description, status,
	next_attempt_at, notice_sent_at, retries, coalesce(failure_code, ''), coalesce(bank_reference, ''),
	amount_refunded, created_at, updated_at`

func scanCharge(row pgx.Row) (Charge, error) {
	var c Charge
	var next, notice *time.Time
	err := row.Scan(&c.ID, &c.MerchantID, &c.MandateID, &c.Period, &c.ChargeDate, &c.Amount, &c.Currency,
		&c.Description, &c.Status, &next, &notice, &c.Retries, &c.FailureCode, &c.BankReference, &c.AmountRefunded,
		&c.CreatedAt, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	if next != nil {
		c.NextAttemptAt = *next
	}
	if notice != nil {
		c.NoticeSentAt = *notice
	}
	return c, err
}

func getCharge(ctx context.Context, q querier, merchantID, id string) (Charge, error) {
	c, err := getChargeRow(ctx, q, merchantID, id)
	if err != nil {
		return c, err
	}
	as, err := listAttempts(ctx, q, merchantID, []string{c.ID})
	c.Attempts = as[c.ID]
	return c, err
}

// insertCharge adds a charge; errPeriodTaken if its period has one.
func insertCharge(ctx context.Context, q querier, c Charge, cardID string, noticeAt time.Time) error {
	tag, err := q.Exec(ctx, `INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount,
		currency, description, status, next_attempt_at, notice_at, failure_code, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
		ON CONFLICT (mandate_id, period) DO NOTHING`,
		c.ID, c.MerchantID, c.MandateID, cardID, c.Period, c.ChargeDate, c.Amount, c.Currency, c.Description, c.Status,
		nullDate(c.NextAttemptAt), nullDate(noticeAt), nullString(c.FailureCode), c.CreatedAt)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrPeriodCharged
	}
	return nil
}

// failPendingCharges fails a mandate's charges that have not reached a
// bank (scheduled, retry_scheduled) and returns them.
// hasPendingCharges reports whether a mandate has a charge not yet sent to
// the bank (scheduled, or waiting for a retry).
func hasPendingCharges(ctx context.Context, q querier, merchantID, mandateID string) (bool, error) {
	var pending bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM charges WHERE merchant_id = $1 AND mandate_id = $2
		AND status IN ('scheduled', 'retry_scheduled'))`, merchantID, mandateID).Scan(&pending)
	return pending, err
}

func failPendingCharges(ctx context.Context, q querier, merchantID, mandateID, code string, now time.Time) ([]Charge, error) {
	rows, err := q.Query(ctx, `UPDATE charges SET status = 'failed', failure_code = $3, next_attempt_at = NULL,
		updated_at = $4 WHERE merchant_id = $1 AND mandate_id = $2 AND status IN ('scheduled', 'retry_scheduled')
		RETURNING `+chargeCols, merchantID, mandateID, code, now)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Charge, error) { return scanCharge(r) })
}

// claimNotices claims up to limit charges whose notice is due at asOf and
// not claimed by a run still within its lease at now, other than skip,
// until leaseEnd: one statement, committed on its own.
func claimNotices(ctx context.Context, q querier, asOf, now, leaseEnd time.Time, skip []string, limit int) ([]notice, error) {
	rows, err := q.Query(ctx, `WITH due AS (
			SELECT c.id FROM charges c
			WHERE c.status = 'scheduled' AND c.notice_sent_at IS NULL AND c.notice_at IS NOT NULL AND c.notice_at <= $1
			  AND (c.notice_claimed_until IS NULL OR c.notice_claimed_until <= $2) AND c.id <> ALL($3::text[])
			ORDER BY c.notice_at LIMIT $4 FOR UPDATE OF c SKIP LOCKED)
		UPDATE charges c SET notice_claimed_until = $5 FROM due, mandates m
		WHERE c.id = due.id AND m.id = c.mandate_id
		RETURNING c.id, c.merchant_id, c.mandate_id, c.card_id, c.period, c.charge_date, c.amount, c.currency,
			m.reference, m.description`, asOf, now, skip, limit, leaseEnd)
	if err != nil {
		return nil, err
	}
	var list []notice
	var n notice
	_, err = pgx.ForEachRow(rows, []any{&n.ID, &n.MerchantID, &n.MandateID, &n.cardID, &n.Period, &n.ChargeDate,
		&n.Amount, &n.Currency, &n.reference, &n.Description}, func() error {
		list = append(list, n)
		return nil
	})
	return list, err
}

// recordNotice marks a claimed charge's notice sent; false if the charge
// is no longer scheduled or its notice was recorded already.
func recordNotice(ctx context.Context, q querier, chargeID string, now time.Time) (bool, error) {
	tag, err := q.Exec(ctx, `UPDATE charges SET notice_sent_at = $2, notice_claimed_until = NULL, updated_at = $2
		WHERE id = $1 AND notice_sent_at IS NULL AND status = 'scheduled'`, chargeID, now)
	return tag.RowsAffected() == 1, err
}

// releaseNotices clears the claims of notices not sent.
func releaseNotices(ctx context.Context, q querier, chargeIDs []string) error {
	if len(chargeIDs) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, `UPDATE charges SET notice_claimed_until = NULL WHERE id = ANY($1) AND notice_sent_at IS NULL`,
		chargeIDs)
	return err
}

// lockDueCharges locks up to limit charges due at asOf (scheduled or
// waiting for a retry, their notice sent if they give one), skipping those
// another run holds, oldest due first.
func lockDueCharges(ctx context.Context, tx pgx.Tx, asOf time.Time, limit int) ([]dueCharge, error) {
	rows, err := tx.Query(ctx, `SELECT c.id, c.merchant_id, c.card_id, c.amount, c.attempts_count
		FROM charges c
		WHERE c.status IN ('scheduled', 'retry_scheduled') AND c.next_attempt_at <= $1
		  AND (c.notice_at IS NULL OR c.notice_sent_at IS NOT NULL)
		ORDER BY c.next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED`, asOf, limit)
	if err != nil {
		return nil, err
	}
	var list []dueCharge
	var d dueCharge
	_, err = pgx.ForEachRow(rows, []any{&d.id, &d.merchantID, &d.cardID, &d.amount, &d.attempts}, func() error {
		list = append(list, d)
		return nil
	})
	return list, err
}

// periodHasCharge reports whether a mandate's period has a charge.
func periodHasCharge(ctx context.Context, q querier, mandateID, period string) (bool, error) {
	var exists bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM charges WHERE mandate_id = $1 AND period = $2)`,
		mandateID, period).Scan(&exists)
	return exists, err
}

// chargesAhead counts a mandate's charges not failed dated from on, other
// than period's.
func chargesAhead(ctx context.Context, q querier, mandateID string, from time.Time, period string) (int, error) {
	var ahead int
	err := q.QueryRow(ctx, `SELECT count(*) FROM charges WHERE mandate_id = $1 AND charge_date >= $2
		AND period <> $3 AND status <> 'failed'`, mandateID, from, period).Scan(&ahead)
	return ahead, err
}

// deferCharges puts charges off until next.
func deferCharges(ctx context.Context, q querier, chargeIDs []string, next, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET next_attempt_at = $2, updated_at = $3 WHERE id = ANY($1)`,
		chargeIDs, next, now)
	return err
}

// markChargesProcessing makes charges processing with one more attempt.
func markChargesProcessing(ctx context.Context, q querier, chargeIDs []string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET status = 'processing', attempts_count = attempts_count + 1,
			next_attempt_at = NULL, updated_at = $2 WHERE id = ANY($1)`, chargeIDs, now)
	return err
}

// countOpenCharges counts the charges processing and those unknown.
func countOpenCharges(ctx context.Context, q querier) (processing, unknown int, err error) {
	err = q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'processing'),
		count(*) FILTER (WHERE status = 'unknown') FROM charges WHERE status IN ('processing', 'unknown')`).
		Scan(&processing, &unknown)
	return processing, unknown, err
}

// getChargeRow returns a charge without its attempts.
func getChargeRow(ctx context.Context, q querier, merchantID, id string) (Charge, error) {
	return scanCharge(q.QueryRow(ctx, `SELECT `+chargeCols+` FROM charges WHERE merchant_id = $1 AND id = $2`,
		merchantID, id))
}

// markChargeUnknown makes a charge's outcome unknown.
func markChargeUnknown(ctx context.Context, q querier, chargeID string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET status = 'unknown', updated_at = $2 WHERE id = $1`, chargeID, now)
	return err
}

// markChargesUnknown makes the charges of chargeIDs still processing
// unknown.
func markChargesUnknown(ctx context.Context, q querier, chargeIDs []string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET status = 'unknown', updated_at = $2 WHERE id = ANY($1) AND status = 'processing'`,
		chargeIDs, now)
	return err
}

// updateChargeOutcome writes a declined charge's new state: failed, or
// waiting for a retry.
func updateChargeOutcome(ctx context.Context, q querier, c Charge, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET status = $2, failure_code = $3, bank_reference = $4,
		next_attempt_at = $5, retries = $6, updated_at = $7 WHERE id = $1`,
		c.ID, c.Status, nullString(c.FailureCode), nullString(c.BankReference), nullDate(c.NextAttemptAt), c.Retries,
		now)
	return err
}

// holdCharge holds a charge whose bank answered success for another
// amount (mismatch.go).
func holdCharge(ctx context.Context, q querier, chargeID, bankTxnNo string, now time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charges SET status = 'held', failure_code = $2, bank_reference = $3,
			next_attempt_at = NULL, updated_at = $4 WHERE id = $1`,
		chargeID, MismatchAmount, nullString(bankTxnNo), now)
	return err
}
