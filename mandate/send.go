package mandate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// RunStats counts what RunDue did.
type RunStats struct {
	Periods  int // periods that fell due and became charges (or were skipped)
	Skipped  int // variable periods with no amount posted by their date
	Notices  int // pre-debit notices sent
	Claimed  int // charges claimed and enqueued for the bank
	Deferred int // charges put off a day by the card's failure cap
}

// RunDue does what is due at asOf: it turns the periods that fell due
// into charges, sends the pre-debit notices that are due, and claims the
// charges whose time has come, enqueueing River jobs that each send a
// batch of them (every attempt's order number is written with its job).
// Safe to run concurrently and repeatedly: what one run claimed another
// skips. asOf must not be after the service's clock: the run dates its
// attempts, failure caps and retries by the clock, and a charge it put off
// to the clock's next day would fall due again at once, for ever.
func (s *Service) RunDue(ctx context.Context, asOf time.Time) (RunStats, error) {
	var st RunStats
	if now := s.cfg.Clock.Now(); asOf.After(now) {
		return st, fmt.Errorf("run due: as of %s is after the clock (%s); run on a clock at that time",
			asOf.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	for {
		n, skipped, claimed, deferred, err := s.materialize(ctx, asOf)
		st.Periods += n
		st.Skipped += skipped
		st.Claimed += claimed
		st.Deferred += deferred
		if err != nil {
			return st, fmt.Errorf("run due: periods: %w", err)
		}
		if n == 0 {
			break
		}
	}
	// Notices the carrier refused wait for the next run; the rest of this
	// run goes on past them, so refused notices never hold up others.
	refused := []string{}
	for {
		n, r, err := s.sendNotices(ctx, asOf, refused)
		st.Notices += n
		if err != nil {
			return st, fmt.Errorf("run due: notices: %w", err)
		}
		if n+len(r) == 0 {
			break
		}
		refused = append(refused, r...)
	}
	for {
		n, deferred, err := s.claim(ctx, asOf)
		st.Claimed += n
		st.Deferred += deferred
		if err != nil {
			return st, fmt.Errorf("run due: claim: %w", err)
		}
		if n+deferred == 0 {
			break
		}
	}
	return st, nil
}

// newOrderNo is a bank order number: "QP" and 24 base32 characters.
func newOrderNo() string { return "QP" + strings.ToUpper(strings.TrimPrefix(ids.New("o"), "o_")) }

// claim takes one batch of due charges: each becomes processing with a new
// attempt, whose order number is written here, in a River job with others
// to its bank, in one transaction. A card with its day's failures used up
// (counting attempts still open) is put off to the next bank day.
func (s *Service) claim(ctx context.Context, asOf time.Time) (claimed, deferred int, err error) {
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		list, err := lockDueCharges(ctx, tx, asOf, s.cfg.ClaimBatch)
		if err != nil {
			return err
		}
		claimed, deferred, err = s.send(ctx, tx, list)
		return err
	})
	return claimed, deferred, err
}

// dueCharge is a charge whose time has come, locked by the caller.
type dueCharge struct {
	id, merchantID, cardID string
	amount                 int64
	attempts               int
}

// send makes the due charges processing, each with a new attempt (its
// order number written here) in a River job of its bank's (writeSends), in
// the caller's transaction; the banks' cap of failed debits per card and
// day is kept (plan).
func (s *Service) send(ctx context.Context, tx pgx.Tx, list []dueCharge) (claimed, deferred int, err error) {
	p, err := s.plan(ctx, tx, list)
	if err != nil {
		return 0, 0, err
	}
	now := s.now()
	if len(p.deferIDs) > 0 {
		if err := deferCharges(ctx, tx, p.deferIDs, p.nextDay, now); err != nil {
			return 0, 0, err
		}
	}
	if len(p.sends) > 0 {
		ids := make([]string, len(p.sends))
		for i, a := range p.sends {
			ids[i] = a.chargeID
		}
		if err := markChargesProcessing(ctx, tx, ids, now); err != nil {
			return 0, 0, err
		}
	}
	claimed, err = s.writeSends(ctx, tx, p, nil)
	return claimed, len(p.deferIDs), err
}

// sendPlan is what plan decided for a list of due charges: the attempts
// to send (their order numbers new), and the charges that wait for the
// next bank day. The others are left for a later run.
type sendPlan struct {
	sends    []plannedAttempt
	deferIDs []string
	nextDay  time.Time
	day, now time.Time // the attempts' bank day and creation time
}

// plannedAttempt is an attempt to write, seq its number among its
// charge's attempts.
type plannedAttempt struct {
	orderNo, merchantID, chargeID, cardID, bankCode string
	amount                                          int64
	seq                                             int
}

