package mandate

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/ids"
)

// ErrNothingUnknown: the charge's latest attempt is not waiting on the
// bank's answer (SettleByQuery has nothing to settle).
var ErrNothingUnknown = errors.New("charge has no attempt with an unknown outcome")

// ErrBankHasNoOrder: the bank does not know the attempt's order (yet).
// SettleByQuery leaves it to the query chain and the day's statement.
var ErrBankHasNoOrder = errors.New("the bank does not know the order")

// SettleByQuery asks the bank now for the outcome of the latest attempt of
// merchantID's charge chargeID, when that attempt's outcome is unknown,
// and applies the answer as a scheduled query's is. actor names the
// operator in the audit entry charge.settle_by_query.
//
// It only reads: unlike a step of the query chain, it never sends the
// debit of an order the bank does not know (ErrBankHasNoOrder), which is
// left to the chain and the day's statement. A send from the console
// could race the day's reconciliation, which fails such an order when no
// query job is live for it, and a retry would then debit twice.
//
// An answer counts as the attempt's next try of its query chain: when the
// bank still says processing, the charge stays unknown and the chain goes
// on from this query; the chain's own job for that try then finds it
// counted and schedules nothing. No answer counts nothing. An attempt
// still processing belongs to its charge job, which may be sending it: it
// is not queried here.
//
// It returns the charge as it is afterwards; ErrNotFound for another
// merchant's or an unknown charge; ErrNothingUnknown when the latest
// attempt's outcome is not unknown; ErrBankHasNoOrder, or another error
// when the bank could not be asked (the charge is unchanged).
func (s *Service) SettleByQuery(ctx context.Context, merchantID, chargeID, actor string) (Charge, error) {
	if !ids.Valid("chg", chargeID) {
		return Charge{}, ErrNotFound
	}
	a, err := latestAttempt(ctx, s.pool, merchantID, chargeID)
	if err != nil {
		return Charge{}, fmt.Errorf("settle charge %s by query: %w", chargeID, err)
	}
	if a.status != AttemptUnknown {
		return Charge{}, ErrNothingUnknown
	}
	qerr := s.ask(ctx, QueryArgs{OrderNo: a.orderNo, MerchantID: merchantID, Try: a.queries}, false)

	c, err := getCharge(ctx, s.pool, merchantID, chargeID)
	if err != nil {
		return Charge{}, fmt.Errorf("settle charge %s by query: %w", chargeID, err)
	}
	details := map[string]any{"outcome": audit.OutcomeOK, "order_no": a.orderNo, "charge_status": c.Status}
	if qerr != nil {
		details["outcome"] = audit.OutcomeFailed
	}
	// Written after the query's own transaction (which holds the answer's
	// rows, events and decline audit): a crash between them loses only
	// this row, never the answer.
	if err := audit.Write(ctx, s.pool, audit.Entry{MerchantID: merchantID, Actor: actor,
		Action: "charge.settle_by_query", Subject: chargeID, Details: details}); err != nil {
		return Charge{}, errors.Join(qerr, fmt.Errorf("settle charge %s by query: audit: %w", chargeID, err))
	}
	if qerr != nil {
		return c, fmt.Errorf("settle charge %s by query: %w", chargeID, qerr)
	}
	return c, nil
}

// chargeAttempt is what SettleByQuery reads of a charge's latest attempt.
type chargeAttempt struct {
	orderNo string
	status  AttemptStatus
	queries int // the queries asked of it: the try its next query is
}

// latestAttempt returns the latest attempt of the charge; ErrNotFound for
// an unknown charge, ErrNothingUnknown for one never attempted.
func latestAttempt(ctx context.Context, q querier, merchantID, chargeID string) (chargeAttempt, error) {
	var (
		orderNo *string
		status  *AttemptStatus
		queries *int
	)
	err := q.QueryRow(ctx, `SELECT a.order_no, a.status, a.queries FROM charges c
		LEFT JOIN LATERAL (SELECT order_no, status, queries FROM charge_attempts
		                   WHERE charge_id = c.id ORDER BY seq DESC LIMIT 1) a ON true
		WHERE c.merchant_id = $1 AND c.id = $2`, merchantID, chargeID).Scan(&orderNo, &status, &queries)
	if errors.Is(err, pgx.ErrNoRows) {
		return chargeAttempt{}, ErrNotFound
	}
	if err != nil {
		return chargeAttempt{}, err
	}
	if orderNo == nil {
		return chargeAttempt{}, ErrNothingUnknown
	}
	return chargeAttempt{orderNo: *orderNo, status: *status, queries: *queries}, nil
}
