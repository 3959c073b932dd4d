package mandate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// The refund worker path (STYLE.md "Flow"): refunds are created one at a
// time, each joining the batch of a River job of its bank that has not
// started (CreateRefund, refundJob), and are sent and settled in batches
// as charges are. The job claims its batch (sent_at, committed), sends
// each refund under its refund number outside any transaction, and
// applies the answers in a second transaction. The crash window is
// between the claim's commit and the answers': a job run again asks the
// bank about every refund it claimed (QueryRefund, the same number) and
// sends one only if the bank answers ErrOrderNotFound. An answer that
// leaves the outcome open (processing, lost, a bank system error) starts
// a chain of query jobs (Config.QueryBackoff); an async bank's callback
// (ApplyRefundResult) and the statement (Reconcile) settle it too, in any
// order.

// RefundArgs is a job that sends a batch of refunds to their bank and
// settles them (the refunds written with the job's id, refunds.job_id),
// or, with Query, asks the bank about one whose outcome is open.
type RefundArgs struct {
	// IDs: the refund that opened the batch (the batch is the job's
	// refunds); with Query, the refund asked about.
	IDs []string `json:"ids"`
	// Query: the job asks the bank about IDs' one refund, whose outcome
	// is unknown, for the Try-th time (from 0), and asks again later
	// (Config.QueryBackoff) while it stays unknown.
	Query bool `json:"query,omitempty"`
	Try   int  `json:"try,omitempty"`
}

// Kind implements river.JobArgs.
func (RefundArgs) Kind() string { return "mandate_refund" }

// RefundWorker sends pending refunds to their bank and settles their
// answers.
type RefundWorker struct {
	river.WorkerDefaults[RefundArgs]
	Service *Service
}

// Work implements river.Worker. A job that runs again (after a crash or an
// error) asks the bank about each refund it claimed before it sends it.
func (w *RefundWorker) Work(ctx context.Context, job *river.Job[RefundArgs]) error {
	if job.Args.Query {
		return w.Service.queryRefund(ctx, job.Args.IDs, job.Args.Try)
	}
	return w.Service.sendRefunds(ctx, job.ID, job.Attempt > 1)
}

// Timeout implements river.Worker: it bounds a batch's bank calls, as
// ChargeWorker's does; answers had are settled past it.
func (w *RefundWorker) Timeout(*river.Job[RefundArgs]) time.Duration { return 30 * time.Second }

// refunding is one refund of a job on its way to the bank.
type refunding struct {
	row refundRow
	// ask: the refund may be at the bank already (its job ran before):
	// query before sending.
	ask bool
	// r is the answer to apply, from source: "refund", "query",
	// "callback" or "statement"; "" while there is none.
	r      bankadapters.RefundResult
	source string
	// err: the refund could not be sent (nothing reached the bank): it
	// stays claimed, and the job runs again and asks the bank first.
	err error
}

// sendRefunds claims the job's batch, sends its refunds concurrently, and
// settles the answers in one transaction. rerun: the job ran before, so
// what it claimed then may be at the bank: each is queried first.
func (s *Service) sendRefunds(ctx context.Context, job int64, rerun bool) error {
	var list []*refunding
	if rerun {
		mine, err := jobRefunds(ctx, s.pool, job)
		if err != nil {
			return fmt.Errorf("refund job: %w", err)
		}
		for _, r := range mine {
			list = append(list, &refunding{row: r, ask: true})
		}
	}
	var claimed []refundRow
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		claimed, err = claimRefunds(ctx, tx, job, s.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("refund job: claim: %w", err)
	}
	for _, r := range claimed {
		list = append(list, &refunding{row: r})
	}
	if len(list) == 0 {
		return nil // settled already (a callback, the statement)
	}
	each(list, func(x *refunding) { s.callBank(ctx, x) })
	var answered []*refunding
	for _, x := range list {
		if x.source != "" {
			answered = append(answered, x)
		}
	}
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := s.settleRefunds(settleCtx, answered); err != nil {
		return err
	}
	var errs []error
	for _, x := range list {
		if x.err != nil {
			errs = append(errs, fmt.Errorf("refund %s: %w", x.row.RefundNo, x.err))
		}
	}
	return errors.Join(errs...)
}

