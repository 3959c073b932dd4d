package mandate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/db"
)

// Settlement files (对账文件, DESIGN.md "Settlement file"). A bank day's
// files are written once, for every merchant at once, after each bank that
// serves statements has a reconciliation of that day whose statement was
// final; a merchant reads its file (WriteCSV) from then on, and it never
// changes.
//
// Each succeeded movement (a charge's debit, a refund) is in exactly one
// file: the first day written after it succeeded whose date is not before
// its bank day. Days are written in order, one after the other, so that
// is its own bank day's file, unless it succeeded (in quickpay's books)
// after that file was written: a late correction then lands in the next
// day written, "the day it is found on". Days before the first day ever
// written have no files, and their movements are in none unless booked
// since that day began. A day that has no movement of a merchant still has
// that merchant's file: the header and a total of 0.

// MovementKind is what a settlement row records: a charge's debit or a
// refund. The set is closed (migration 025's CHECK mirrors it).
type MovementKind string

// Movement kinds.
const (
	MovementCharge MovementKind = "charge"
	MovementRefund MovementKind = "refund"
)

// Settlement errors.
var (
	// ErrSettlementNotReady: the day's files are not written yet.
	ErrSettlementNotReady = errors.New("settlement files not ready")
	// ErrSettlementBeforeFirstDay: the day is before the first day ever
	// written; it has no files and never will.
	ErrSettlementBeforeFirstDay = errors.New("settlement files start later")
)

// StatementNotFinalError says that banks' statements of a day are not
// final yet (the bank's day has not closed), so the day's files wait.
type StatementNotFinalError struct {
	Day   time.Time
	Banks []string
}

func (e *StatementNotFinalError) Error() string {
	return fmt.Sprintf("settlement files of %s wait for a final statement from %s",
		e.Day.Format(time.DateOnly), strings.Join(e.Banks, ", "))
}

// settlementMargin is how much earlier than the moment a day's write
// relies on a movement may have been booked: clocks of quickpay's
// processes and of the banks apart, and a booking's transaction between
// the time it wrote and its commit (writeSettlementDay).
const settlementMargin = time.Hour

// SettlementDay is a day whose files are written.
type SettlementDay struct {
	Day       time.Time // a date (the bank day, Asia/Shanghai)
	Movements int64     // rows in the day's files, every merchant's together
	WrittenAt time.Time
}

// SettlementRun is what WriteSettlementFiles did.
type SettlementRun struct {
	// Reconciliations are the runs it made: a bank is reconciled for a
	// day unless it has a run of that day whose statement was final.
	Reconciliations []Reconciliation
	// Written are the days it wrote, oldest first.
	Written []SettlementDay
}

// WriteSettlementFiles writes the settlement files of every day not
// written yet through day through, oldest first: from the day after the
// last day written, or only through if none is. Before writing a day, it
// reconciles each bank that serves statements and has no reconciliation
// of that day whose statement was final (Reconcile). A day whose
// statements are not all final stops the run: the days before it stay
// written. Running it again writes nothing twice.
//
// Errors: *StatementNotFinalError (naming the banks; try again later),
// ErrSettlementBeforeFirstDay, and Reconcile's.
func (s *Service) WriteSettlementFiles(ctx context.Context, through time.Time) (SettlementRun, error) {
	var run SettlementRun
	banks, err := s.statementBanks()
	if err != nil {
		return run, err
	}
	last, written, err := lastSettlementDay(ctx, s.pool)
	if err != nil {
		return run, fmt.Errorf("settlement files: %w", err)
	}
	from := through
	if written {
		if !through.After(last) {
			// Written, or before the first day: nothing to do either way.
			if _, err := settlementDay(ctx, s.pool, through); errors.Is(err, ErrSettlementNotReady) {
				return run, fmt.Errorf("settlement files of %s: %w", through.Format(time.DateOnly), ErrSettlementBeforeFirstDay)
			} else if err != nil {
				return run, fmt.Errorf("settlement files: %w", err)
			}
			return run, nil
		}
		from = last.AddDate(0, 0, 1)
	}
	for day := from; !day.After(through); day = day.AddDate(0, 0, 1) {
		recs, err := s.reconcileForSettlement(ctx, banks, day)
		run.Reconciliations = append(run.Reconciliations, recs...)
		if err != nil {
			return run, err
		}
		d, wrote, err := s.writeSettlementDay(ctx, day)
		if err != nil {
			return run, err
		}
		if wrote {
			run.Written = append(run.Written, d)
			s.log.Info("settlement files written", "day", day.Format(time.DateOnly), "movements", d.Movements)
		}
	}
	return run, nil
}

