package mandate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// settleTimeout bounds the settling of a job's answers, which runs even
// when the job's own time has run out: an answer had is never dropped for
// want of time.
const settleTimeout = 15 * time.Second

func final(status AttemptStatus) bool {
	return status == AttemptSucceeded || status == AttemptFailed || status == AttemptAmountMismatch
}

// settleAll applies the answers of a job's attempts in one transaction;
// an answer that leaves an attempt unknown schedules its first query. If
// that transaction fails, each answer is applied in its own, so that one
// that cannot be applied holds back no other.
func (s *Service) settleAll(ctx context.Context, list []*sending) error {
	var errs []error
	settled := list
	if err := s.settleTx(ctx, list); err != nil {
		if len(list) < 2 {
			return err
		}
		s.log.Warn("settling a batch failed; settling its answers one by one", "attempts", len(list), "err", err)
		settled = nil
		for _, x := range list {
			if err := s.settleTx(ctx, []*sending{x}); err != nil {
				errs = append(errs, err)
				continue
			}
			settled = append(settled, x)
		}
	}
	for _, x := range settled {
		if x.source != "" {
			errs = append(errs, s.revokeIfGone(ctx, x.a, x.r))
		}
	}
	return errors.Join(errs...)
}

// settleTx applies the answers of list in one transaction.
func (s *Service) settleTx(ctx context.Context, list []*sending) error {
	var queries []river.InsertManyParams
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		queries = queries[:0]
		var succeeded, rest []*sending
		for _, x := range list {
			switch {
			case x.source == "":
			case attemptStatus(x.r) == AttemptSucceeded:
				succeeded = append(succeeded, x)
			default:
				rest = append(rest, x)
			}
		}
		if len(succeeded) > 0 {
			if err := s.applySucceeded(ctx, tx, succeeded); err != nil {
				return err
			}
		}
		for _, x := range rest {
			_, opened, err := s.apply(ctx, tx, x.a, x.r, x.source)
			if err != nil {
				return fmt.Errorf("settle %s: %w", x.a.OrderNo, err)
			}
			// Only the answer that made the attempt unknown starts its
			// query chain: one chain per attempt, whatever copy of the
			// attempt the caller held.
			if opened {
				queries = append(queries, river.InsertManyParams{Args: QueryArgs{OrderNo: x.a.OrderNo, MerchantID: x.a.MerchantID},
					InsertOpts: &river.InsertOpts{Queue: s.cfg.Queue, ScheduledAt: time.Now().Add(s.cfg.QueryBackoff[0])}})
			}
		}
		if len(queries) == 0 {
			return nil
		}
		_, err := s.cfg.Jobs.InsertManyFastTx(ctx, tx, queries)
		return err
	})
	if err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	return nil
}

// settle applies one answer to an attempt (settleAll).
func (s *Service) settle(ctx context.Context, a attemptRow, r bankadapters.ChargeResult, source string) error {
	return s.settleAll(ctx, []*sending{{a: a, r: r, source: source}})
}

// query asks the bank about an unknown attempt: a query job's step.
func (s *Service) query(ctx context.Context, args QueryArgs) error {
	return s.ask(ctx, args, true)
}

// ask asks the bank about an unknown attempt and applies its answer. A
// step of the query chain (chain) also sends an order the bank never got,
// under its number; an operator's ask only reads (SettleByQuery): it
// applies an answer the bank gave, and leaves the attempt as it was when
// the bank gave none or does not know the order (ErrBankHasNoOrder).
func (s *Service) ask(ctx context.Context, args QueryArgs, chain bool) error {
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
	r, err := bank.Query(ctx, args.OrderNo)
	switch {
	case chain:
	case errors.Is(err, bankadapters.ErrOrderNotFound):
		return fmt.Errorf("query %s: %w", args.OrderNo, ErrBankHasNoOrder)
	case err != nil:
		return fmt.Errorf("query %s: %w", args.OrderNo, err)
	}
	if errors.Is(err, bankadapters.ErrOrderNotFound) {
		// The debit never reached the bank: send it now, under the same
		// number, so that a late copy of the first request cannot debit
		// twice.
		x := &sending{a: a}
		if aerr := s.agreements(ctx, []*sending{x}); aerr != nil || x.err != nil {
			return fmt.Errorf("query %s: %w", args.OrderNo, errors.Join(aerr, x.err))
		}
		r, err = s.bankCharge(ctx, bank, a, x.agreement)
	}
	if errors.Is(err, bankadapters.ErrNotSent) {
		// Neither the query nor the re-send left quickpay: this try
		// learnt nothing and is not counted. The job fails and River runs
		// it again; the attempt stays unknown.
		return fmt.Errorf("query %s: %w", args.OrderNo, err)
	}
	if err != nil {
		r = bankadapters.UnknownResult(bankadapters.ChargeRequest{OrderNo: a.OrderNo, Amount: a.Amount}, err)
	}
	// The answer is written even if the job's time ran out while the bank
	// was answering, as a charge job's are.
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	return s.settleQuery(settleCtx, a, r, args.Try)
}