// callBank gets x's answer from its bank: the answer to a query first if
// x may be there already, else (or if the bank never got it) the answer
// to the refund sent under its number. An answer it cannot get is
// unknown; a call that never left quickpay is x.err.
func (s *Service) callBank(ctx context.Context, x *refunding) {
	bank, ok := s.cfg.Banks.Bank(x.row.BankCode)
	if !ok {
		x.err = fmt.Errorf("no channel to bank %s", x.row.BankCode)
		return
	}
	if x.ask {
		r, err := bank.QueryRefund(ctx, x.row.RefundNo)
		switch {
		case errors.Is(err, bankadapters.ErrOrderNotFound):
			// The bank never got it: send it, under the same number.
		case errors.Is(err, bankadapters.ErrNotSent):
			x.err = err
			return
		case err != nil:
			x.r, x.source = bankadapters.UnknownRefund(refundRequest(x.row, ""), err), "query"
			return
		default:
			x.r, x.source = r, "query"
			return
		}
	}
	r, err := bank.Refund(ctx, refundRequest(x.row, s.cfg.NotifyURL(x.row.BankCode)))
	if err != nil {
		x.err = err // never sent: the claim stays, and a rerun asks first
		return
	}
	x.r, x.source = r, "refund"
}

func refundRequest(r refundRow, notifyURL string) bankadapters.RefundRequest {
	return bankadapters.RefundRequest{RefundNo: r.RefundNo, OrderNo: r.OrderNo, Amount: r.Amount, Currency: r.Currency,
		NotifyURL: notifyURL}
}

// queryRefund asks the bank about a refund whose outcome is unknown: try
// counts from 0 along Config.QueryBackoff.
func (s *Service) queryRefund(ctx context.Context, ids []string, try int) error {
	if len(ids) != 1 {
		return fmt.Errorf("refund query job: %d refund ids in its args, want 1", len(ids))
	}
	rows, err := refundsByID(ctx, s.pool, ids)
	if err != nil {
		return fmt.Errorf("refund query %s: %w", ids[0], err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("refund query %s: %w", ids[0], ErrNotFound)
	}
	rf := rows[0]
	if rf.Status != RefundPending {
		return nil
	}
	x := &refunding{row: rf, ask: true}
	s.callBank(ctx, x)
	if x.err != nil {
		// Neither the query nor a re-send left quickpay: this try learnt
		// nothing and is not counted. River runs the job again.
		return fmt.Errorf("refund query %s: %w", rf.RefundNo, x.err)
	}
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	err = db.InTx(settleCtx, s.pool, func(tx pgx.Tx) error {
		u := s.refundTx(settleCtx, tx)
		open, err := u.apply([]*refunding{x})
		if err != nil {
			return err
		}
		// Still open, on a chain this job belongs to (an answer that
		// opened the outcome just now started a chain of its own: u.jobs).
		if open[rf.ID] && len(u.jobs) == 0 {
			if err := s.nextRefundQuery(settleCtx, tx, rf, try); err != nil {
				return err
			}
		}
		return u.commit()
	})
	if err != nil {
		return fmt.Errorf("refund query %s: %w", rf.RefundNo, err)
	}
	return nil
}

// nextRefundQuery counts query try of a refund still open and schedules
// the next one. A try counted already (its job ran again after
// committing) schedules nothing: one chain per refund.
func (s *Service) nextRefundQuery(ctx context.Context, tx pgx.Tx, rf refundRow, try int) error {
	var next *time.Time
	if try+1 < len(s.cfg.QueryBackoff) {
		at := s.now().Add(s.cfg.QueryBackoff[try+1])
		next = &at
	}
	counted, err := countRefundQuery(ctx, tx, rf.ID, try, next)
	if err != nil || !counted {
		if err == nil {
			s.log.Info("refund query of a try already counted; its chain goes on elsewhere", "refund_no", rf.RefundNo, "try", try)
		}
		return err
	}
	if next == nil {
		s.log.Warn("refund outcome still unknown after every query; the daily statement settles it",
			"refund_no", rf.RefundNo, "bank", rf.BankCode)
		return nil
	}
	_, err = s.cfg.Jobs.InsertTx(ctx, tx, RefundArgs{IDs: []string{rf.ID}, Query: true, Try: try + 1},
		&river.InsertOpts{Queue: s.cfg.Queue, ScheduledAt: time.Now().Add(s.cfg.QueryBackoff[try+1])})
	return err
}

// settleRefunds applies answers in one transaction. If that fails, each
// is applied in its own, so that one that cannot be applied holds back no
// other.
func (s *Service) settleRefunds(ctx context.Context, list []*refunding) error {
	if len(list) == 0 {
		return nil
	}
	settle := func(list []*refunding) error {
		return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
			u := s.refundTx(ctx, tx)
			if _, err := u.apply(list); err != nil {
				return err
			}
			return u.commit()
		})
	}
	err := settle(list)
	if err == nil || len(list) < 2 {
		if err != nil {
			return fmt.Errorf("settle refund: %w", err)
		}
		return nil
	}
	s.log.Warn("settling a batch of refunds failed; settling them one by one", "refunds", len(list), "err", err)
	var errs []error
	for _, x := range list {
		if err := settle([]*refunding{x}); err != nil {
			errs = append(errs, fmt.Errorf("settle refund %s: %w", x.row.RefundNo, err))
		}
	}
	return errors.Join(errs...)
}

