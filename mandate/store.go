package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// mandateAdvances move mandates to their next period in one statement.
type mandateAdvances struct {
	id, period []string
	date       []time.Time
	count      []int32
}

func (u *mandateAdvances) add(id, period string, date time.Time, count int) {
	u.id, u.period, u.date, u.count = append(u.id, id), append(u.period, period), append(u.date, date), append(u.count, int32(count))
}

func (u *mandateAdvances) update(ctx context.Context, tx pgx.Tx, now time.Time) error {
	if len(u.id) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE mandates m SET next_period = u.period, next_charge_date = u.date,
		charges_count = u.count, updated_at = $5
		FROM unnest($1::text[], $2::text[], $3::date[], $4::int[]) AS u(id, period, date, count) WHERE m.id = u.id`,
		u.id, u.period, u.date, u.count, now)
	return err
}

// The mandate store: the package's SQL, each statement filtered by
// merchant_id where a merchant asks.

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// mandateRow is a mandate with its consent hash.
type mandateRow struct {
	Mandate
	OTPHash []byte
}

const mandateCols = `id, merchant_id, member_id, card_id, reference, description, amount_type,
	coalesce(amount, 0), coalesce(max_amount, 0), currency, interval, coalesce(day_of_month, 0), coalesce(weekday, 0),
	start_date, end_date, coalesce(max_charges, 0), timezone, notice_days, status, coalesce(status_reason, ''),
	coalesce(next_period, ''), next_charge_date, charges_count, otp_hash, otp_expires_at, otp_attempts, otp_sends,
	otp_last_sent_at, created_at, updated_at`

func scanMandate(row pgx.Row) (mandateRow, error) {
	var m mandateRow
	var end, next *time.Time
	err := row.Scan(&m.ID, &m.MerchantID, &m.MemberID, &m.CardID, &m.Reference, &m.Description, &m.AmountType,
		&m.Amount, &m.MaxAmount, &m.Currency, &m.Schedule.Interval, &m.Schedule.DayOfMonth, &m.Schedule.Weekday,
		&m.Schedule.StartDate, &end, &m.Schedule.MaxCharges, &m.Schedule.Timezone, &m.NoticeDays, &m.Status,
		&m.StatusReason, &m.NextPeriod, &next, &m.ChargesCount, &m.OTPHash, &m.OTPExpiresAt, &m.OTPAttempts,
		&m.OTPSends, &m.OTPLastSentAt, &m.CreatedAt, &m.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNotFound
	}
	if end != nil {
		m.Schedule.EndDate = *end
	}
	if next != nil {
		m.NextChargeDate = *next
	}
	return m, err
}

func getMandate(ctx context.Context, q querier, merchantID, id string, forUpdate bool) (mandateRow, error) {
	sql := `SELECT ` + mandateCols + ` FROM mandates WHERE merchant_id = $1 AND id = $2`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	return scanMandate(q.QueryRow(ctx, sql, merchantID, id))
}

func nullDate(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func insertMandate(ctx context.Context, q querier, m mandateRow) error {
	sc := m.Schedule
	_, err := q.Exec(ctx, `INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, description,
		amount_type, amount, max_amount, currency, interval, day_of_month, weekday, start_date, end_date, max_charges,
		timezone, notice_days, status, next_period, next_charge_date, otp_hash, otp_expires_at, otp_attempts,
		otp_sends, otp_last_sent_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
		$23, 0, 1, $24, $25, $25)`,
		m.ID, m.MerchantID, m.MemberID, m.CardID, m.Reference, m.Description, m.AmountType, nullInt(m.Amount),
		nullInt(m.MaxAmount), m.Currency, sc.Interval, nullInt(int64(sc.DayOfMonth)), nullInt(int64(sc.Weekday)),
		sc.StartDate, nullDate(sc.EndDate), nullInt(int64(sc.MaxCharges)), sc.Timezone, m.NoticeDays, m.Status,
		nullString(m.NextPeriod), nullDate(m.NextChargeDate), m.OTPHash, m.OTPExpiresAt, m.OTPLastSentAt, m.CreatedAt)
	return err
}

// updateMandate writes a mandate's mutable state.
func updateMandate(ctx context.Context, q querier, m mandateRow) error {
	_, err := q.Exec(ctx, `UPDATE mandates SET status = $3, status_reason = $4, next_period = $5,
		next_charge_date = $6, charges_count = $7, otp_hash = $8, otp_expires_at = $9, otp_attempts = $10,
		otp_sends = $11, otp_last_sent_at = $12, updated_at = $13
		WHERE merchant_id = $1 AND id = $2`,
		m.MerchantID, m.ID, m.Status, nullString(m.StatusReason), nullString(m.NextPeriod), nullDate(m.NextChargeDate),
		m.ChargesCount, m.OTPHash, m.OTPExpiresAt, m.OTPAttempts, m.OTPSends, m.OTPLastSentAt, m.UpdatedAt)
	return err
}

// nullPtr is nil for "", for a text[] element that is NULL.
func nullPtr(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

// lockCardMandates locks and returns a card's mandates that can still
// charge: pending, active or paused, or completed with a charge not yet
// sent to the bank.
func lockCardMandates(ctx context.Context, tx pgx.Tx, merchantID, cardID string) ([]mandateRow, error) {
	rows, err := tx.Query(ctx, `SELECT `+mandateCols+` FROM mandates WHERE merchant_id = $1 AND card_id = $2
		AND (status IN ('pending_confirmation', 'active', 'paused') OR (status = 'completed' AND EXISTS (
			SELECT 1 FROM charges c WHERE c.merchant_id = mandates.merchant_id AND c.mandate_id = mandates.id
			AND c.status IN ('scheduled', 'retry_scheduled'))))
		ORDER BY id FOR UPDATE`, merchantID, cardID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (mandateRow, error) { return scanMandate(r) })
}

// lockDueMandates locks up to limit active mandates, other than those
// another run holds, whose next period (or, for a fixed amount, its
// notice) falls on or before horizon, earliest first.
func lockDueMandates(ctx context.Context, tx pgx.Tx, horizon time.Time, limit int) ([]mandateRow, error) {
	rows, err := tx.Query(ctx, `SELECT `+mandateCols+` FROM mandates
			WHERE status = 'active' AND next_charge_date - CASE WHEN amount_type = 'fixed' THEN notice_days ELSE 0 END <= $1
			ORDER BY next_charge_date LIMIT $2 FOR UPDATE SKIP LOCKED`, horizon, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (mandateRow, error) { return scanMandate(r) })
}

// merchantName is the merchant's display name.
func merchantName(ctx context.Context, q querier, merchantID string) (string, error) {
	var name string
	err := q.QueryRow(ctx, `SELECT name FROM merchants WHERE id = $1`, merchantID).Scan(&name)
	return name, err
}

// merchantRetryDays are the days after a charge date on which the
// merchant's declined charges are tried again.
func merchantRetryDays(ctx context.Context, q querier, merchantID string) ([]int, error) {
	var days []int32
	if err := q.QueryRow(ctx, `SELECT retry_days FROM merchants WHERE id = $1`, merchantID).Scan(&days); err != nil {
		return nil, err
	}
	out := make([]int, len(days))
	for i, d := range days {
		out[i] = int(d)
	}
	return out, nil
}
