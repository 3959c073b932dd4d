package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

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

// listMandates returns the merchant's mandates on a card or of a member,
// oldest first.
func listMandates(ctx context.Context, q querier, merchantID, cardID, memberID string) ([]Mandate, error) {
	rows, err := q.Query(ctx, `SELECT `+mandateCols+` FROM mandates WHERE merchant_id = $1
		AND ($2 = '' OR card_id = $2) AND ($3 = '' OR member_id = $3) ORDER BY created_at, id LIMIT 1000`,
		merchantID, cardID, memberID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mandate, error) {
		m, err := scanMandate(r)
		return m.Mandate, err
	})
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

const chargeCols = `id, merchant_id, mandate_id, period, charge_date, amount, currency, description, status,
	next_attempt_at, notice_sent_at, retries, coalesce(failure_code, ''), coalesce(bank_reference, ''), created_at,
	updated_at`

func scanCharge(row pgx.Row) (Charge, error) {
	var c Charge
	var next, notice *time.Time
	err := row.Scan(&c.ID, &c.MerchantID, &c.MandateID, &c.Period, &c.ChargeDate, &c.Amount, &c.Currency,
		&c.Description, &c.Status, &next, &notice, &c.Retries, &c.FailureCode, &c.BankReference, &c.CreatedAt,
		&c.UpdatedAt)
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
	c, err := scanCharge(q.QueryRow(ctx, `SELECT `+chargeCols+` FROM charges WHERE merchant_id = $1 AND id = $2`,
		merchantID, id))
	if err != nil {
		return c, err
	}
	as, err := listAttempts(ctx, q, merchantID, []string{c.ID})
	c.Attempts = as[c.ID]
	return c, err
}

func listCharges(ctx context.Context, q querier, merchantID, mandateID string) ([]Charge, error) {
	rows, err := q.Query(ctx, `SELECT `+chargeCols+` FROM charges WHERE merchant_id = $1 AND mandate_id = $2
		ORDER BY charge_date, id LIMIT 1000`, merchantID, mandateID)
	if err != nil {
		return nil, err
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Charge, error) { return scanCharge(r) })
	if err != nil || len(cs) == 0 {
		return cs, err
	}
	idList := make([]string, len(cs))
	for i, c := range cs {
		idList[i] = c.ID
	}
	as, err := listAttempts(ctx, q, merchantID, idList)
	for i := range cs {
		cs[i].Attempts = as[cs[i].ID]
	}
	return cs, err
}

func listAttempts(ctx context.Context, q querier, merchantID string, chargeIDs []string) (map[string][]Attempt, error) {
	rows, err := q.Query(ctx, `SELECT charge_id, order_no, bank_code, amount, status, coalesce(failure_code, ''),
		created_at, finished_at FROM charge_attempts WHERE merchant_id = $1 AND charge_id = ANY($2) ORDER BY seq`,
		merchantID, chargeIDs)
	if err != nil {
		return nil, err
	}
	out := map[string][]Attempt{}
	var chargeID string
	var a Attempt
	var finished *time.Time
	_, err = pgx.ForEachRow(rows, []any{&chargeID, &a.OrderNo, &a.BankCode, &a.Amount, &a.Status, &a.FailureCode,
		&a.CreatedAt, &finished}, func() error {
		a.FinishedAt = time.Time{}
		if finished != nil {
			a.FinishedAt = *finished
		}
		out[chargeID] = append(out[chargeID], a)
		return nil
	})
	return out, err
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
