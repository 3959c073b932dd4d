package mandate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The refund store: refunds, the refund sums of their charges (migration
// 024), and the lists of refunds.

// refundRow is a refund with what sending and settling it needs.
type refundRow struct {
	Refund
	CardID  string
	OrderNo string // the debit refunded
	// JobID is the River job that sends the refund with the others of
	// its batch.
	JobID int64
	// SentAt is when the refund was claimed for the bank (zero: not yet).
	SentAt time.Time
	// Unknown: an answer left the outcome open; queries settle it.
	Unknown bool
	Queries int
}

const refundCols = `id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no, refund_no, amount, currency,
	reason, status, coalesce(failure_code, ''), coalesce(bank_reference, ''), job_id, sent_at,
	unknown_since IS NOT NULL, queries, created_at, finished_at`

func scanRefund(row pgx.Row) (refundRow, error) {
	var r refundRow
	var sent, finished *time.Time
	err := row.Scan(&r.ID, &r.MerchantID, &r.ChargeID, &r.MandateID, &r.CardID, &r.BankCode, &r.OrderNo, &r.RefundNo,
		&r.Amount, &r.Currency, &r.Reason, &r.Status, &r.FailureCode, &r.BankReference, &r.JobID, &sent, &r.Unknown,
		&r.Queries, &r.CreatedAt, &finished)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNotFound
	}
	if sent != nil {
		r.SentAt = *sent
	}
	if finished != nil {
		r.FinishedAt = *finished
	}
	return r, err
}

func collectRefunds(rows pgx.Rows, err error) ([]refundRow, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (refundRow, error) { return scanRefund(r) })
}

// refundSource is a charge as a refund of it needs it: its state and the
// debit that succeeded (none for a charge not succeeded).
type refundSource struct {
	status                    ChargeStatus
	mandateID, currency       string
	orderNo, bankCode, cardID string
	debitedAt                 time.Time
}

// refundableCharge reads the merchant's charge and its succeeded attempt.
// Errors: ErrNotFound.
func refundableCharge(ctx context.Context, q querier, merchantID, chargeID string) (refundSource, error) {
	var s refundSource
	var orderNo, bankCode, cardID *string
	var debited *time.Time
	err := q.QueryRow(ctx, `SELECT c.status, c.mandate_id, c.currency, a.order_no, a.bank_code, a.card_id, a.finished_at
		FROM charges c LEFT JOIN charge_attempts a ON a.charge_id = c.id AND a.status = 'succeeded'
		WHERE c.merchant_id = $1 AND c.id = $2`, merchantID, chargeID).
		Scan(&s.status, &s.mandateID, &s.currency, &orderNo, &bankCode, &cardID, &debited)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	if orderNo != nil {
		s.orderNo, s.bankCode, s.cardID = *orderNo, *bankCode, *cardID
	}
	if debited != nil {
		s.debitedAt = *debited
	}
	return s, err
}

// lockRefundedDebit takes the charge's succeeded attempt's key-share lock
// before the charge's row is locked: the order a bank answer about the
// attempt takes them in (the attempt, then its charge), so a refund's
// creation and a late answer for its debit never wait on each other.
func lockRefundedDebit(ctx context.Context, tx pgx.Tx, chargeID string) error {
	_, err := tx.Exec(ctx, `SELECT 1 FROM charge_attempts WHERE charge_id = $1 AND status = 'succeeded' FOR KEY SHARE`, chargeID)
	return err
}

// holdRefundAmount raises the charge's held refund sum by amount; the
// charges_refunds_within_amount CHECK refuses a sum above the charge's
// amount (ErrRefundExceedsCharge). The update locks the charge row until
// the caller's transaction ends.
func holdRefundAmount(ctx context.Context, tx pgx.Tx, chargeID string, amount int64) error {
	_, err := tx.Exec(ctx, `UPDATE charges SET amount_refund_held = amount_refund_held + $2 WHERE id = $1`,
		chargeID, amount)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == "charges_refunds_within_amount" {
		return ErrRefundExceedsCharge
	}
	return err
}

