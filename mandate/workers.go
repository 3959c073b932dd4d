package mandate

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

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

// ChargeWorker sends a batch of claimed attempts to their bank.
type ChargeWorker struct {
	river.WorkerDefaults[ChargeArgs]
	Service *Service
}

// Work implements river.Worker. A job that runs again (after a crash or an
// error) asks the bank about each of its orders before it sends it.
func (w *ChargeWorker) Work(ctx context.Context, job *river.Job[ChargeArgs]) error {
	return w.Service.execute(ctx, job.Args.OrderNos, job.Attempt > 1)
}

// Timeout implements river.Worker. It bounds a batch's bank calls,
// including their waits for the bank's limits; answers already had are
// settled past it (execute). It does not follow the client's JobTimeout,
// which may be short for a quick rescue of crashed runs.
func (w *ChargeWorker) Timeout(*river.Job[ChargeArgs]) time.Duration { return 30 * time.Second }

// QueryWorker settles an attempt whose outcome is unknown by asking the
// bank, and asks again later (Config.QueryBackoff) while it stays unknown.
type QueryWorker struct {
	river.WorkerDefaults[QueryArgs]
	Service *Service
}

// Work implements river.Worker.
func (w *QueryWorker) Work(ctx context.Context, job *river.Job[QueryArgs]) error {
	return w.Service.query(ctx, job.Args)
}