// plan decides which due charges go to the bank now, keeping the banks'
// cap of failed debits per card and day: a card whose failures today
// reach it waits until the next bank day; one whose failures and open
// attempts (which may yet fail) reach it is left for a later run, once
// those are answered.
func (s *Service) plan(ctx context.Context, tx pgx.Tx, list []dueCharge) (sendPlan, error) {
	if len(list) == 0 {
		return sendPlan{}, nil
	}
	now := s.now()
	day := bankDay(now)
	// The bank counts failures per card, not per binding of it: a card
	// unbound and bound again (a new card row), or bound by another
	// merchant, is one card. Card rows are grouped by their number.
	ids := map[string]bool{}
	for _, d := range list {
		ids[d.cardID] = true
	}
	// Runs that claim concurrently take other charges (SKIP LOCKED), maybe
	// of the same cards: each number's count is read and raised under a
	// lock of its own (CardsForCharging), so no two runs share a card's
	// allowance.
	got, err := s.cfg.Cards.CardsForCharging(ctx, tx, slices.Sorted(maps.Keys(ids)))
	if err != nil {
		return sendPlan{}, err
	}
	rowSet := map[string]bool{}
	for id := range ids {
		c, ok := got[id]
		if !ok {
			return sendPlan{}, fmt.Errorf("plan: card %s not found", id)
		}
		for _, r := range c.SameNumber {
			rowSet[r] = true
		}
	}
	used, err := cardDayUse(ctx, tx, slices.Sorted(maps.Keys(rowSet)), day)
	if err != nil {
		return sendPlan{}, err
	}
	byNumber := map[int]*cardUse{}
	for id := range ids {
		c := got[id]
		if byNumber[c.Number] == nil {
			u := &cardUse{}
			for _, r := range c.SameNumber {
				u.failed, u.open = u.failed+used[r].failed, u.open+used[r].open
			}
			byNumber[c.Number] = u
		}
	}
	p := sendPlan{nextDay: nextBankDay(now), day: day, now: now}
	for _, d := range list {
		card := got[d.cardID]
		u := byNumber[card.Number]
		switch {
		case u.failed >= CardFailuresPerDay:
			p.deferIDs = append(p.deferIDs, d.id)
			continue
		case u.failed+u.open >= CardFailuresPerDay:
			continue // a later run, once the open ones are answered
		}
		u.open++
		p.sends = append(p.sends, plannedAttempt{orderNo: newOrderNo(), merchantID: d.merchantID, chargeID: d.id,
			cardID: d.cardID, bankCode: card.BankCode, amount: d.amount, seq: d.attempts + 1})
	}
	return p, nil
}

// writeSends writes the planned attempts, of the charges in keep (nil:
// all), and their River jobs: one per batch of attempts to one bank
// (Config.JobBatch). It returns how many it wrote.
func (s *Service) writeSends(ctx context.Context, tx pgx.Tx, p sendPlan, keep map[string]bool) (int, error) {
	var list []plannedAttempt
	byBank := map[string][]string{}
	for _, a := range p.sends {
		if keep == nil || keep[a.chargeID] {
			list = append(list, a)
			byBank[a.bankCode] = append(byBank[a.bankCode], a.orderNo)
		}
	}
	if len(list) == 0 {
		return 0, nil
	}
	var jobs []river.InsertManyParams
	for _, code := range slices.Sorted(maps.Keys(byBank)) {
		for batch := range slices.Chunk(byBank[code], s.cfg.JobBatch) {
			jobs = append(jobs, river.InsertManyParams{Args: ChargeArgs{OrderNos: batch},
				InsertOpts: &river.InsertOpts{Queue: s.cfg.Queue}})
		}
	}
	if err := insertAttempts(ctx, tx, list, p.day, p.now); err != nil {
		return 0, err
	}
	if _, err := s.cfg.Jobs.InsertManyFastTx(ctx, tx, jobs); err != nil {
		return 0, err
	}
	return len(list), nil
}

// Pending counts charges claimed but not yet answered (processing), and
// those whose outcome is unknown.
func (s *Service) Pending(ctx context.Context) (processing, unknown int, err error) {
	return countOpenCharges(ctx, s.pool)
}

// sending is one attempt of a charge job on its way to the bank.
type sending struct {
	a         attemptRow
	agreement string
	// r is the answer to apply, from source: "charge", "query" or
	// "local" (refused before the bank); "" while there is none.
	r      bankadapters.ChargeResult
	source string
	// err: the attempt could not be sent (nothing reached the bank); the
	// job runs again and asks the bank first.
	err error
}

