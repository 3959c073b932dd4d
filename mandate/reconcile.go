package mandate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/db"
)

// Mismatch kinds.
const (
	MismatchUnknownDebit = "unknown_debit"   // the bank debited an order quickpay does not know
	MismatchMissingDebit = "missing_debit"   // quickpay marked an attempt succeeded the bank never made
	MismatchAmount       = "amount_mismatch" // both know the debit, with different amounts
	// MismatchUnknownRefund: the bank made a refund quickpay does not know,
	// or holds as failed.
	MismatchUnknownRefund = "unknown_refund"
	// MismatchMissingRefund: quickpay holds a refund succeeded on a day
	// whose statement lacks it.
	MismatchMissingRefund = "missing_refund"
	// MismatchRefundAmount: both know the refund, with different amounts.
	MismatchRefundAmount  = "refund_amount_mismatch"
	reconcileSource       = "statement"
	reasonNotInStatement  = "not_in_statement"
	reconcileLookbackDays = 1 // attempts made the day before may settle on the statement's day
	// orphanAge is how long after its claim an attempt is left to its
	// jobs, however it looks (adoptOrphans; an unknown one's query chain
	// gets this much beyond its backoff, Reconcile).
	orphanAge = time.Hour
)

// Mismatch is one difference between a bank's statement and quickpay.
type Mismatch struct {
	Kind       string
	OrderNo    string // a debit's order number, or a refund's refund number
	MerchantID string // empty for an unknown debit or refund
	BankAmount int64
	OurAmount  int64
}

// Reconciliation is what one run found.
type Reconciliation struct {
	RunID    int64
	BankCode string
	Date     time.Time
	// Final: the bank's statement was final (its day had closed): it will
	// list nothing more.
	Final          bool
	Entries        int // debits on the statement
	Matched        int // statement debits quickpay had as succeeded, same amount
	Settled        int // attempts left unknown that the statement settled
	Refunds        int // refunds on the statement
	RefundsMatched int // statement refunds quickpay had as succeeded, same amount
	RefundsSettled int // pending refunds the statement (or, absent from a final one, a query) settled
	Mismatches     []Mismatch
}