// SettlementPending returns the banks, of those that serve statements,
// that have no reconciliation of day whose statement was final, in code
// order: the day's files wait for them.
func (s *Service) SettlementPending(ctx context.Context, day time.Time) ([]string, error) {
	banks, err := s.statementBanks()
	if err != nil {
		return nil, err
	}
	return s.pendingBanks(ctx, banks, day)
}

// pendingBanks returns those of banks without a final reconciliation of day.
func (s *Service) pendingBanks(ctx context.Context, banks []string, day time.Time) ([]string, error) {
	final, err := finalStatementBanks(ctx, s.pool, banks, day)
	if err != nil {
		return nil, fmt.Errorf("settlement files of %s: %w", day.Format(time.DateOnly), err)
	}
	return slices.DeleteFunc(slices.Clone(banks), func(code string) bool { return final[code] }), nil
}

// SettlementDay returns a day whose files are written. Errors:
// ErrSettlementNotReady.
func (s *Service) SettlementDay(ctx context.Context, day time.Time) (SettlementDay, error) {
	d, err := settlementDay(ctx, s.pool, day)
	if err != nil {
		return d, fmt.Errorf("settlement day %s: %w", day.Format(time.DateOnly), err)
	}
	return d, nil
}

// reconcileForSettlement reconciles, for day, each of banks without a
// final reconciliation of it, and returns the runs it made. Every bank is
// asked even when one is not final, so that the error names them all.
func (s *Service) reconcileForSettlement(ctx context.Context, banks []string, day time.Time) ([]Reconciliation, error) {
	pending, err := s.pendingBanks(ctx, banks, day)
	if err != nil || len(pending) == 0 {
		return nil, err
	}
	var recs []Reconciliation
	notFinal := &StatementNotFinalError{Day: day}
	for _, code := range pending {
		rec, err := s.Reconcile(ctx, code, day)
		if err != nil {
			return recs, fmt.Errorf("settlement files of %s: %w", day.Format(time.DateOnly), err)
		}
		recs = append(recs, rec)
		if !rec.Final {
			notFinal.Banks = append(notFinal.Banks, code)
		}
	}
	if len(notFinal.Banks) > 0 {
		return recs, notFinal
	}
	return recs, nil
}

// writeSettlementDay writes day's files under the writers' lock, unless
// it is written already (wrote false). The day before must be written,
// unless no day is.
func (s *Service) writeSettlementDay(ctx context.Context, day time.Time) (d SettlementDay, wrote bool, err error) {
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockSettlement(ctx, tx); err != nil {
			return err
		}
		last, written, err := lastSettlementDay(ctx, tx)
		switch {
		case err != nil:
			return err
		case written && !day.After(last):
			// Another writer was first (or day is before the first day).
			d, err = settlementDay(ctx, tx, day)
			if errors.Is(err, ErrSettlementNotReady) {
				return ErrSettlementBeforeFirstDay
			}
			return err
		case written && !day.Equal(last.AddDate(0, 0, 1)):
			return fmt.Errorf("%s is not written yet", last.AddDate(0, 0, 1).Format(time.DateOnly))
		}
		d = SettlementDay{Day: day, WrittenAt: s.now()}
		// What the day's files take, and where it can be (the times are
		// when quickpay booked each movement, less settlementMargin):
		//   - the day's own movements: none is in a file yet (files take
		//     days up to their own), and none was booked before the day
		//     began (a bank's answer comes after its debit);
		//   - earlier days' movements not in a file: the day before's
		//     files took every one booked before they were written, so
		//     these were booked since. The first day ever written takes
		//     those booked since it began, as if the day before had been
		//     written then: earlier days have no files.
		win := settlementWindow{day: day, dayFrom: dayStart(day).Add(-settlementMargin)}
		win.lateFrom = win.dayFrom
		if written {
			prev, err := settlementDay(ctx, tx, last)
			if err != nil {
				return err
			}
			win.lateFrom = prev.WrittenAt.Add(-settlementMargin)
		}
		if d.Movements, err = insertSettlementDay(ctx, tx, win, d.WrittenAt); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return d, false, fmt.Errorf("settlement files of %s: %w", day.Format(time.DateOnly), err)
	}
	return d, wrote, nil
}

// bankCodes is a Banks that lists its banks; channels.Registry is one.
type bankCodes interface{ Codes() []string }

