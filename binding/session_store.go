package binding

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// The binding_sessions table's SQL (migrations 028 and 030).

const sessionCols = `id, merchant_id, COALESCE(member_id, ''), COALESCE(external_user_id, ''), return_url, mandate,
	status, COALESCE(binding_id, ''), COALESCE(card_id, ''), COALESCE(mandate_id, ''), COALESCE(failure_code, ''),
	expires_at, created_at, updated_at`

func scanSession(row pgx.Row) (Session, error) {
	var ss Session
	err := row.Scan(&ss.ID, &ss.MerchantID, &ss.MemberID, &ss.ExternalUserID, &ss.ReturnURL, &ss.Mandate, &ss.Status,
		&ss.BindingID, &ss.CardID, &ss.MandateID, &ss.FailureCode, &ss.ExpiresAt, &ss.CreatedAt, &ss.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ss, ErrNotFound
	}
	if err != nil {
		return ss, err
	}
	return ss, ss.Status.Check()
}

func queueInsertSession(batch *pgx.Batch, ss Session, tokenFP []byte) {
	var terms any // NULL, not a JSON null, for no terms
	if ss.Mandate != nil {
		terms = string(ss.Mandate)
	}
	batch.Queue(`
		INSERT INTO binding_sessions (id, merchant_id, token_fp, member_id, external_user_id, return_url, mandate,
		                              status, expires_at, created_at, updated_at)
		VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6, $7::jsonb, $8, $9, $10, $10)`,
		ss.ID, ss.MerchantID, tokenFP, ss.MemberID, ss.ExternalUserID, ss.ReturnURL, terms, ss.Status, ss.ExpiresAt,
		ss.CreatedAt)
}

func getSession(ctx context.Context, q querier, merchantID, id string) (Session, error) {
	return scanSession(q.QueryRow(ctx, `SELECT `+sessionCols+` FROM binding_sessions WHERE merchant_id = $1 AND id = $2`,
		merchantID, id))
}

func sessionByToken(ctx context.Context, q querier, fps [][]byte) (Session, error) {
	return scanSession(q.QueryRow(ctx, `SELECT `+sessionCols+` FROM binding_sessions WHERE token_fp = ANY($1)`, fps))
}

// takeSessionAttempt counts one card attempt on the session if it is open,
// not past its expiry at now, and has counted fewer than max, and returns
// the count with it.
func takeSessionAttempt(ctx context.Context, q querier, merchantID, id string, now any, max int) (int, bool, error) {
	var n int
	err := q.QueryRow(ctx, `UPDATE binding_sessions SET card_refusals = card_refusals + 1, updated_at = $3
		WHERE merchant_id = $1 AND id = $2 AND status = 'open' AND expires_at > $3 AND card_refusals < $4
		RETURNING card_refusals`, merchantID, id, now, max).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return n, err == nil, err
}

// updateOpenSession sets set (whose parameters are $4 on, args) on the
// session if it is open and cond holds ("" for none; $3 is now), and
// reports whether it was.
func updateOpenSession(ctx context.Context, q querier, merchantID, id string, now any, set, cond string, args ...any) (bool, error) {
	where := "merchant_id = $1 AND id = $2 AND status = 'open'"
	if cond != "" {
		where += " AND " + cond
	}
	tag, err := q.Exec(ctx, `UPDATE binding_sessions SET `+set+`, updated_at = $3 WHERE `+where,
		append([]any{merchantID, id, now}, args...)...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