// Reconcile compares a bank's daily statement (date is a bank day,
// Asia/Shanghai) with quickpay's attempts and refunds at that bank, and
// records the run and its mismatches. Open attempts on the statement are
// settled as succeeded; attempts still unknown that the day's statement
// lacks are failed if the bank's query does not know them either.
// Attempts still processing (their job has not had the bank's answer) are
// left to the job, unless the job has ended without settling them
// (adoptOrphans). Refunds likewise (reconcileRefunds): pending ones on the
// statement succeed; pending ones a final statement lacks are settled by
// a query, failed if the bank never got them; one never sent whose job
// has ended gets a new job.
func (s *Service) Reconcile(ctx context.Context, bankCode string, date time.Time) (Reconciliation, error) {
	rec := Reconciliation{BankCode: bankCode, Date: date}
	bank, ok := s.cfg.Banks.Bank(bankCode)
	if !ok {
		return rec, fmt.Errorf("reconcile: no channel to bank %s", bankCode)
	}
	st, ok := bank.(bankadapters.Statementer)
	if !ok {
		return rec, fmt.Errorf("reconcile: bank %s serves no statements", bankCode)
	}
	stmt, err := st.Statement(ctx, date)
	if err != nil {
		return rec, fmt.Errorf("reconcile: statement of %s for %s: %w", bankCode, date.Format(time.DateOnly), err)
	}
	rec.Final = stmt.Final
	var entries, refunds []bankadapters.StatementEntry
	for _, e := range stmt.Entries {
		switch e.Type {
		case bankadapters.EntryDebit, "": // an entry without a type is a debit (docs/banksim.md)
			entries = append(entries, e)
		case bankadapters.EntryRefund:
			refunds = append(refunds, e)
		default:
			return rec, fmt.Errorf("reconcile: statement of %s for %s: entry %s of type %q",
				bankCode, date.Format(time.DateOnly), e.OrderNo, e.Type)
		}
	}
	rec.Entries = len(entries)
	if err := s.adoptOrphans(ctx, bankCode); err != nil {
		return rec, err
	}

	// Our attempts at this bank that the statement may name: made that day
	// or the day before (settled late), and every attempt still unknown.
	known, err := statementAttempts(ctx, s.pool, bankCode, date.AddDate(0, 0, -reconcileLookbackDays), date)
	if err != nil {
		return rec, err
	}
	// An unknown attempt claimed before chainEnd has outlived any query
	// chain: with none live for it (River discarded its job, say), it is
	// settled here whatever its queries say.
	chainEnd := s.now().Add(-orphanAge)
	for _, d := range s.cfg.QueryBackoff {
		chainEnd = chainEnd.Add(-d)
	}
	onStatement := map[string]bool{}
	for _, e := range entries {
		onStatement[e.OrderNo] = true
		o, ok := known[e.OrderNo]
		if !ok {
			// Maybe an older attempt of ours, settled long after.
			var err error
			o, err = statementAttempt(ctx, s.pool, bankCode, e.OrderNo)
			if errors.Is(err, ErrNotFound) {
				rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchUnknownDebit, OrderNo: e.OrderNo, BankAmount: e.Amount})
				continue
			} else if err != nil {
				return rec, err
			}
		}
		if o.status == AttemptUnknown || o.status == AttemptProcessing {
			if err := s.settleFromStatement(ctx, o.merchantID, e.OrderNo, bankadapters.ChargeResult{
				OrderNo: e.OrderNo, Status: bankadapters.ChargeSucceeded, Outcome: bankadapters.OutcomeSuccess,
				Amount: e.Amount, BankTxnNo: e.BankTxnNo, FinishedAt: e.FinishedAt}); err != nil {
				return rec, err
			}
			rec.Settled++
			o.status = AttemptSucceeded
		}
		switch {
		case o.status == AttemptAmountMismatch:
			// Held when the bank answered (mismatch.go); the statement
			// names the amount it debited.
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchAmount, OrderNo: e.OrderNo,
				MerchantID: o.merchantID, BankAmount: e.Amount, OurAmount: o.amount})
		case o.status != AttemptSucceeded:
			// The bank debited an order we hold as failed: money we do not know we have.
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchUnknownDebit, OrderNo: e.OrderNo,
				MerchantID: o.merchantID, BankAmount: e.Amount, OurAmount: o.amount})
		case o.amount != e.Amount:
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchAmount, OrderNo: e.OrderNo,
				MerchantID: o.merchantID, BankAmount: e.Amount, OurAmount: o.amount})
		default:
			rec.Matched++
		}
	}
	for no, o := range known {
		if onStatement[no] {
			continue
		}
		switch {
		case (o.status == AttemptSucceeded || o.status == AttemptAmountMismatch) && o.day.Equal(date):
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchMissingDebit, OrderNo: no,
				MerchantID: o.merchantID, OurAmount: o.amount})
		case o.status == AttemptUnknown && !o.day.After(date) &&
			(o.queries >= len(s.cfg.QueryBackoff) || o.claimed.Before(chainEnd)):
			// A query job still live for it (an operator's, or one River
			// runs again) may find nothing and re-send under its number:
			// failing it now would race that debit.
			if live, err := s.queryLive(ctx, no); err != nil {
				return rec, err
			} else if live {
				continue
			}
			// Not debited on its day. Ask once more: the bank may still be
			// settling it; an order it never got failed. An attempt still
			// processing is its job's: the job may be about to send it, and
			// failing it now would retry the charge under a new order
			// number after this one debits (a rerun job queries first).
			// Likewise an unknown one whose query chain still runs: a query
			// that finds nothing re-sends under the same number.
			if err := s.settleAbsent(ctx, bank, o.merchantID, no); err != nil {
				return rec, err
			}
			rec.Settled++
		}
	}
	if err := s.reconcileRefunds(ctx, bank, date, stmt.Final, refunds, &rec); err != nil {
		return rec, err
	}
	return rec, s.recordRun(ctx, &rec)
}