func insertRefund(ctx context.Context, tx pgx.Tx, r refundRow) error {
	_, err := tx.Exec(ctx, `INSERT INTO refunds (id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no,
		refund_no, amount, currency, reason, status, job_id, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)`,
		r.ID, r.MerchantID, r.ChargeID, r.MandateID, r.CardID, r.BankCode, r.OrderNo, r.RefundNo, r.Amount, r.Currency,
		r.Reason, r.Status, r.JobID, r.CreatedAt)
	return err
}

// joinRefundJob adds a refund to an open batch of the bank's with fewer
// than limit refunds, and returns its job; false if none is free (each is
// full, or held by another transaction joining it, or by its job
// starting).
func joinRefundJob(ctx context.Context, tx pgx.Tx, bankCode string, limit int) (int64, bool, error) {
	var job int64
	err := tx.QueryRow(ctx, `UPDATE refund_jobs SET refunds = refunds + 1 WHERE job_id = (
			SELECT job_id FROM refund_jobs WHERE bank_code = $1 AND refunds < $2 LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING job_id`, bankCode, limit).Scan(&job)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return job, err == nil, err
}

// openRefundJob opens a batch of the bank's, sent by job, with one refund.
func openRefundJob(ctx context.Context, tx pgx.Tx, job int64, bankCode string, now time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO refund_jobs (job_id, bank_code, refunds, created_at) VALUES ($1, $2, 1, $3)`,
		job, bankCode, now)
	return err
}

// getRefund returns the merchant's refund. Errors: ErrNotFound.
func getRefund(ctx context.Context, q querier, merchantID, id string) (refundRow, error) {
	return scanRefund(q.QueryRow(ctx, `SELECT `+refundCols+` FROM refunds WHERE merchant_id = $1 AND id = $2`,
		merchantID, id))
}

// getBankRefund returns the refund of a bank's refund number. Errors:
// ErrNotFound.
func getBankRefund(ctx context.Context, q querier, bankCode, refundNo string) (refundRow, error) {
	return scanRefund(q.QueryRow(ctx, `SELECT `+refundCols+` FROM refunds WHERE refund_no = $1 AND bank_code = $2`,
		refundNo, bankCode))
}

// refundsByID reads refunds by id.
func refundsByID(ctx context.Context, q querier, ids []string) ([]refundRow, error) {
	rows, err := q.Query(ctx, `SELECT `+refundCols+` FROM refunds WHERE id = ANY($1) ORDER BY id`, ids)
	return collectRefunds(rows, err)
}

// claimRefunds closes job's batch, waiting for any transaction joining
// it, and claims the batch's refunds not sent yet: sent at now, in tx.
func claimRefunds(ctx context.Context, tx pgx.Tx, job int64, now time.Time) ([]refundRow, error) {
	if _, err := tx.Exec(ctx, `DELETE FROM refund_jobs WHERE job_id = $1`, job); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `UPDATE refunds SET sent_at = $2, updated_at = $2
		WHERE job_id = $1 AND status = 'pending' AND sent_at IS NULL RETURNING `+refundCols, job, now)
	return collectRefunds(rows, err)
}

// moveRefundJob gives a refund not sent yet, still of job from (which
// has ended: its batch, if still open, is closed), the job to.
func moveRefundJob(ctx context.Context, tx pgx.Tx, refundID string, from, to int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM refund_jobs WHERE job_id = $1`, from); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE refunds SET job_id = $3 WHERE id = $1 AND job_id = $2 AND sent_at IS NULL`,
		refundID, from, to)
	return err
}

// jobRefunds returns the refunds job claimed that are still pending with
// no answer yet (none has made them unknown).
func jobRefunds(ctx context.Context, q querier, job int64) ([]refundRow, error) {
	rows, err := q.Query(ctx, `SELECT `+refundCols+` FROM refunds
		WHERE job_id = $1 AND status = 'pending' AND sent_at IS NOT NULL AND unknown_since IS NULL ORDER BY id`, job)
	return collectRefunds(rows, err)
}

// lockRefunds locks refunds by id, in id order, and returns them.
func lockRefunds(ctx context.Context, tx pgx.Tx, ids []string) ([]refundRow, error) {
	rows, err := tx.Query(ctx, `SELECT `+refundCols+` FROM refunds WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	return collectRefunds(rows, err)
}

