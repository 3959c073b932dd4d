package mandate

import (
	"context"
	"errors"

	"github.com/riverqueue/river"
)

// RefundArgs is a job that sends refunds to their bank and settles them.
type RefundArgs struct {
	IDs []string `json:"ids"`
}

// Kind implements river.JobArgs.
func (RefundArgs) Kind() string { return "mandate_refund" }

// RefundWorker sends pending refunds to their bank and settles their
// answers.
type RefundWorker struct {
	river.WorkerDefaults[RefundArgs]
	Service *Service
}

// Work implements river.Worker. TODO(refunds).
func (w *RefundWorker) Work(ctx context.Context, job *river.Job[RefundArgs]) error {
	return errors.New("refund worker: not implemented")
}
