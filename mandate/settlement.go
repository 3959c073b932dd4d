package mandate

import (
	"context"
	"errors"

	"github.com/riverqueue/river"
)

// SettlementArgs is the morning job that writes the day before's
// settlement files (DESIGN.md "Settlement file").
type SettlementArgs struct{}

// Kind implements river.JobArgs.
func (SettlementArgs) Kind() string { return "settlement_files" }

// SettlementWorker writes the settlement files of days whose statements
// are final.
type SettlementWorker struct {
	river.WorkerDefaults[SettlementArgs]
	Service *Service
}

// Work implements river.Worker. TODO(settlement).
func (w *SettlementWorker) Work(ctx context.Context, job *river.Job[SettlementArgs]) error {
	return errors.New("settlement worker: not implemented")
}

// PeriodicSettlement is the River periodic job that runs SettlementWorker
// each morning, Asia/Shanghai. TODO(settlement): its schedule.
func PeriodicSettlement() *river.PeriodicJob { return nil }
