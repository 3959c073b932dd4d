package mandate

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// bankZone is the banks' day: the per-card failure cap counts in it.
var bankZone = mustZone("Asia/Shanghai")

func mustZone(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

func bankDay(t time.Time) time.Time {
	y, m, d := t.In(bankZone).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// nextBankDay returns the instant the bank day after t's begins.
func nextBankDay(t time.Time) time.Time {
	y, m, d := t.In(bankZone).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, bankZone).UTC()
}

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

// materialize turns one batch of due periods into charges and advances
// their mandates. A fixed mandate's period becomes a charge when its
// notice (or, without notice, its date) is due; a variable mandate's
// period is done on its date: the charge the biller posted goes ahead, and
// without one the period is skipped with a charge.failed event
// (no_amount_posted).
func (s *Service) materialize(ctx context.Context, asOf time.Time) (periods, skipped, claimed, deferred int, err error) {
	now := s.now()
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Candidates: a day's slack covers every zone; the exact check is below.
		horizon := bankDay(asOf).AddDate(0, 0, 1)
		rows, err := tx.Query(ctx, `SELECT `+mandateCols+` FROM mandates
			WHERE status = 'active' AND next_charge_date - CASE WHEN amount_type = 'fixed' THEN notice_days ELSE 0 END <= $1
			ORDER BY next_charge_date LIMIT $2 FOR UPDATE SKIP LOCKED`, horizon, s.cfg.ClaimBatch)
		if err != nil {
			return err
		}
		ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (mandateRow, error) { return scanMandate(r) })
		if err != nil {
			return err
		}
		var ins chargeRows
		var upd mandateAdvances
		var after []func() error
		for i := range ms {
			m := &ms[i]
			p := Period{Key: m.NextPeriod, Date: m.NextChargeDate}
			due := m.Schedule.DueAt(p.Date)
			if m.AmountType == AmountFixed && m.NoticeDays > 0 {
				due = m.Schedule.DueAt(p.Date.AddDate(0, 0, -m.NoticeDays))
			}
			if due.After(asOf) {
				continue
			}
			periods++
			switch m.AmountType {
			case AmountFixed:
				c, noticeAt := s.newCharge(m.Mandate, p, m.Amount, m.Description, now)
				ins.add(c, m.CardID, noticeAt)
				m.ChargesCount++
			case AmountVariable:
				var exists bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM charges WHERE mandate_id = $1 AND period = $2)`,
					m.ID, p.Key).Scan(&exists); err != nil {
					return err
				}
				if exists {
					m.ChargesCount++
					break
				}
				skipped++
				c, _ := s.newCharge(m.Mandate, p, m.MaxAmount, m.Description, now)
				c.Status, c.FailureCode, c.NextAttemptAt = ChargeFailed, "no_amount_posted", time.Time{}
				// amount is required positive: a skipped period records the
				// mandate's maximum as the amount it would not charge over.
				if err := insertCharge(ctx, tx, c, m.CardID, time.Time{}); err != nil {
					return err
				}
				after = append(after, func() error { return s.emit(ctx, tx, m.MerchantID, "charge.failed", chargeEvent(c)) })
			default:
				return fmt.Errorf("materialize %s: amount type %q", m.ID, m.AmountType)
			}
			m.UpdatedAt = now
			if next, ok := m.Schedule.After(p); ok && (m.Schedule.MaxCharges == 0 || m.ChargesCount < m.Schedule.MaxCharges) {
				m.NextPeriod, m.NextChargeDate = next.Key, next.Date
				upd.add(m.ID, m.NextPeriod, m.NextChargeDate, m.ChargesCount)
				continue
			}
			m.NextPeriod, m.NextChargeDate = "", time.Time{}
			m.Status, m.StatusReason = StatusCompleted, completionReason(*m)
			mm := *m
			after = append(after, func() error { return s.record(ctx, tx, mm, "mandate.complete", "mandate.completed", now) })
		}
		// Charges due now without a notice to wait for go to the bank in
		// this same transaction, inserted as processing with their
		// attempts: no second pass to claim them, no second write of the
		// row.
		p, err := s.planNew(ctx, tx, &ins, asOf)
		if err != nil {
			return err
		}
		inserted, err := ins.insert(ctx, tx, now)
		if err != nil {
			return err
		}
		if claimed, err = s.writeSends(ctx, tx, p, inserted); err != nil {
			return err
		}
		deferred = 0
		for _, id := range p.deferIDs {
			if inserted[id] {
				deferred++
			}
		}
		if err := upd.update(ctx, tx, now); err != nil {
			return err
		}
		for _, f := range after {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	})
	return periods, skipped, claimed, deferred, err
}

// planNew plans the sending of the new charges of ins that are due at
// asOf and need no notice (plan), and marks them in ins: the ones sent go
// in as processing with their first attempt, the deferred ones with their
// next attempt time.
func (s *Service) planNew(ctx context.Context, tx pgx.Tx, ins *chargeRows, asOf time.Time) (sendPlan, error) {
	var list []dueCharge
	var cardIDs []string
	row := map[string]int{}
	for i, id := range ins.id {
		if ins.notice[i] == nil && !ins.next[i].After(asOf) {
			list = append(list, dueCharge{id: id, merchantID: ins.merchant[i], cardID: ins.card[i], amount: ins.amount[i]})
			cardIDs = append(cardIDs, ins.card[i])
			row[id] = i
		}
	}
	if len(list) == 0 {
		return sendPlan{}, nil
	}
	bankOf, err := cardBanks(ctx, tx, cardIDs)
	if err != nil {
		return sendPlan{}, err
	}
	for i := range list {
		list[i].bankCode = bankOf[list[i].cardID]
	}
	// Planned before the insert, which may skip a charge whose period has
	// one already (ON CONFLICT): such a charge's planned attempt is dropped
	// (writeSends), having only held a card's allowance for this run.
	p, err := s.plan(ctx, tx, list)
	if err != nil {
		return sendPlan{}, err
	}
	for _, a := range p.sends {
		i := row[a.chargeID]
		ins.status[i], ins.attempts[i], ins.next[i] = ChargeProcessing, 1, time.Time{}
	}
	for _, id := range p.deferIDs {
		ins.next[row[id]] = p.nextDay
	}
	return p, nil
}

// chargeRows are new charges to insert in one statement: scheduled, or
// processing when planNew sends them at once.
type chargeRows struct {
	id, merchant, mandate, card, period, currency, description []string
	date                                                       []time.Time
	amount                                                     []int64
	next                                                       []time.Time
	notice                                                     []*time.Time
	status                                                     []string
	attempts                                                   []int32
}

func (r *chargeRows) add(c Charge, cardID string, noticeAt time.Time) {
	r.id, r.merchant, r.mandate = append(r.id, c.ID), append(r.merchant, c.MerchantID), append(r.mandate, c.MandateID)
	r.card, r.period, r.currency = append(r.card, cardID), append(r.period, c.Period), append(r.currency, c.Currency)
	r.description, r.date, r.amount = append(r.description, c.Description), append(r.date, c.ChargeDate), append(r.amount, c.Amount)
	r.next = append(r.next, c.NextAttemptAt)
	r.status, r.attempts = append(r.status, ChargeScheduled), append(r.attempts, 0)
	var n *time.Time
	if !noticeAt.IsZero() {
		n = &noticeAt
	}
	r.notice = append(r.notice, n)
}

func (r *chargeRows) insert(ctx context.Context, tx pgx.Tx, now time.Time) (map[string]bool, error) {
	inserted := map[string]bool{}
	if len(r.id) == 0 {
		return inserted, nil
	}
	next := make([]*time.Time, len(r.next))
	for i := range r.next {
		if !r.next[i].IsZero() {
			next[i] = &r.next[i]
		}
	}
	rows, err := tx.Query(ctx, `INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount,
		currency, description, status, attempts_count, next_attempt_at, notice_at, created_at, updated_at)
		SELECT id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, description, status,
			attempts_count, next_attempt_at, notice_at, $14, $14
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::bigint[], $8::text[],
			$9::text[], $10::text[], $11::integer[], $12::timestamptz[], $13::timestamptz[])
			AS u(id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, description,
			status, attempts_count, next_attempt_at, notice_at)
		ON CONFLICT (mandate_id, period) DO NOTHING RETURNING id`,
		r.id, r.merchant, r.mandate, r.card, r.period, r.date, r.amount, r.currency, r.description, r.status,
		r.attempts, next, r.notice, now)
	if err != nil {
		return nil, err
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error { inserted[id] = true; return nil })
	return inserted, err
}

// mandateAdvances move mandates to their next period in one statement.
type mandateAdvances struct {
	id, period []string
	date       []time.Time
	count      []int32
}

func (u *mandateAdvances) add(id, period string, date time.Time, count int) {
	u.id, u.period, u.date, u.count = append(u.id, id), append(u.period, period), append(u.date, date), append(u.count, int32(count))
}

func (u *mandateAdvances) update(ctx context.Context, tx pgx.Tx, now time.Time) error {
	if len(u.id) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE mandates m SET next_period = u.period, next_charge_date = u.date,
		charges_count = u.count, updated_at = $5
		FROM unnest($1::text[], $2::text[], $3::date[], $4::int[]) AS u(id, period, date, count) WHERE m.id = u.id`,
		u.id, u.period, u.date, u.count, now)
	return err
}