// reconcileRefunds compares the statement's refunds with quickpay's
// refunds at the bank: those finished on the statement's day or the day
// before (settled late), and every one still pending. A pending refund on
// the statement succeeds (for the statement's amount only if it is the
// refund's: another is held, as a callback's would be). A pending refund
// a final statement lacks, claimed for the bank long enough ago that no
// job is left on it, is settled by one last query, and failed if the bank
// never got it. A refund not yet claimed is its job's, or, once that job
// has ended without claiming it, a new job's (adoptRefund).
func (s *Service) reconcileRefunds(ctx context.Context, bank bankadapters.Bank, date time.Time, final bool,
	entries []bankadapters.StatementEntry, rec *Reconciliation) error {
	bankCode := rec.BankCode
	rec.Refunds = len(entries)
	from := dayStart(date.AddDate(0, 0, -reconcileLookbackDays))
	known, err := statementRefunds(ctx, s.pool, bankCode, from, dayStart(date.AddDate(0, 0, 1)))
	if err != nil {
		return err
	}
	onStatement := map[string]bool{}
	for _, e := range entries {
		onStatement[e.OrderNo] = true
		rf, ok := known[e.OrderNo]
		if !ok {
			// Maybe an older refund of ours, settled long after.
			var err error
			rf, err = getBankRefund(ctx, s.pool, bankCode, e.OrderNo)
			if errors.Is(err, ErrNotFound) {
				rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchUnknownRefund, OrderNo: e.OrderNo,
					BankAmount: e.Amount})
				continue
			} else if err != nil {
				return err
			}
		}
		if rf.Status == RefundPending && rf.Amount == e.Amount {
			if err := s.settleRefunds(ctx, []*refunding{{row: rf, source: reconcileSource, r: bankadapters.RefundResult{
				RefundNo: e.OrderNo, OrderNo: e.RefundOf, Status: bankadapters.ChargeSucceeded,
				Outcome: bankadapters.OutcomeSuccess, Amount: e.Amount, BankTxnNo: e.BankTxnNo,
				FinishedAt: e.FinishedAt}}}); err != nil {
				return err
			}
			rec.RefundsSettled++
			rf.Status = RefundSucceeded
		}
		switch {
		case rf.Amount != e.Amount:
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchRefundAmount, OrderNo: e.OrderNo,
				MerchantID: rf.MerchantID, BankAmount: e.Amount, OurAmount: rf.Amount})
		case rf.Status != RefundSucceeded:
			// The bank refunded what we hold as failed: money returned
			// that the charge's sums do not count.
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchUnknownRefund, OrderNo: e.OrderNo,
				MerchantID: rf.MerchantID, BankAmount: e.Amount, OurAmount: rf.Amount})
		default:
			rec.RefundsMatched++
		}
	}
	// A refund claimed before chainEnd has outlived its job and any query
	// chain of its own.
	chainEnd := s.now().Add(-orphanAge)
	for _, d := range s.cfg.QueryBackoff {
		chainEnd = chainEnd.Add(-d)
	}
	for no, rf := range known {
		if onStatement[no] {
			continue
		}
		switch {
		case rf.Status == RefundSucceeded && bankDay(rf.FinishedAt).Equal(date):
			rec.Mismatches = append(rec.Mismatches, Mismatch{Kind: MismatchMissingRefund, OrderNo: no,
				MerchantID: rf.MerchantID, OurAmount: rf.Amount})
		case rf.Status == RefundPending && final && !rf.SentAt.IsZero() && !bankDay(rf.SentAt).After(date) &&
			(rf.Queries >= len(s.cfg.QueryBackoff) || rf.SentAt.Before(chainEnd)):
			// A job still on it (its sender run again, a query) may find
			// nothing and send it under its number: failing it now would
			// race that refund.
			live, err := refundJobLive(ctx, s.pool, rf.ID, rf.JobID, s.now().Add(-orphanAge))
			if err != nil {
				return err
			}
			if live {
				continue
			}
			settled, err := s.settleAbsentRefund(ctx, bank, rf)
			if err != nil {
				return err
			}
			if settled {
				rec.RefundsSettled++
			}
		case rf.Status == RefundPending && rf.SentAt.IsZero() && rf.CreatedAt.Before(chainEnd):
			// Never sent: its job ended without claiming it (River
			// discarded or cancelled it). No bank has it; a new job sends
			// it.
			live, err := refundJobLive(ctx, s.pool, rf.ID, rf.JobID, s.now().Add(-orphanAge))
			if err != nil {
				return err
			}
			if live {
				continue
			}
			if err := s.adoptRefund(ctx, rf); err != nil {
				return err
			}
		}
	}
	return nil
}

// adoptRefund gives a refund never sent, whose job has ended, a new job.
func (s *Service) adoptRefund(ctx context.Context, rf refundRow) error {
	s.log.Warn("refund left unsent by an ended job; a new job sends it", "refund_no", rf.RefundNo, "bank", rf.BankCode)
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		res, err := s.cfg.Jobs.InsertTx(ctx, tx, RefundArgs{IDs: []string{rf.ID}}, &river.InsertOpts{Queue: s.cfg.Queue})
		if err != nil {
			return err
		}
		return moveRefundJob(ctx, tx, rf.ID, rf.JobID, res.Job.ID)
	})
}

