package opsview

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// Overview is the console's first page: a day's charges and refunds, and
// what waits for operators now.
type Overview struct {
	// Day is the day shown, from its midnight in the location asked for.
	Day time.Time
	// At is when it was read; the ages below are measured from it.
	At time.Time
	// Charges are the charges whose charge date is Day, by status and
	// their card's bank.
	Charges []ChargeCount
	// Refunds are the refunds created on Day, by status.
	Refunds []RefundCount
	// UnknownAttempts: charge attempts whose outcome is unknown, and the
	// age of the oldest (0 when none).
	UnknownAttempts int64
	OldestUnknown   time.Duration
	// Mismatches: every reconciliation mismatch recorded, and those still
	// open (in the latest run of their bank and day, Mismatch.Open).
	Mismatches     int64
	OpenMismatches int64
	// Backlog: the webhook backlog (Backlog, Undelivered), and the age of
	// its oldest event (0 when none). Only the oldest jobs' first
	// MaxBacklogCount events are read: BacklogCapped says more wait.
	Backlog           int64
	OldestUndelivered time.Duration
	BacklogCapped     bool
	// BankRates are the charge attempts of the last 24 hours by bank.
	BankRates []BankRate
}

// ChargeCount is a number of charges and their sum.
type ChargeCount struct {
	Status string
	Bank   string
	Count  int64
	Amount int64
}

// RefundCount is a number of refunds and their sum.
type RefundCount struct {
	Status string
	Count  int64
	Amount int64
}

// BankRate is a bank's charge attempts over a window: Calls attempts
// made, Declines those failed, Unknowns those whose outcome is still
// unknown; Mismatches those answered with another amount.
type BankRate struct {
	Bank       string
	Calls      int64
	Declines   int64
	Unknowns   int64
	Mismatches int64
}

// Overview reads the overview of day (its date in loc; loc nil is UTC).
func (r *Reader) Overview(ctx context.Context, day time.Time, loc *time.Location) (Overview, error) {
	if loc == nil {
		loc = time.UTC
	}
	now := r.clock.Now()
	d := day.In(loc)
	start := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, loc)
	end := start.AddDate(0, 0, 1)
	o := Overview{Day: start, At: now.UTC()}

	// The parts are independent reads: run together, the page waits for
	// the slowest, not for their sum.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		o.Charges, err = all(gctx, r, "charges of the day", func(row pgx.CollectableRow) (ChargeCount, error) {
			var c ChargeCount
			return c, row.Scan(&c.Status, &c.Bank, &c.Count, &c.Amount)
		}, `SELECT c.status, k.bank_code, count(*), coalesce(sum(c.amount), 0)::bigint
		      FROM charges c JOIN cards k ON k.id = c.card_id
		     WHERE c.charge_date = $1::date
		     GROUP BY 1, 2 ORDER BY 1, 2`, dateOf(start))
		return err
	})
	g.Go(func() (err error) {
		o.Refunds, err = all(gctx, r, "refunds of the day", func(row pgx.CollectableRow) (RefundCount, error) {
			var c RefundCount
			return c, row.Scan(&c.Status, &c.Count, &c.Amount)
		}, `SELECT status, count(*), coalesce(sum(amount), 0)::bigint FROM refunds
		     WHERE created_at >= $1 AND created_at < $2 GROUP BY 1 ORDER BY 1`, start, end)
		return err
	})
	g.Go(func() (err error) {
		o.BankRates, err = r.bankRates(gctx, now.Add(-24*time.Hour))
		return err
	})
	g.Go(func() error {
		w, err := r.gauges(gctx, now)
		o.UnknownAttempts, o.OldestUnknown = w.unknown, w.oldestUnknown
		o.Mismatches, o.OpenMismatches = w.mismatches, w.openMismatches
		o.Backlog, o.OldestUndelivered, o.BacklogCapped = w.backlog, w.oldestUndelivered, w.backlogCapped
		return err
	})
	if err := g.Wait(); err != nil {
		return Overview{}, err
	}
	return o, nil
}

// bankRates counts the charge attempts made since by bank and outcome.
func (r *Reader) bankRates(ctx context.Context, since time.Time) ([]BankRate, error) {
	return all(ctx, r, "bank rates", func(row pgx.CollectableRow) (BankRate, error) {
		var b BankRate
		return b, row.Scan(&b.Bank, &b.Calls, &b.Declines, &b.Unknowns, &b.Mismatches)
	}, `SELECT bank_code, count(*),
	           count(*) FILTER (WHERE status = 'failed'),
	           count(*) FILTER (WHERE status = 'unknown'),
	           count(*) FILTER (WHERE status = 'amount_mismatch')
	      FROM charge_attempts WHERE created_at >= $1
	     GROUP BY 1 ORDER BY 1`, since)
}

// gauges are the overview's counts of what waits, shared with the
// Collector.
type gauges struct {
	unknown           int64
	oldestUnknown     time.Duration
	mismatches        int64
	openMismatches    int64
	backlog           int64
	oldestUndelivered time.Duration
	backlogCapped     bool
}

// MaxBacklogCount bounds the events the overview and the Collector read
// to count the webhook backlog: those of the oldest delivery jobs that
// have not completed, in job order, so a backlog of a million events (an
// endpoint down for days) costs a scrape what 10,000 do. Events are
// batched into jobs as they are emitted, so the oldest event waits in the
// oldest jobs.
const MaxBacklogCount = 10_000

func (r *Reader) gauges(ctx context.Context, now time.Time) (gauges, error) {
	var g gauges
	var oldestUnknown, oldestUndelivered *time.Time
	var read int64
	err := r.pool.QueryRow(ctx, `
		WITH ids AS (SELECT x.event_id FROM `+backlogJobs+`
		              WHERE j.kind = 'webhook_deliver'
		                AND j.state IN ('available', 'pending', 'scheduled', 'retryable', 'running', 'discarded', 'cancelled')
		              ORDER BY j.id, x.n LIMIT $1),
		     b AS (SELECT e.created_at FROM ids JOIN events e ON e.id = ids.event_id WHERE NOT `+delivered+`)
		SELECT (SELECT count(*) FROM charge_attempts WHERE status = 'unknown'),
		       (SELECT min(created_at) FROM charge_attempts WHERE status = 'unknown'),
		       (SELECT count(*) FROM reconciliation_mismatches),
		       (SELECT count(*) FROM reconciliation_mismatches m
		         WHERE NOT EXISTS (SELECT 1 FROM reconciliation_runs l
		                            WHERE l.bank_code = m.bank_code AND l.bank_day = m.bank_day AND l.id > m.run_id)),
		       (SELECT count(*) FROM ids),
		       (SELECT count(*) FROM b),
		       (SELECT min(created_at) FROM b)`, MaxBacklogCount).
		Scan(&g.unknown, &oldestUnknown, &g.mismatches, &g.openMismatches, &read, &g.backlog, &oldestUndelivered)
	if err != nil {
		return gauges{}, err
	}
	g.backlogCapped = read >= MaxBacklogCount
	g.oldestUnknown = age(now, oldestUnknown)
	g.oldestUndelivered = age(now, oldestUndelivered)
	return g, nil
}

// age is how long before now t was, 0 for none (or a t after now).
func age(now time.Time, t *time.Time) time.Duration {
	if t == nil || t.After(now) {
		return 0
	}
	return now.Sub(*t)
}