// execute sends a job's attempts to the bank, concurrently, and settles
// the answers in one transaction. Only the attempts still processing are
// sent: settled ones, and unknown ones (in the query workers' hands), are
// done. rerun: the job ran before, so the bank may have an order: each is
// queried first, and sent only if the bank does not have it.
func (s *Service) execute(ctx context.Context, orderNos []string, rerun bool) error {
	if len(orderNos) == 0 {
		// Not written by this version (an older one's args were
		// {"attempts": [...]}, which migration 011 rewrites): an error, so
		// that River keeps it and operators see it, not a silent success
		// that leaves its attempts processing.
		return errors.New("charge job: no order numbers in its args")
	}
	open, err := processingAttempts(ctx, s.pool, orderNos)
	if err != nil {
		return fmt.Errorf("charge job: %w", err)
	}
	if len(open) == 0 {
		return nil
	}
	// A job's attempts are all to one bank (writeSends).
	bank, ok := s.cfg.Banks.Bank(open[0].BankCode)
	if !ok {
		return fmt.Errorf("charge job: no channel to bank %s", open[0].BankCode)
	}
	list := make([]*sending, len(open))
	for i, a := range open {
		if a.BankCode != open[0].BankCode {
			return fmt.Errorf("charge job: attempts to banks %s and %s in one job", open[0].BankCode, a.BankCode)
		}
		list[i] = &sending{a: a}
	}
	if rerun {
		each(list, func(x *sending) {
			r, err := bank.Query(ctx, x.a.OrderNo)
			switch {
			case errors.Is(err, bankadapters.ErrOrderNotFound):
				// The bank never got it: send it, under the same number.
			case errors.Is(err, bankadapters.ErrNotSent):
				// The query never left quickpay (queued past the job's
				// time): nothing is learnt, the attempt stays processing
				// and the job runs again.
				x.err = err
			case err != nil:
				x.r, x.source = bankadapters.UnknownResult(bankadapters.ChargeRequest{OrderNo: x.a.OrderNo, Amount: x.a.Amount}, err), "query"
			default:
				x.r, x.source = r, "query"
			}
		})
	}
	var toSend []*sending
	for _, x := range list {
		if x.source == "" && x.err == nil {
			toSend = append(toSend, x)
		}
	}
	if err := s.agreements(ctx, toSend); err != nil {
		return fmt.Errorf("charge job: %w", err)
	}
	if !rerun {
		// Cards unbound or revoked after the claim: their declines are
		// settled before any call, so that a failure to settle the others
		// cannot leave them to a rerun, which sends.
		var local []*sending
		for _, x := range toSend {
			if x.source == "local" {
				local = append(local, x)
			}
		}
		if len(local) > 0 {
			if err := s.settleAll(ctx, local); err != nil {
				return fmt.Errorf("charge job: %w", err)
			}
		}
	}
	each(toSend, func(x *sending) {
		if x.err != nil || (x.source == "local" && !rerun) {
			return // nothing reaches the bank (settled above)
		}
		// A rerun sends even to a card ended since: the first run's request
		// may still reach the bank, and under the same order number it
		// cannot debit twice. An error is a debit that never reached the
		// bank (bankadapters.ErrNotSent: it queued past the job's time for
		// the bank's limits; or a request the adapter refused to build):
		// the attempt stays processing, not unknown, and the job runs
		// again, asking the bank before it sends under the same number.
		r, err := s.bankCharge(ctx, bank, x.a, x.agreement)
		if err != nil {
			x.r, x.source, x.err = bankadapters.ChargeResult{}, "", err
			return
		}
		x.r, x.source = r, "charge"
	})
	var answered []*sending
	for _, x := range list {
		if x.source != "" && (x.source != "local" || rerun) {
			answered = append(answered, x)
		}
	}
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := s.settleAll(settleCtx, answered); err != nil {
		return err
	}
	var errs []error
	for _, x := range list {
		if x.err != nil {
			errs = append(errs, fmt.Errorf("charge %s: %w", x.a.OrderNo, x.err))
		}
	}
	return errors.Join(errs...)
}

// agreements decrypts the cards' agreement numbers of list, in one batch
// (audited). An attempt whose card is no longer active gets a local hard
// decline, which a first run applies instead of sending.
func (s *Service) agreements(ctx context.Context, list []*sending) error {
	if len(list) == 0 {
		return nil
	}
	refs := make([]binding.CardRef, len(list))
	for i, x := range list {
		refs[i] = binding.CardRef{MerchantID: x.a.MerchantID, CardID: x.a.CardID}
	}
	got, err := s.cfg.Cards.Agreements(ctx, refs, "worker:charges", "bank charge")
	if err != nil {
		return err
	}
	for i, x := range list {
		ca, ok := got[refs[i]]
		switch {
		case !ok:
			x.err = fmt.Errorf("card %s: %w", x.a.CardID, ErrNotFound)
		case ca.Err != nil:
			x.err = ca.Err
		default:
			x.agreement = ca.Agreement
			if ca.Card.Status != binding.CardActive {
				x.r, x.source = bankadapters.ChargeResult{OrderNo: x.a.OrderNo, Status: bankadapters.ChargeFailed,
					Outcome: bankadapters.OutcomeHardDecline, Reason: "card_" + string(ca.Card.Status)}, "local"
			}
		}
	}
	return nil
}

// bankCharge sends the attempt's debit under its order number. The bank's
// limits are its adapter's (bankadapters.WithLimit): a call that queued
// past ctx's end returns an error matching bankadapters.ErrNotSent.
func (s *Service) bankCharge(ctx context.Context, bank bankadapters.Bank, a attemptRow, agreement string) (bankadapters.ChargeResult, error) {
	return bank.Charge(ctx, bankadapters.ChargeRequest{
		OrderNo: a.OrderNo, AgreementNo: agreement, Amount: a.Amount, Currency: "CNY",
		Description: a.Description, NotifyURL: s.cfg.NotifyURL(a.BankCode),
	})
}