// refundAnswer is one unit of work: bank answers applied to refunds and
// their charges in one transaction, with the events, audit rows and query
// jobs they call for, written by commit.
type refundAnswer struct {
	s      *Service
	ctx    context.Context // holds the audit collector
	tx     pgx.Tx
	now    time.Time
	audit  *audit.Collector
	events []webhooks.Pending
	jobs   []river.InsertManyParams
}

func (s *Service) refundTx(ctx context.Context, tx pgx.Tx) *refundAnswer {
	actx, col := audit.WithCollector(ctx)
	return &refundAnswer{s: s, ctx: actx, tx: tx, now: s.now(), audit: col}
}

// refundOutcome is what an answer makes of a pending refund: succeeded,
// failed, or pending (still open: settle by query).
func refundOutcome(r bankadapters.RefundResult) (RefundStatus, error) {
	switch r.Status {
	case bankadapters.ChargeSucceeded:
		return RefundSucceeded, nil
	case bankadapters.ChargeFailed:
		return RefundFailed, nil
	case bankadapters.ChargeProcessing, bankadapters.ChargeUnknown:
		return RefundPending, nil
	default:
		return "", fmt.Errorf("bank refund status %q", r.Status)
	}
}

// apply writes the answers of list to their refunds, under their locks,
// and their charges' sums, and returns the refunds still open. A refund
// settled already keeps its outcome; a contrary answer is logged. A
// success for another amount than the refund's is not booked: the refund
// stays pending for operators (audited, logged), and reconciliation
// reports the bank's amount.
func (u *refundAnswer) apply(list []*refunding) (map[string]bool, error) {
	ids := make([]string, 0, len(list))
	for _, x := range list {
		ids = append(ids, x.row.ID)
	}
	rows, err := lockRefunds(u.ctx, u.tx, ids)
	if err != nil {
		return nil, err
	}
	cur := make(map[string]refundRow, len(rows))
	for _, r := range rows {
		cur[r.ID] = r
	}
	var succeeded, failed refundOutcomes
	var opened, chargeIDs []string
	open := map[string]bool{}
	for _, x := range list {
		rf, ok := cur[x.row.ID]
		if !ok {
			return nil, fmt.Errorf("refund %s: %w", x.row.ID, ErrNotFound)
		}
		outcome, err := refundOutcome(x.r)
		if err != nil {
			return nil, fmt.Errorf("refund %s: %w", rf.RefundNo, err)
		}
		if rf.Status != RefundPending {
			if outcome != RefundPending && outcome != rf.Status {
				u.s.log.Error("bank answer contradicts a settled refund", "refund_no", rf.RefundNo, "bank", rf.BankCode,
					"settled", rf.Status, "answer", outcome, "source", x.source)
			}
			continue
		}
		finished := u.now
		if !x.r.FinishedAt.IsZero() {
			finished = x.r.FinishedAt.UTC().Truncate(time.Microsecond)
		}
		switch outcome {
		case RefundSucceeded:
			if x.r.Amount != 0 && x.r.Amount != rf.Amount {
				open[rf.ID] = true
				u.s.log.Error("bank reported a refund for another amount; the refund is held for operators",
					"refund_no", rf.RefundNo, "bank", rf.BankCode, "ours", rf.Amount, "bank_amount", x.r.Amount, "source", x.source)
				if err := u.auditRefund(rf, "refund.amount_mismatch", "held", x, map[string]any{"bank_amount": x.r.Amount}); err != nil {
					return nil, err
				}
				continue
			}
			if x.r.OrderNo != "" && x.r.OrderNo != rf.OrderNo {
				// Our refund number, another debit: not the refund asked for.
				open[rf.ID] = true
				u.s.log.Error("bank reported a refund of another debit; the refund is held for operators",
					"refund_no", rf.RefundNo, "bank", rf.BankCode, "ours", rf.OrderNo, "bank_order", x.r.OrderNo, "source", x.source)
				if err := u.auditRefund(rf, "refund.order_mismatch", "held", x, map[string]any{"bank_order_no": x.r.OrderNo}); err != nil {
					return nil, err
				}
				continue
			}
			rf.Status, rf.BankReference, rf.FinishedAt = RefundSucceeded, x.r.BankTxnNo, finished
			succeeded.add(rf, x.r.Code, x.r.BankTxnNo, "", finished)
			u.events = append(u.events, webhooks.Pending{MerchantID: rf.MerchantID, Type: "refund.succeeded", Data: refundEvent(rf.Refund)})
			if err := u.auditRefund(rf, "refund.settle", audit.OutcomeOK, x, nil); err != nil {
				return nil, err
			}
		case RefundFailed:
			reason := x.r.Reason
			if reason == "" {
				reason = "declined"
			}
			rf.Status, rf.FailureCode, rf.BankReference, rf.FinishedAt = RefundFailed, reason, x.r.BankTxnNo, finished
			failed.add(rf, x.r.Code, x.r.BankTxnNo, reason, finished)
			u.events = append(u.events, webhooks.Pending{MerchantID: rf.MerchantID, Type: "refund.failed", Data: refundEvent(rf.Refund)})
			if err := u.auditRefund(rf, "refund.decline", audit.OutcomeFailed, x, map[string]any{"reason": reason}); err != nil {
				return nil, err
			}
		case RefundPending:
			open[rf.ID] = true
			if rf.Unknown {
				continue
			}
			// Only the answer that opened the outcome starts its chain.
			rf.Unknown = true
			opened = append(opened, rf.ID)
			u.jobs = append(u.jobs, river.InsertManyParams{Args: RefundArgs{IDs: []string{rf.ID}, Query: true},
				InsertOpts: &river.InsertOpts{Queue: u.s.cfg.Queue, ScheduledAt: time.Now().Add(u.s.cfg.QueryBackoff[0])}})
			u.s.log.Info("refund outcome unknown; settling by query", "refund_no", rf.RefundNo, "bank", rf.BankCode,
				"source", x.source, "cause", errString(x.r.Cause))
		default:
			panic(fmt.Sprintf("mandate: refund outcome %q", outcome))
		}
		if rf.Status != RefundPending {
			chargeIDs = append(chargeIDs, rf.ChargeID)
		}
		cur[rf.ID] = rf
	}
	if len(chargeIDs) > 0 {
		slices.Sort(chargeIDs)
		if err := lockCharges(u.ctx, u.tx, slices.Compact(chargeIDs)); err != nil {
			return nil, err
		}
	}
	if err := succeeded.write(u.ctx, u.tx, RefundSucceeded, u.now); err != nil {
		return nil, err
	}
	if err := failed.write(u.ctx, u.tx, RefundFailed, u.now); err != nil {
		return nil, err
	}
	if len(opened) > 0 {
		if err := markRefundsUnknown(u.ctx, u.tx, opened, u.now, u.now.Add(u.s.cfg.QueryBackoff[0])); err != nil {
			return nil, err
		}
	}
	return open, nil
}

