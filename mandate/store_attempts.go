package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

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

// attemptRow is an attempt with what sending it needs.
type attemptRow struct {
	Attempt
	MerchantID  string
	ChargeID    string
	CardID      string
	Description string
}

const attemptSelect = `SELECT a.order_no, a.bank_code, a.amount, a.status, a.merchant_id, a.charge_id, a.card_id,
	c.description FROM charge_attempts a JOIN charges c ON c.id = a.charge_id`

func scanAttempt(row pgx.Row) (attemptRow, error) {
	var a attemptRow
	err := row.Scan(&a.OrderNo, &a.BankCode, &a.Amount, &a.Status, &a.MerchantID, &a.ChargeID, &a.CardID, &a.Description)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

func getAttempt(ctx context.Context, q querier, merchantID, orderNo string, forUpdate bool) (attemptRow, error) {
	sql := attemptSelect + ` WHERE a.merchant_id = $1 AND a.order_no = $2`
	if forUpdate {
		sql += ` FOR UPDATE OF a, c`
	}
	return scanAttempt(q.QueryRow(ctx, sql, merchantID, orderNo))
}

// processingAttempts reads the attempts of orderNos that are still
// processing. It filters on status here, not in SQL: a cached generic plan
// would take the partial index of all open attempts for that, and read
// each of them (thousands in a month-end run) to find a job's 20.
func processingAttempts(ctx context.Context, q querier, orderNos []string) ([]attemptRow, error) {
	rows, err := q.Query(ctx, attemptSelect+` WHERE a.order_no = ANY($1)`, orderNos)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []attemptRow
	for rows.Next() {
		a, err := scanAttempt(rows)
		if err != nil {
			return nil, err
		}
		if a.Status == AttemptProcessing {
			out = append(out, a)
		}
	}
	return out, rows.Err()
}

// cardUse is what a card row's attempts hold of the banks' per-card cap:
// failed attempts on one bank day, and attempts still open (which may yet
// fail).
type cardUse struct{ failed, open int }

// cardDayUse returns, for each card row of cardIDs that has any, its
// failed attempts on bank day day and its open attempts. By card (its
// index), not by the partial index of all open attempts: hence NOT IN for
// the open ones.
func cardDayUse(ctx context.Context, q querier, cardIDs []string, day time.Time) (map[string]cardUse, error) {
	rows, err := q.Query(ctx, `SELECT card_id,
		count(*) FILTER (WHERE status = 'failed'),
		count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'amount_mismatch'))
		FROM charge_attempts
		WHERE card_id = ANY($1)
		  AND ((bank_day = $2 AND status = 'failed') OR status NOT IN ('succeeded', 'failed', 'amount_mismatch'))
		GROUP BY card_id`, cardIDs, day)
	if err != nil {
		return nil, err
	}
	out := map[string]cardUse{}
	var id string
	var u cardUse
	_, err = pgx.ForEachRow(rows, []any{&id, &u.failed, &u.open}, func() error { out[id] = u; return nil })
	return out, err
}

// getBankAttempt returns the attempt of a bank's order number.
func getBankAttempt(ctx context.Context, q querier, bankCode, orderNo string) (attemptRow, error) {
	return scanAttempt(q.QueryRow(ctx, attemptSelect+` WHERE a.order_no = $1 AND a.bank_code = $2`, orderNo, bankCode))
}

// countQuery counts query try of an attempt: false if it was counted
// already.
func countQuery(ctx context.Context, q querier, orderNo string, try int) (bool, error) {
	tag, err := q.Exec(ctx, `UPDATE charge_attempts SET queries = queries + 1 WHERE order_no = $1 AND queries = $2`,
		orderNo, try)
	return tag.RowsAffected() == 1, err
}

// markAttemptUnknown makes an attempt's outcome unknown.
func markAttemptUnknown(ctx context.Context, q querier, orderNo string) error {
	_, err := q.Exec(ctx, `UPDATE charge_attempts SET status = 'unknown' WHERE order_no = $1`, orderNo)
	return err
}

// finishAttempt writes an attempt's final status from the bank's answer
// (its reason, result code and transaction number), counted on bank day
// day.
func finishAttempt(ctx context.Context, q querier, orderNo string, status AttemptStatus, reason, code, txnNo string,
	now, day time.Time) error {
	_, err := q.Exec(ctx, `UPDATE charge_attempts SET status = $2, failure_code = $3, bank_result = $4,
		bank_txn_no = $5, finished_at = $6, bank_day = $7 WHERE order_no = $1`,
		orderNo, status, nullString(reason), nullString(code), nullString(txnNo), now, day)
	return err
}

// insertAttempts writes planned attempts, processing, made on bank day
// day at now, with one COPY.
func insertAttempts(ctx context.Context, tx pgx.Tx, list []plannedAttempt, day, now time.Time) error {
	rows := make([][]any, len(list))
	for i, a := range list {
		rows[i] = []any{a.orderNo, a.merchantID, a.chargeID, a.cardID, a.seq, a.bankCode, a.amount,
			AttemptProcessing, day, now}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"charge_attempts"}, []string{"order_no", "merchant_id",
		"charge_id", "card_id", "seq", "bank_code", "amount", "status", "bank_day", "created_at"},
		pgx.CopyFromRows(rows))
	return err
}

// succeedAttempts writes successes to the open attempts of orders (with
// the bank's result code, transaction number and bank day of each) and to
// their charges, in one statement, and returns the charges it made
// succeeded. It takes the attempts' locks and then the charges' (the order
// getAttempt takes them in). The open test is written as NOT IN so that
// the planner looks orders up by key, never by scanning the partial index
// of all open attempts (which a month-end run fills). An attempt settled
// already is left as it is, and its charge is not returned.
func succeedAttempts(ctx context.Context, tx pgx.Tx, orders []string, codes, txns []*string, days []time.Time,
	now time.Time) ([]Charge, error) {
	rows, err := tx.Query(ctx, `WITH att AS (
			UPDATE charge_attempts a SET status = 'succeeded', bank_result = u.code, bank_txn_no = u.txn, finished_at = $4,
				bank_day = u.day
			FROM unnest($1::text[], $2::text[], $3::text[], $5::date[]) AS u(order_no, code, txn, day)
			WHERE a.order_no = u.order_no AND a.status NOT IN ('succeeded', 'failed', 'amount_mismatch')
			RETURNING a.charge_id, u.txn)
		UPDATE charges SET status = 'succeeded', bank_reference = att.txn, failure_code = NULL,
			next_attempt_at = NULL, updated_at = $4
		FROM att WHERE id = att.charge_id RETURNING `+chargeCols, orders, codes, txns, now, days)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Charge, error) { return scanCharge(r) })
}

// holdAttempt makes an open attempt amount_mismatch, keeping the bank's
// amount, result code and transaction number, and returns its charge;
// false if the attempt was settled already.
func holdAttempt(ctx context.Context, tx pgx.Tx, orderNo string, bankAmount int64, code, txnNo string,
	now, day time.Time) (chargeID string, ok bool, err error) {
	err = tx.QueryRow(ctx, `UPDATE charge_attempts SET status = 'amount_mismatch', bank_amount = $2,
				bank_result = $3, bank_txn_no = $4, finished_at = $5, bank_day = $6
			WHERE order_no = $1 AND status NOT IN ('succeeded', 'failed', 'amount_mismatch') RETURNING charge_id`,
		orderNo, bankAmount, nullString(code), nullString(txnNo), now, day).Scan(&chargeID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return chargeID, err == nil, err
}