// settleAbsentRefund settles a pending refund missing from a final
// statement: by the bank's answer to a query, or failed if the bank never
// got it. False if the bank is still settling it.
func (s *Service) settleAbsentRefund(ctx context.Context, bank bankadapters.Bank, rf refundRow) (bool, error) {
	r, err := bank.QueryRefund(ctx, rf.RefundNo)
	switch {
	case errors.Is(err, bankadapters.ErrOrderNotFound):
		r = bankadapters.RefundResult{RefundNo: rf.RefundNo, Status: bankadapters.ChargeFailed,
			Outcome: bankadapters.OutcomeHardDecline, Reason: reasonNotInStatement}
	case err != nil:
		return false, fmt.Errorf("reconcile: query refund %s: %w", rf.RefundNo, err)
	case r.Status != bankadapters.ChargeSucceeded && r.Status != bankadapters.ChargeFailed:
		return false, nil // still settling at the bank: a later run settles it
	}
	return true, s.settleRefunds(ctx, []*refunding{{row: rf, r: r, source: reconcileSource}})
}

// dayStart is the instant bank day date (a mandate date) begins.
func dayStart(date time.Time) time.Time {
	return time.Date(date.Year(), date.Month(), date.Day(), 0, 0, 0, 0, bankZone).UTC()
}

// settleFromStatement applies a statement's debit to an open attempt.
func (s *Service) settleFromStatement(ctx context.Context, merchantID, orderNo string, r bankadapters.ChargeResult) error {
	a, err := getAttempt(ctx, s.pool, merchantID, orderNo, false)
	if err != nil {
		return err
	}
	return s.settle(ctx, a, r, reconcileSource)
}

// settleAbsent settles an open attempt missing from its day's statement:
// by the bank's answer to a query, or failed if the bank never got it.
func (s *Service) settleAbsent(ctx context.Context, bank bankadapters.Bank, merchantID, orderNo string) error {
	a, err := getAttempt(ctx, s.pool, merchantID, orderNo, false)
	if err != nil {
		return err
	}
	r, err := bank.Query(ctx, orderNo)
	switch {
	case errors.Is(err, bankadapters.ErrOrderNotFound):
		r = bankadapters.ChargeResult{OrderNo: orderNo, Status: bankadapters.ChargeFailed,
			Outcome: bankadapters.OutcomeRetryableDecline, Reason: reasonNotInStatement}
	case err != nil:
		return fmt.Errorf("reconcile: query %s: %w", orderNo, err)
	case r.Status != bankadapters.ChargeSucceeded && r.Status != bankadapters.ChargeFailed:
		return nil // still settling at the bank: a later run settles it
	}
	return s.settle(ctx, a, r, reconcileSource)
}

// queryLive reports whether a query job for the order is waiting or
// running, or ran and ended within orphanAge: a query that found nothing
// re-sends, and a re-send whose job ended without settling it (cancelled
// while the bank had not answered) may not have reached the bank's books yet.
func (s *Service) queryLive(ctx context.Context, orderNo string) (bool, error) {
	return queryJobLive(ctx, s.pool, orderNo, s.now().Add(-orphanAge))
}

// adoptOrphans makes the bank's attempts still processing, claimed over an
// hour ago, whose charge job has ended without settling them (River discarded it after its last
// retry, or it was cancelled or deleted) unknown, with their queries spent.
// No job is left to send or ask about them, so they would stay processing
// for ever, each holding one of its card's daily tries; as unknown ones,
// this run settles them from the statement or by one last query, which
// fails an order the bank never got.
func (s *Service) adoptOrphans(ctx context.Context, bankCode string) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Only attempts claimed a while ago: a month-end run keeps many
		// processing for minutes, each with its live job. The job is found
		// through River's index on args.
		orphans, err := adoptOrphanAttempts(ctx, tx, bankCode, len(s.cfg.QueryBackoff), s.now().Add(-orphanAge))
		if err != nil || len(orphans) == 0 {
			return err
		}
		charges := make([]string, len(orphans))
		for i, o := range orphans {
			s.log.Warn("charge attempt left processing by an ended job; settling it by statement and query",
				"order_no", o.orderNo, "bank", bankCode)
			charges[i] = o.chargeID
		}
		return markChargesUnknown(ctx, tx, charges, s.now())
	})
}

func (s *Service) recordRun(ctx context.Context, rec *Reconciliation) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error { return insertReconciliation(ctx, tx, rec) })
}
