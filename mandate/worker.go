package mandate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"golang.org/x/time/rate"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// ChargeWorker sends a claimed attempt to the bank.
type ChargeWorker struct {
	river.WorkerDefaults[ChargeArgs]
	Service *Service
}

// Work implements river.Worker. A job that runs again (after a crash or an
// error) asks the bank about its order before it sends it.
func (w *ChargeWorker) Work(ctx context.Context, job *river.Job[ChargeArgs]) error {
	return w.Service.execute(ctx, job.Args, job.Attempt > 1)
}

// Timeout implements river.Worker: a bank call is bounded well below it.
// It does not follow the client's JobTimeout, which may be short for a
// quick rescue of crashed runs.
func (w *ChargeWorker) Timeout(*river.Job[ChargeArgs]) time.Duration { return 30 * time.Second }

// QueryWorker settles an attempt whose outcome is unknown by asking the
// bank, and asks again later (Config.QueryBackoff) while it stays unknown.
type QueryWorker struct {
	river.WorkerDefaults[QueryArgs]
	Service *Service
}

// Work implements river.Worker.
func (w *QueryWorker) Work(ctx context.Context, job *river.Job[QueryArgs]) error {
	return w.Service.query(ctx, job.Args)
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

func final(status string) bool { return status == AttemptSucceeded || status == AttemptFailed }

// execute sends one attempt. rerun: the job ran before, so the bank may
// have the order: query first, and send only if it does not.
func (s *Service) execute(ctx context.Context, args ChargeArgs, rerun bool) error {
	merchantID, orderNo := args.MerchantID, args.OrderNo
	// A first run sends what the claim wrote (nothing else touches an
	// attempt before its bank call); a later one reads where it stands.
	a := attemptRow{Attempt: Attempt{OrderNo: orderNo, BankCode: args.BankCode, Amount: args.Amount,
		Status: AttemptProcessing}, MerchantID: merchantID, ChargeID: args.ChargeID, CardID: args.CardID,
		Description: args.Description}
	if rerun || args.CardID == "" {
		var err error
		if a, err = getAttempt(ctx, s.pool, merchantID, orderNo, false); err != nil {
			return fmt.Errorf("charge %s: %w", orderNo, err)
		}
		if a.Status != AttemptProcessing {
			return nil // settled, or unknown and in the query workers' hands
		}
	}
	bank, ok := s.cfg.Banks.Bank(a.BankCode)
	if !ok {
		return fmt.Errorf("charge %s: no channel to bank %s", orderNo, a.BankCode)
	}
	if rerun {
		r, err := s.bankQuery(ctx, bank, orderNo)
		switch {
		case errors.Is(err, bankadapters.ErrOrderNotFound):
			// The bank never got it: send it, under the same number.
		case err != nil:
			return s.settle(ctx, a, bankadapters.UnknownResult(bankadapters.ChargeRequest{OrderNo: orderNo, Amount: a.Amount}, err), "query")
		default:
			return s.settle(ctx, a, r, "query")
		}
	}
	card, agreement, err := s.agreement(ctx, a)
	if err != nil {
		return fmt.Errorf("charge %s: %w", orderNo, err)
	}
	if card.Status != binding.CardActive && !rerun {
		// Unbound or revoked after the claim: nothing reaches the bank.
		return s.settle(ctx, a, bankadapters.ChargeResult{OrderNo: orderNo, Status: bankadapters.ChargeFailed,
			Outcome: bankadapters.OutcomeHardDecline, Reason: "card_" + card.Status}, "local")
	}
	r, err := s.bankCharge(ctx, bank, a, agreement)
	if err != nil {
		// Refused before sending (a malformed request): nothing reached the bank.
		return fmt.Errorf("charge %s: %w", orderNo, err)
	}
	return s.settle(ctx, a, r, "charge")
}

// agreement decrypts the attempt's card agreement number (audited).
func (s *Service) agreement(ctx context.Context, a attemptRow) (binding.Card, string, error) {
	return s.cfg.Cards.Agreement(ctx, a.MerchantID, a.CardID, sensitive.Access{
		MerchantID: a.MerchantID, Actor: "worker:charges", Subject: a.CardID, Reason: "bank charge"})
}

// bankCharge sends the attempt's debit under its order number, within the
// bank's limits.
func (s *Service) bankCharge(ctx context.Context, bank bankadapters.Bank, a attemptRow, agreement string) (bankadapters.ChargeResult, error) {
	release, err := s.limiter.acquire(ctx, a.BankCode)
	if err != nil {
		return bankadapters.ChargeResult{}, err
	}
	defer release()
	return bank.Charge(ctx, bankadapters.ChargeRequest{
		OrderNo: a.OrderNo, AgreementNo: agreement, Amount: a.Amount, Currency: "CNY",
		Description: a.Description, NotifyURL: s.cfg.NotifyURL(a.BankCode),
	})
}

func (s *Service) bankQuery(ctx context.Context, bank bankadapters.Bank, orderNo string) (bankadapters.ChargeResult, error) {
	release, err := s.limiter.acquire(ctx, bank.Code())
	if err != nil {
		return bankadapters.ChargeResult{}, err
	}
	defer release()
	return bank.Query(ctx, orderNo)
}

// query asks the bank about an unknown attempt.
func (s *Service) query(ctx context.Context, args QueryArgs) error {
	a, err := getAttempt(ctx, s.pool, args.MerchantID, args.OrderNo, false)
	if err != nil {
		return fmt.Errorf("query %s: %w", args.OrderNo, err)
	}
	if a.Status != AttemptUnknown {
		return nil
	}
	bank, ok := s.cfg.Banks.Bank(a.BankCode)
	if !ok {
		return fmt.Errorf("query %s: no channel to bank %s", args.OrderNo, a.BankCode)
	}
	r, err := s.bankQuery(ctx, bank, args.OrderNo)
	if errors.Is(err, bankadapters.ErrOrderNotFound) {
		// The debit never reached the bank: send it now, under the same
		// number, so that a late copy of the first request cannot debit
		// twice.
		_, agreement, aerr := s.agreement(ctx, a)
		if aerr != nil {
			return fmt.Errorf("query %s: %w", args.OrderNo, aerr)
		}
		r, err = s.bankCharge(ctx, bank, a, agreement)
	}
	if err != nil {
		r = bankadapters.UnknownResult(bankadapters.ChargeRequest{OrderNo: a.OrderNo, Amount: a.Amount}, err)
	}
	return s.settleQuery(ctx, a, r, args.Try)
}

// settleQuery applies a query's answer and, while the outcome stays
// unknown, schedules the next query.
func (s *Service) settleQuery(ctx context.Context, a attemptRow, r bankadapters.ChargeResult, try int) error {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		open, err := s.apply(ctx, tx, a, r, "query")
		if err != nil || !open {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE charge_attempts SET queries = queries + 1 WHERE order_no = $1`, a.OrderNo); err != nil {
			return err
		}
		if try+1 >= len(s.cfg.QueryBackoff) {
			s.log.Warn("charge outcome still unknown after every query; the daily statement settles it",
				"order_no", a.OrderNo, "bank", a.BankCode)
			return nil
		}
		_, err = s.cfg.Jobs.InsertTx(ctx, tx, QueryArgs{OrderNo: a.OrderNo, MerchantID: a.MerchantID, Try: try + 1},
			&river.InsertOpts{Queue: s.cfg.Queue, ScheduledAt: time.Now().Add(s.cfg.QueryBackoff[try+1])})
		return err
	})
	if err != nil {
		return err
	}
	// A lost answer settled by query can be the one that says the
	// agreement is gone: it ends the card as a direct answer does.
	return s.revokeIfGone(ctx, a, r)
}

// settle applies a bank's answer to an attempt in its own transaction; an
// answer that leaves it unknown schedules the first query.
func (s *Service) settle(ctx context.Context, a attemptRow, r bankadapters.ChargeResult, source string) error {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		wasProcessing := a.Status == AttemptProcessing
		open, err := s.apply(ctx, tx, a, r, source)
		if err != nil {
			return err
		}
		if !open || !wasProcessing {
			return nil
		}
		_, err = s.cfg.Jobs.InsertTx(ctx, tx, QueryArgs{OrderNo: a.OrderNo, MerchantID: a.MerchantID},
			&river.InsertOpts{Queue: s.cfg.Queue, ScheduledAt: time.Now().Add(s.cfg.QueryBackoff[0])})
		return err
	})
	if err != nil {
		return err
	}
	return s.revokeIfGone(ctx, a, r)
}

// revokeIfGone acts on an answer that says the card's agreement is gone
// (agreement invalid, card closed): the card is revoked and, with it, its
// mandates cancelled. Called after the answer's transaction commits: the
// revocation locks the mandates. Revoking a revoked card does nothing.
func (s *Service) revokeIfGone(ctx context.Context, a attemptRow, r bankadapters.ChargeResult) error {
	if r.Status != bankadapters.ChargeFailed ||
		(r.Reason != bankadapters.ReasonAgreementInvalid && r.Reason != bankadapters.ReasonCardClosed) {
		return nil
	}
	if _, err := s.cfg.Cards.Revoke(ctx, a.MerchantID, a.CardID, r.Reason); err != nil {
		return fmt.Errorf("revoke card %s: %w", a.CardID, err)
	}
	return nil
}

// ApplyResult applies a bank's asynchronous answer (a verified callback)
// about an order: idempotent, and in any order relative to queries.
// Errors: ErrNotFound for an order quickpay did not send.
func (s *Service) ApplyResult(ctx context.Context, bankCode string, r bankadapters.ChargeResult) error {
	a, err := scanAttempt(s.pool.QueryRow(ctx, attemptSelect+` WHERE a.order_no = $1 AND a.bank_code = $2`,
		r.OrderNo, bankCode))
	if err != nil {
		return err // ErrNotFound for an order quickpay did not send
	}
	return s.settle(ctx, a, r, "callback")
}

// apply writes a bank answer to the attempt and its charge, under their
// locks, and returns whether the outcome is still open (unknown). An
// attempt already settled keeps its outcome; a different answer for it is
// logged for operators.
func (s *Service) apply(ctx context.Context, tx pgx.Tx, a attemptRow, r bankadapters.ChargeResult, source string) (bool, error) {
	status := attemptStatus(r)
	now := s.now()
	if status == AttemptSucceeded {
		// The common case in one statement, which takes the attempt's and
		// then the charge's lock (the order getAttempt takes them in). The
		// open test is written as NOT IN so that the planner looks the
		// order up by its key, never by scanning the partial index of all
		// open attempts (which a month-end run fills).
		if r.Amount != 0 && r.Amount != a.Amount {
			s.log.Error("bank answer names another amount", "order_no", a.OrderNo, "ours", a.Amount, "bank", r.Amount)
		}
		c, err := scanCharge(tx.QueryRow(ctx, `WITH att AS (
				UPDATE charge_attempts SET status = 'succeeded', bank_result = $2, bank_txn_no = $3, finished_at = $4
				WHERE order_no = $1 AND status NOT IN ('succeeded', 'failed') RETURNING charge_id)
			UPDATE charges SET status = 'succeeded', bank_reference = $3, failure_code = NULL,
				next_attempt_at = NULL, updated_at = $4
			WHERE id = (SELECT charge_id FROM att) RETURNING `+chargeCols,
			a.OrderNo, nullString(r.Code), nullString(r.BankTxnNo), now))
		if errors.Is(err, ErrNotFound) {
			// Settled already (a callback or query won the race).
			cur, err := getAttempt(ctx, tx, a.MerchantID, a.OrderNo, false)
			if err == nil && cur.Status != AttemptSucceeded {
				s.log.Error("bank answer contradicts a settled attempt", "order_no", a.OrderNo, "bank", a.BankCode,
					"settled", cur.Status, "answer", status, "source", source)
			}
			return false, err
		}
		if err != nil {
			return false, err
		}
		return false, s.cfg.Emit(ctx, tx, a.MerchantID, "charge.succeeded", chargeEvent(c))
	}
	cur, err := getAttempt(ctx, tx, a.MerchantID, a.OrderNo, true)
	if err != nil {
		return false, err
	}
	if final(cur.Status) {
		if final(status) && status != cur.Status {
			s.log.Error("bank answer contradicts a settled attempt", "order_no", a.OrderNo, "bank", a.BankCode,
				"settled", cur.Status, "answer", status, "source", source)
		}
		return false, nil
	}
	if status == AttemptUnknown {
		if cur.Status == AttemptUnknown {
			return true, nil
		}
		if _, err := tx.Exec(ctx, `UPDATE charge_attempts SET status = 'unknown' WHERE order_no = $1`, a.OrderNo); err != nil {
			return false, err
		}
		_, err := tx.Exec(ctx, `UPDATE charges SET status = 'unknown', updated_at = $2 WHERE id = $1`, a.ChargeID, now)
		if err == nil {
			s.log.Info("charge outcome unknown; settling by query", "order_no", a.OrderNo, "bank", a.BankCode,
				"source", source, "cause", errString(r.Cause))
		}
		return true, err
	}
	// A failure counts on the bank day it happened (the card's daily cap),
	// which may be later than the day the attempt was claimed.
	if _, err := tx.Exec(ctx, `UPDATE charge_attempts SET status = $2, failure_code = $3, bank_result = $4,
		bank_txn_no = $5, finished_at = $6, bank_day = $7 WHERE order_no = $1`,
		a.OrderNo, status, nullString(r.Reason), nullString(r.Code), nullString(r.BankTxnNo), now, bankDay(now)); err != nil {
		return false, err
	}
	c, m, err := chargeAndMandate(ctx, tx, a.MerchantID, a.ChargeID)
	if err != nil {
		return false, err
	}
	c.UpdatedAt, c.NextAttemptAt = now, time.Time{}
	var event string
	switch {
	case r.Outcome == bankadapters.OutcomeRetryableDecline && (m.Status == StatusActive || m.Status == StatusCompleted):
		days, err := s.retryDays(ctx, tx, a.MerchantID)
		if err != nil {
			return false, err
		}
		c.FailureCode = r.Reason
		if c.Retries < len(days) {
			c.Status, event = ChargeRetryScheduled, "charge.retry_scheduled"
			c.NextAttemptAt = m.Schedule.DueAt(c.ChargeDate.AddDate(0, 0, days[c.Retries]))
			c.Retries++
		} else {
			c.Status, event = ChargeFailed, "charge.failed"
		}
	default:
		c.Status, c.FailureCode, event = ChargeFailed, r.Reason, "charge.failed"
	}
	if _, err := tx.Exec(ctx, `UPDATE charges SET status = $2, failure_code = $3, bank_reference = $4,
		next_attempt_at = $5, retries = $6, updated_at = $7 WHERE id = $1`,
		c.ID, c.Status, nullString(c.FailureCode), nullString(c.BankReference), nullDate(c.NextAttemptAt), c.Retries,
		now); err != nil {
		return false, err
	}
	if err := s.cfg.Emit(ctx, tx, a.MerchantID, event, chargeEvent(c)); err != nil {
		return false, err
	}
	// Only declines reach here: success and unknown returned above.
	if err := s.auditTx(ctx, tx, a.MerchantID, "charge.decline", c.ID, "failed", map[string]any{
		"order_no": a.OrderNo, "bank": a.BankCode, "reason": r.Reason, "bank_code": r.Code, "source": source}); err != nil {
		return false, err
	}
	if r.Outcome == bankadapters.OutcomeHardDecline {
		return false, s.suspend(ctx, tx, m, r.Reason, now)
	}
	return false, nil
}

// suspend acts on a hard decline: a frozen card or a conflicting order
// pauses the mandate (it may be resumed); a gone agreement or closed card
// cancels it, through the card's revocation (revokeIfGone).
func (s *Service) suspend(ctx context.Context, tx pgx.Tx, m mandateRow, reason string, now time.Time) error {
	if m.Status != StatusActive {
		return nil
	}
	switch reason {
	case bankadapters.ReasonAgreementInvalid, bankadapters.ReasonCardClosed:
		return nil // the card's revocation cancels it
	}
	m.Status, m.StatusReason, m.UpdatedAt = StatusPaused, reason, now
	return s.record(ctx, tx, m, "mandate.suspend", "mandate.paused", now)
}

func (s *Service) retryDays(ctx context.Context, q querier, merchantID string) ([]int, error) {
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

func chargeAndMandate(ctx context.Context, tx pgx.Tx, merchantID, chargeID string) (Charge, mandateRow, error) {
	c, err := scanCharge(tx.QueryRow(ctx, `SELECT `+chargeCols+` FROM charges WHERE merchant_id = $1 AND id = $2`,
		merchantID, chargeID))
	if err != nil {
		return c, mandateRow{}, err
	}
	m, err := getMandate(ctx, tx, merchantID, c.MandateID, true)
	return c, m, err
}

func attemptStatus(r bankadapters.ChargeResult) string {
	switch r.Status {
	case bankadapters.ChargeSucceeded:
		return AttemptSucceeded
	case bankadapters.ChargeFailed:
		return AttemptFailed
	}
	return AttemptUnknown
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// limiters bound the calls to each bank across this process's workers.
type limiters struct {
	rate map[string]*rate.Limiter
	sem  map[string]chan struct{}
}

func newLimiters(limits map[string]Limit) *limiters {
	l := &limiters{rate: map[string]*rate.Limiter{}, sem: map[string]chan struct{}{}}
	for code, lim := range limits {
		if lim.PerSecond > 0 {
			l.rate[code] = rate.NewLimiter(rate.Limit(lim.PerSecond), max(1, lim.Burst))
		}
		if lim.Concurrent > 0 {
			l.sem[code] = make(chan struct{}, lim.Concurrent)
		}
	}
	return l
}

// acquire waits for a call slot at bank code; release frees it.
func (l *limiters) acquire(ctx context.Context, code string) (release func(), err error) {
	if sem := l.sem[code]; sem != nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		release = func() { <-sem }
	} else {
		release = func() {}
	}
	if r := l.rate[code]; r != nil {
		if err := r.Wait(ctx); err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}
