package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The reconciliation store: the attempts and refunds a statement is
// checked against, the River jobs still working on one, and the record of
// each run.

// statementRow is one of our attempts at a bank, as reconciliation reads
// it.
type statementRow struct {
	merchantID   string
	status       AttemptStatus
	amount       int64
	day, claimed time.Time
	queries      int
}

// statementAttempts returns, by order number, the bank's attempts that
// its statement for a day may name: made on bank days from to to, and
// every attempt still open.
func statementAttempts(ctx context.Context, q querier, bankCode string, from, to time.Time) (map[string]statementRow, error) {
	rows, err := q.Query(ctx, `SELECT order_no, merchant_id, amount, status, bank_day, queries, created_at FROM charge_attempts
		WHERE bank_code = $1 AND ((bank_day BETWEEN $2 AND $3) OR status IN ('unknown', 'processing'))`,
		bankCode, from, to)
	if err != nil {
		return nil, err
	}
	known := map[string]statementRow{}
	var no string
	var o statementRow
	_, err = pgx.ForEachRow(rows, []any{&no, &o.merchantID, &o.amount, &o.status, &o.day, &o.queries, &o.claimed}, func() error {
		known[no] = o
		return nil
	})
	return known, err
}

// statementAttempt returns one attempt at the bank (without its queries
// and claim time). Errors: ErrNotFound.
func statementAttempt(ctx context.Context, q querier, bankCode, orderNo string) (statementRow, error) {
	var o statementRow
	err := q.QueryRow(ctx, `SELECT merchant_id, amount, status, bank_day FROM charge_attempts
				WHERE bank_code = $1 AND order_no = $2`, bankCode, orderNo).Scan(&o.merchantID, &o.amount, &o.status, &o.day)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, ErrNotFound
	}
	return o, err
}

// queryJobLive reports whether a query job for the order is waiting or
// running, or ran and was finalized after since.
func queryJobLive(ctx context.Context, q querier, orderNo string, since time.Time) (bool, error) {
	var live bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = $1
		AND args @> jsonb_build_object('order_no', $2::text) AND (state NOT IN ('completed', 'cancelled', 'discarded')
			OR (attempted_at IS NOT NULL AND finalized_at > $3)))`,
		QueryArgs{}.Kind(), orderNo, since).Scan(&live)
	return live, err
}

// statementRefunds returns, by refund number, the bank's refunds that its
// statement for a day may name: finished in [from, to), and every refund
// still pending.
func statementRefunds(ctx context.Context, q querier, bankCode string, from, to time.Time) (map[string]refundRow, error) {
	list, err := collectRefunds(q.Query(ctx, `SELECT `+refundCols+` FROM refunds
		WHERE bank_code = $1 AND ((finished_at >= $2 AND finished_at < $3) OR status = 'pending')`, bankCode, from, to))
	if err != nil {
		return nil, err
	}
	known := make(map[string]refundRow, len(list))
	for _, r := range list {
		known[r.RefundNo] = r
	}
	return known, nil
}

// refundJobLive reports whether a refund job that may act on the refund
// (the one that sends it, or one whose args name it: a query) is waiting
// or running, or ran and was finalized after since.
func refundJobLive(ctx context.Context, q querier, refundID string, job int64, since time.Time) (bool, error) {
	var live bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = $1
		AND (id = $2 OR args @> jsonb_build_object('ids', jsonb_build_array($3::text)))
		AND (state NOT IN ('completed', 'cancelled', 'discarded') OR (attempted_at IS NOT NULL AND finalized_at > $4)))`,
		RefundArgs{}.Kind(), job, refundID, since).Scan(&live)
	return live, err
}

// orphan is an attempt adopted from a charge job that ended.
type orphan struct{ orderNo, chargeID string }

// adoptOrphanAttempts makes the bank's attempts still processing, claimed
// before claimedBefore, whose charge job has ended, unknown with at least
// queries queries counted, and returns them. The job is found through
// River's index on args.
func adoptOrphanAttempts(ctx context.Context, tx pgx.Tx, bankCode string, queries int, claimedBefore time.Time) ([]orphan, error) {
	rows, err := tx.Query(ctx, `UPDATE charge_attempts a SET status = 'unknown', queries = greatest(queries, $2)
			WHERE bank_code = $1 AND status = 'processing' AND created_at < $4 AND NOT EXISTS (SELECT 1 FROM river_job j
				WHERE j.args @> jsonb_build_object('order_nos', jsonb_build_array(a.order_no))
				AND j.kind = $3 AND j.state NOT IN ('completed', 'cancelled', 'discarded'))
			RETURNING order_no, charge_id`, bankCode, queries, ChargeArgs{}.Kind(), claimedBefore)
	if err != nil {
		return nil, err
	}
	var out []orphan
	var o orphan
	_, err = pgx.ForEachRow(rows, []any{&o.orderNo, &o.chargeID}, func() error { out = append(out, o); return nil })
	return out, err
}

// insertReconciliation records a run and its mismatches, and sets its id.
func insertReconciliation(ctx context.Context, tx pgx.Tx, rec *Reconciliation) error {
	if err := tx.QueryRow(ctx, `INSERT INTO reconciliation_runs (bank_code, bank_day, entries, matched, settled, mismatches,
			final, refunds, refunds_matched, refunds_settled)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`, rec.BankCode, rec.Date, rec.Entries, rec.Matched,
		rec.Settled, len(rec.Mismatches), rec.Final, rec.Refunds, rec.RefundsMatched, rec.RefundsSettled).Scan(&rec.RunID); err != nil {
		return err
	}
	for _, m := range rec.Mismatches {
		if _, err := tx.Exec(ctx, `INSERT INTO reconciliation_mismatches (run_id, kind, bank_code, bank_day, order_no,
				merchant_id, bank_amount, our_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			rec.RunID, m.Kind, rec.BankCode, rec.Date, m.OrderNo, nullString(m.MerchantID), nullInt(m.BankAmount),
			nullInt(m.OurAmount)); err != nil {
			return err
		}
	}
	return nil
}
