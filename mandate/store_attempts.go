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