// settleQuery applies a query's answer and, while the outcome stays
// unknown, schedules the next query.
func (s *Service) settleQuery(ctx context.Context, a attemptRow, r bankadapters.ChargeResult, try int) error {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		open, _, err := s.apply(ctx, tx, a, r, "query")
		if err != nil || !open {
			return err
		}
		// Try k counts the k+1st query. A try counted already (its job ran
		// again after committing, or a second chain) schedules nothing:
		// one chain per attempt, and queries says how many were asked, which
		// reconciliation relies on (Reconcile).
		counted, err := countQuery(ctx, tx, a.OrderNo, try)
		if err != nil {
			return err
		}
		if !counted {
			s.log.Info("query of a try already counted; its chain goes on elsewhere", "order_no", a.OrderNo, "try", try)
			return nil
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

// revokeIfGone acts on an answer that says the card's agreement is gone
// (agreement invalid, card closed), as a bank's notice that the agreement
// ended does (EndAgreement): the card is revoked and, in that transaction,
// its mandates cancelled with status_reason card_revoked and their charges
// not yet sent failed (CancelForCard); card.revoked is emitted. Called
// after the answer's transaction commits: the revocation locks the
// mandates. Revoking a revoked card does nothing.
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
	a, err := getBankAttempt(ctx, s.pool, bankCode, r.OrderNo)
	if err != nil {
		return err // ErrNotFound for an order quickpay did not send
	}
	return s.settle(ctx, a, r, "callback")
}

// apply writes a bank answer to the attempt and its charge, under their
// locks, and returns whether the outcome is still open (unknown), and
// whether this answer opened it (processing → unknown: its query chain is
// to start). An
// attempt already settled keeps its outcome; a different answer for it is
// logged for operators.
func (s *Service) apply(ctx context.Context, tx pgx.Tx, a attemptRow, r bankadapters.ChargeResult, source string) (open, opened bool, err error) {
	status := attemptStatus(r)
	now := s.now()
	if status == AttemptSucceeded {
		return false, false, s.applySucceeded(ctx, tx, []*sending{{a: a, r: r, source: source}})
	}
	cur, err := getAttempt(ctx, tx, a.MerchantID, a.OrderNo, true)
	if err != nil {
		return false, false, err
	}
	if final(cur.Status) {
		if final(status) && status != cur.Status {
			s.log.Error("bank answer contradicts a settled attempt", "order_no", a.OrderNo, "bank", a.BankCode,
				"settled", cur.Status, "answer", status, "source", source)
		}
		return false, false, nil
	}
	if status == AttemptUnknown {
		if cur.Status == AttemptUnknown {
			return true, false, nil
		}
		if err := markAttemptUnknown(ctx, tx, a.OrderNo); err != nil {
			return false, false, err
		}
		err := markChargeUnknown(ctx, tx, a.ChargeID, now)
		if err == nil {
			s.log.Info("charge outcome unknown; settling by query", "order_no", a.OrderNo, "bank", a.BankCode,
				"source", source, "cause", errString(r.Cause))
		}
		return true, true, err
	}
	// A failure counts on the bank day it happened (the card's daily cap),
	// which may be later than the day the attempt was claimed.
	if err := finishAttempt(ctx, tx, a.OrderNo, status, r.Reason, r.Code, r.BankTxnNo, now, bankDay(now)); err != nil {
		return false, false, err
	}
	c, m, err := chargeAndMandate(ctx, tx, a.MerchantID, a.ChargeID)
	if err != nil {
		return false, false, err
	}
	c.UpdatedAt, c.NextAttemptAt = now, time.Time{}
	var event string
	switch {
	case r.Outcome == bankadapters.OutcomeRetryableDecline && (m.Status == StatusActive || m.Status == StatusCompleted):
		days, err := merchantRetryDays(ctx, tx, a.MerchantID)
		if err != nil {
			return false, false, err
		}
		c.FailureCode = r.Reason
		if c.Retries < len(days) {
			c.Status, event = ChargeRetryScheduled, "charge.retry_scheduled"
			// Retries go on later bank days than the decline (the days
			// the card's cap counts): a charge first tried after its date
			// (its notice was late, the card's cap put it off, the runs
			// were down) is not tried again at once. In a zone behind
			// the banks', the mandate's next midnight can fall on the
			// same bank day: the retry waits a day more.
			date := c.ChargeDate.AddDate(0, 0, days[c.Retries])
			if next := nextBankDay(now); m.Schedule.DueAt(date).Before(next) {
				if date = m.Schedule.DateAt(next); m.Schedule.DueAt(date).Before(next) {
					date = date.AddDate(0, 0, 1)
				}
			}
			c.NextAttemptAt = m.Schedule.DueAt(date)
			c.Retries++
		} else {
			c.Status, event = ChargeFailed, "charge.failed"
		}
	default:
		c.Status, c.FailureCode, event = ChargeFailed, r.Reason, "charge.failed"
	}
	if err := updateChargeOutcome(ctx, tx, c, now); err != nil {
		return false, false, err
	}
	if err := s.emit(ctx, tx, a.MerchantID, event, chargeEvent(c)); err != nil {
		return false, false, err
	}
	// Only declines reach here: success and unknown returned above.
	if err := s.auditTx(ctx, tx, a.MerchantID, "charge.decline", c.ID, "failed", map[string]any{
		"order_no": a.OrderNo, "bank": a.BankCode, "reason": r.Reason, "bank_code": r.Code, "source": source}); err != nil {
		return false, false, err
	}
	if r.Outcome == bankadapters.OutcomeHardDecline {
		return false, false, s.suspend(ctx, tx, m, r.Reason, now)
	}
	return false, false, nil
}

// applySucceeded writes successes to their attempts and charges, and
// emits their charge.succeeded events, in a fixed number of statements
// however many there are (succeedAttempts): the common case of a
// month-end run. An attempt settled already (a callback or query won the
// race) keeps its outcome.
//
// A debit counts on the bank day the bank made it (its statement's day),
// which may be later than the day the attempt was claimed: a query that
// re-sent it after midnight, an answer that came late.
func (s *Service) applySucceeded(ctx context.Context, tx pgx.Tx, list []*sending) error {
	// A success for another amount is held, not booked (mismatch.go).
	var held []*sending
	list = slices.DeleteFunc(slices.Clone(list), func(x *sending) bool {
		if mismatched(x) {
			held = append(held, x)
			return true
		}
		return false
	})
	if len(held) > 0 {
		if err := s.holdMismatched(ctx, tx, held); err != nil {
			return err
		}
	}
	if len(list) == 0 {
		return nil
	}
	now := s.now()
	orders, codes, txns := make([]string, len(list)), make([]*string, len(list)), make([]*string, len(list))
	days := make([]time.Time, len(list))
	byCharge := make(map[string]*sending, len(list))
	for i, x := range list {
		orders[i], codes[i], txns[i] = x.a.OrderNo, nullPtr(x.r.Code), nullPtr(x.r.BankTxnNo)
		days[i] = bankDay(now)
		if !x.r.FinishedAt.IsZero() {
			days[i] = bankDay(x.r.FinishedAt)
		}
		byCharge[x.a.ChargeID] = x
	}
	succeeded, err := succeedAttempts(ctx, tx, orders, codes, txns, days, now)
	if err != nil {
		return err
	}
	var events []webhooks.Pending
	settled := make(map[string]bool, len(list))
	for _, c := range succeeded {
		settled[c.ID] = true
		events = append(events, webhooks.Pending{MerchantID: c.MerchantID, Type: "charge.succeeded", Data: chargeEvent(c)})
	}
	for id, x := range byCharge {
		if settled[id] {
			continue
		}
		cur, err := getAttempt(ctx, tx, x.a.MerchantID, x.a.OrderNo, false)
		if err != nil {
			return err
		}
		if cur.Status != AttemptSucceeded {
			s.log.Error("bank answer contradicts a settled attempt", "order_no", x.a.OrderNo, "bank", x.a.BankCode,
				"settled", cur.Status, "answer", AttemptSucceeded, "source", x.source)
		}
	}
	return s.cfg.Emit(ctx, tx, events)
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

func chargeAndMandate(ctx context.Context, tx pgx.Tx, merchantID, chargeID string) (Charge, mandateRow, error) {
	c, err := getChargeRow(ctx, tx, merchantID, chargeID)
	if err != nil {
		return c, mandateRow{}, err
	}
	m, err := getMandate(ctx, tx, merchantID, c.MandateID, true)
	return c, m, err
}

// attemptStatus is what a bank answer makes its attempt: anything but a
// certain success or failure leaves it unknown, to be settled by query.
func attemptStatus(r bankadapters.ChargeResult) AttemptStatus {
	switch r.Status {
	case bankadapters.ChargeSucceeded:
		return AttemptSucceeded
	case bankadapters.ChargeFailed:
		return AttemptFailed
	case bankadapters.ChargeProcessing, bankadapters.ChargeUnknown:
		return AttemptUnknown
	default:
		panic(fmt.Sprintf("mandate: bank charge status %q", r.Status))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