// statementBanks returns the codes of the banks that serve statements, in
// order.
func (s *Service) statementBanks() ([]string, error) {
	list, ok := s.cfg.Banks.(bankCodes)
	if !ok {
		return nil, errors.New("settlement files: Config.Banks does not list its banks (Codes)")
	}
	var out []string
	for _, code := range list.Codes() {
		if b, ok := s.cfg.Banks.Bank(code); ok {
			if _, ok := b.(bankadapters.Statementer); ok {
				out = append(out, code)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("settlement files: no bank serves statements")
	}
	slices.Sort(out)
	return out, nil
}

// SettlementArgs is the morning job that writes the settlement files of
// every day not written yet through Day (WriteSettlementFiles).
type SettlementArgs struct {
	// Day is a bank date, YYYY-MM-DD; empty means the day before the
	// service clock's bank day.
	Day string `json:"day,omitempty"`
}

// Kind implements river.JobArgs.
func (SettlementArgs) Kind() string { return "settlement_files" }

// InsertOpts implements river.JobArgsWithInsertOpts: one job per day,
// whichever serve instance's scheduler inserts it and however often.
func (SettlementArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// settlementRetry is how long the job waits for a statement that is not
// final yet before it asks again.
const settlementRetry = 15 * time.Minute

// SettlementWorker writes the settlement files of days whose statements
// are final. A statement not final yet snoozes the job (settlementRetry),
// which does not count as an attempt; other errors retry as River does.
type SettlementWorker struct {
	river.WorkerDefaults[SettlementArgs]
	Service *Service
}

// Timeout bounds a run: over River's default job timeout (half the
// stuck-job rescue, 30 s by default), since a month-end day's file
// (1,000,000 movements) takes about 26 s to write (docs/benchmarks.md),
// and under the rescue (1 min by default), so a live run is not run again
// beside itself (were it, the second would find the day written: the
// files are written once, whoever writes them).
func (w *SettlementWorker) Timeout(*river.Job[SettlementArgs]) time.Duration { return 50 * time.Second }

// Work implements river.Worker.
func (w *SettlementWorker) Work(ctx context.Context, job *river.Job[SettlementArgs]) error {
	through := bankDay(w.Service.now()).AddDate(0, 0, -1)
	if job.Args.Day != "" {
		var err error
		if through, err = ParseDate(job.Args.Day); err != nil {
			return river.JobCancel(fmt.Errorf("settlement job: %w", err))
		}
	}
	_, err := w.Service.WriteSettlementFiles(ctx, through)
	var notFinal *StatementNotFinalError
	switch {
	case errors.As(err, &notFinal):
		w.Service.log.Info("settlement files wait for final statements", "day", notFinal.Day.Format(time.DateOnly),
			"banks", notFinal.Banks, "retry_in", settlementRetry.String())
		return river.JobSnooze(settlementRetry)
	case errors.Is(err, ErrSettlementBeforeFirstDay):
		return river.JobCancel(err)
	}
	return err
}

// SettlementHour is when, Asia/Shanghai, the morning job writes the day
// before's files: banks' statements of a day are final once it has ended.
const SettlementHour = 6

// PeriodicSettlement is the River periodic job that runs SettlementWorker
// each morning at SettlementHour, Asia/Shanghai, for the day before, and
// once when a client starts (a morning missed while serve was down is
// caught up; SettlementArgs' uniqueness makes it a no-op otherwise). River
// runs periodic jobs on its elected leader only.
func PeriodicSettlement() *river.PeriodicJob {
	return river.NewPeriodicJob(SettlementSchedule(),
		func() (river.JobArgs, *river.InsertOpts) {
			// River's scheduler runs on the wall clock: the day is named
			// here, so that a job run late still writes the day it was for.
			return SettlementArgs{Day: bankDay(time.Now()).AddDate(0, 0, -1).Format(time.DateOnly)}, nil
		},
		&river.PeriodicJobOpts{ID: SettlementArgs{}.Kind(), RunOnStart: true})
}

// SettlementSchedule is PeriodicSettlement's schedule: every day at
// SettlementHour:00, Asia/Shanghai.
func SettlementSchedule() river.PeriodicSchedule { return dailyAt{hour: SettlementHour} }

// dailyAt is a river.PeriodicSchedule: every day at hour:00, bank time.
type dailyAt struct{ hour int }

// Next implements river.PeriodicSchedule: the first hour:00 after t.
func (d dailyAt) Next(t time.Time) time.Time {
	l := t.In(bankZone)
	next := time.Date(l.Year(), l.Month(), l.Day(), d.hour, 0, 0, 0, bankZone)
	if !next.After(t) {
		next = time.Date(l.Year(), l.Month(), l.Day()+1, d.hour, 0, 0, 0, bankZone)
	}
	return next
}
