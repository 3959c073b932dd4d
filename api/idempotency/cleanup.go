package idempotency

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// CleanupInterval is how often PeriodicCleanup runs DeleteExpired.
const CleanupInterval = time.Hour

// CleanupArgs is the River job that deletes expired keys.
type CleanupArgs struct{}

// Kind implements river.JobArgs.
func (CleanupArgs) Kind() string { return "idempotency_cleanup" }

// InsertOpts keeps at most one pending cleanup.
func (CleanupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 3, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// CleanupWorker runs Store.DeleteExpired.
type CleanupWorker struct {
	river.WorkerDefaults[CleanupArgs]
	Store *Store
}

// Work implements river.Worker.
func (w *CleanupWorker) Work(ctx context.Context, _ *river.Job[CleanupArgs]) error {
	_, err := w.Store.DeleteExpired(ctx)
	return err
}

// PeriodicCleanup is the periodic job for river.Config.PeriodicJobs that
// runs CleanupWorker every CleanupInterval.
func PeriodicCleanup() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(CleanupInterval),
		func() (river.JobArgs, *river.InsertOpts) { return CleanupArgs{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true})
}