// lockCharges locks charges by id, in id order: every transaction that
// changes a charge's refund sums after locking refunds takes the charges
// in this order, so two cannot wait for each other.
func lockCharges(ctx context.Context, tx pgx.Tx, ids []string) error {
	_, err := tx.Exec(ctx, `SELECT 1 FROM charges WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
	return err
}

// refundOutcomes are final answers to write to refunds, one statement.
type refundOutcomes struct {
	id, charge         []string
	code, txn, failure []*string
	finished           []time.Time
	amount             []int64
}

func (o *refundOutcomes) add(r refundRow, code, txn, failure string, finished time.Time) {
	o.id = append(o.id, r.ID)
	o.code, o.txn, o.failure = append(o.code, nullPtr(code)), append(o.txn, nullPtr(txn)), append(o.failure, nullPtr(failure))
	o.finished, o.charge, o.amount = append(o.finished, finished), append(o.charge, r.ChargeID), append(o.amount, r.Amount)
}

// write makes the refunds of o status (succeeded or failed) and moves
// their charges' sums: a success adds to amount_refunded, a failure gives
// its amount back to what may yet be refunded.
func (o *refundOutcomes) write(ctx context.Context, tx pgx.Tx, status RefundStatus, now time.Time) error {
	if len(o.id) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE refunds r SET status = $1, bank_result = u.code, bank_reference = u.txn,
			failure_code = u.failure, finished_at = u.finished, next_query_at = NULL, updated_at = $2
		FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[]) AS u(id, code, txn, failure, finished)
		WHERE r.id = u.id`, status, now, o.id, o.code, o.txn, o.failure, o.finished); err != nil {
		return err
	}
	var sums string
	switch status {
	case RefundSucceeded:
		sums = `amount_refunded = c.amount_refunded + s.amount`
	case RefundFailed:
		sums = `amount_refund_held = c.amount_refund_held - s.amount`
	default:
		return fmt.Errorf("mandate: refund outcome %q is not final", status)
	}
	_, err := tx.Exec(ctx, `UPDATE charges c SET `+sums+`
		FROM (SELECT id, sum(amount) AS amount FROM unnest($1::text[], $2::bigint[]) AS u(id, amount) GROUP BY id) s
		WHERE c.id = s.id`, o.charge, o.amount)
	return err
}

// markRefundsUnknown makes refunds' outcomes open, their first query due
// at next.
func markRefundsUnknown(ctx context.Context, tx pgx.Tx, ids []string, now, next time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE refunds SET unknown_since = $2, next_query_at = $3, updated_at = $2
		WHERE id = ANY($1) AND unknown_since IS NULL`, ids, now, next)
	return err
}

// countRefundQuery counts query try of a refund and dates the next one
// (NULL: none follows); false if try was counted already.
func countRefundQuery(ctx context.Context, tx pgx.Tx, id string, try int, next *time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE refunds SET queries = queries + 1, next_query_at = $3 WHERE id = $1 AND queries = $2`,
		id, try, next)
	return tag.RowsAffected() == 1, err
}

// listRefundPage reads up to limit of the merchant's refunds that f shows,
// before after, newest first (keyset, as listChargePage).
func listRefundPage(ctx context.Context, q querier, merchantID string, f RefundFilter, after cursor, limit int) ([]Refund, error) {
	k := newKeyset(merchantID)
	if f.Status != "" {
		k.where("status = " + k.arg(string(f.Status)))
	}
	if f.ChargeID != "" {
		k.where("charge_id = " + k.arg(f.ChargeID))
	}
	if !f.CreatedGTE.IsZero() {
		k.where("created_at >= " + k.arg(f.CreatedGTE))
	}
	if !f.CreatedLT.IsZero() {
		k.where("created_at < " + k.arg(f.CreatedLT))
	}
	rows, err := collectRefunds(q.Query(ctx, k.sql(refundCols, "refunds", after, limit), k.args...))
	if err != nil {
		return nil, err
	}
	out := make([]Refund, len(rows))
	for i, r := range rows {
		out[i] = r.Refund
	}
	return out, nil
}