func (u *refundAnswer) auditRefund(rf refundRow, action, outcome string, x *refunding, more map[string]any) error {
	d := map[string]any{"outcome": outcome, "charge": rf.ChargeID, "refund_no": rf.RefundNo, "bank": rf.BankCode,
		"amount": rf.Amount, "bank_code": x.r.Code, "source": x.source}
	for k, v := range more {
		d[k] = v
	}
	return audit.Write(u.ctx, nil, audit.Entry{MerchantID: rf.MerchantID, Actor: "worker:refunds", Action: action,
		Subject: rf.ID, Details: d})
}

// commit writes what apply collected: the events, the audit rows, the
// query jobs.
func (u *refundAnswer) commit() error {
	if len(u.events) > 0 {
		if err := u.s.cfg.Emit(u.ctx, u.tx, u.events); err != nil {
			return err
		}
	}
	if err := u.audit.Flush(u.ctx, u.tx); err != nil {
		return err
	}
	if len(u.jobs) > 0 {
		if _, err := u.s.cfg.Jobs.InsertManyFastTx(u.ctx, u.tx, u.jobs); err != nil {
			return err
		}
	}
	return nil
}

// each runs f on each of list at once and waits for all: a job's bank
// calls. A job's list is bounded (Config.JobBatch, Config.RefundBatch) and
// each bank call waits for the bank's limits.
func each[T any](list []T, f func(T)) {
	if len(list) == 1 {
		f(list[0])
		return
	}
	var wg sync.WaitGroup
	for _, x := range list {
		wg.Go(func() { f(x) })
	}
	wg.Wait()
}