// ChargeArgs is the River job that sends a batch of claimed attempts, all
// to one bank, and settles their answers together (Config.JobBatch). It
// carries only their order numbers: the job sends what the database holds
// of each attempt, not a copy made at the claim, and River's index of
// every value in a job's args (GIN) stays small.
type ChargeArgs struct {
	OrderNos []string `json:"order_nos"`
}

// Kind implements river.JobArgs.
func (ChargeArgs) Kind() string { return "mandate_charges" }

// QueryArgs is the River job that asks the bank about an unknown attempt.
type QueryArgs struct {
	OrderNo    string `json:"order_no"`
	MerchantID string `json:"merchant_id"`
	Try        int    `json:"try"`
}

// Kind implements river.JobArgs.
func (QueryArgs) Kind() string { return "mandate_query" }

// newOrderNo is a bank order number: "QP" and 24 base32 characters.
func newOrderNo() string { return "QP" + strings.ToUpper(strings.TrimPrefix(ids.New("o"), "o_")) }

// claim takes one batch of due charges: each becomes processing with a new
// attempt, whose order number is written here, in a River job with others
// to its bank, in one transaction. A card with its day's failures used up
// (counting attempts still open) is put off to the next bank day.
func (s *Service) claim(ctx context.Context, asOf time.Time) (claimed, deferred int, err error) {
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT c.id, c.merchant_id, c.card_id, c.amount, c.attempts_count, k.bank_code
			FROM charges c JOIN cards k ON k.id = c.card_id
			WHERE c.status IN ('scheduled', 'retry_scheduled') AND c.next_attempt_at <= $1
			  AND (c.notice_at IS NULL OR c.notice_sent_at IS NOT NULL)
			ORDER BY c.next_attempt_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED`, asOf, s.cfg.ClaimBatch)
		if err != nil {
			return err
		}
		var list []dueCharge
		var d dueCharge
		if _, err := pgx.ForEachRow(rows, []any{&d.id, &d.merchantID, &d.cardID, &d.amount, &d.attempts, &d.bankCode}, func() error {
			list = append(list, d)
			return nil
		}); err != nil {
			return err
		}
		claimed, deferred, err = s.send(ctx, tx, list)
		return err
	})
	return claimed, deferred, err
}

// dueCharge is a charge whose time has come, locked by the caller.
type dueCharge struct {
	id, merchantID, cardID, bankCode string
	amount                           int64
	attempts                         int
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
		if _, err := tx.Exec(ctx, `UPDATE charges SET next_attempt_at = $2, updated_at = $3 WHERE id = ANY($1)`,
			p.deferIDs, p.nextDay, now); err != nil {
			return 0, 0, err
		}
	}
	if len(p.sends) > 0 {
		ids := make([]string, len(p.sends))
		for i, a := range p.sends {
			ids[i] = a.chargeID
		}
		if _, err := tx.Exec(ctx, `UPDATE charges SET status = 'processing', attempts_count = attempts_count + 1,
			next_attempt_at = NULL, updated_at = $2 WHERE id = ANY($1)`, ids, now); err != nil {
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
	// merchant, is one card. Card rows are grouped by their number's
	// fingerprint.
	type use struct{ failed, open int }
	cards := map[string]*use{} // by card row
	ids := map[string]bool{}
	for _, d := range list {
		ids[d.cardID] = true
	}
	// Runs that claim concurrently take other charges (SKIP LOCKED), maybe
	// of the same cards: each card's count is read and raised under a lock
	// of its own, taken in fingerprint order, so no two runs share a card's
	// allowance. (Advisory, not the card row: unbinding locks the card row
	// and then the charges, which this transaction holds.)
	cardIDs := slices.Sorted(maps.Keys(ids))
	if err := lockCardNumbers(ctx, tx, cardIDs); err != nil {
		return sendPlan{}, err
	}
	used, err := cardDayUse(ctx, tx, cardIDs, day)
	if err != nil {
		return sendPlan{}, err
	}
	byFP := map[string]*use{}
	var cardID string
	var fp []byte
	var failed, open int
	if _, err := pgx.ForEachRow(used, []any{&cardID, &fp, &failed, &open}, func() error {
		u := byFP[string(fp)]
		if u == nil {
			u = &use{failed, open}
			byFP[string(fp)] = u
		}
		cards[cardID] = u
		return nil
	}); err != nil {
		return sendPlan{}, err
	}
	for id := range ids {
		if cards[id] == nil {
			return sendPlan{}, fmt.Errorf("plan: card %s not found", id)
		}
	}
	p := sendPlan{nextDay: nextBankDay(now), day: day, now: now}
	for _, d := range list {
		u := cards[d.cardID]
		switch {
		case u.failed >= CardFailuresPerDay:
			p.deferIDs = append(p.deferIDs, d.id)
			continue
		case u.failed+u.open >= CardFailuresPerDay:
			continue // a later run, once the open ones are answered
		}
		u.open++
		p.sends = append(p.sends, plannedAttempt{orderNo: newOrderNo(), merchantID: d.merchantID, chargeID: d.id,
			cardID: d.cardID, bankCode: d.bankCode, amount: d.amount, seq: d.attempts + 1})
	}
	return p, nil
}

// writeSends writes the planned attempts, of the charges in keep (nil:
// all), and their River jobs: one per batch of attempts to one bank
// (Config.JobBatch). It returns how many it wrote.
func (s *Service) writeSends(ctx context.Context, tx pgx.Tx, p sendPlan, keep map[string]bool) (int, error) {
	var rows [][]any
	byBank := map[string][]string{}
	for _, a := range p.sends {
		if keep == nil || keep[a.chargeID] {
			rows = append(rows, []any{a.orderNo, a.merchantID, a.chargeID, a.cardID, a.seq, a.bankCode, a.amount,
				AttemptProcessing, p.day, p.now})
			byBank[a.bankCode] = append(byBank[a.bankCode], a.orderNo)
		}
	}
	if len(rows) == 0 {
		return 0, nil
	}
	var jobs []river.InsertManyParams
	for _, code := range slices.Sorted(maps.Keys(byBank)) {
		for batch := range slices.Chunk(byBank[code], s.cfg.JobBatch) {
			jobs = append(jobs, river.InsertManyParams{Args: ChargeArgs{OrderNos: batch},
				InsertOpts: &river.InsertOpts{Queue: s.cfg.Queue}})
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"charge_attempts"}, []string{"order_no", "merchant_id",
		"charge_id", "card_id", "seq", "bank_code", "amount", "status", "bank_day", "created_at"},
		pgx.CopyFromRows(rows)); err != nil {
		return 0, err
	}
	if _, err := s.cfg.Jobs.InsertManyFastTx(ctx, tx, jobs); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// Pending counts charges claimed but not yet answered (processing), and
// those whose outcome is unknown.
func (s *Service) Pending(ctx context.Context) (processing, unknown int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'processing'),
		count(*) FILTER (WHERE status = 'unknown') FROM charges WHERE status IN ('processing', 'unknown')`).
		Scan(&processing, &unknown)
	return processing, unknown, err
}
