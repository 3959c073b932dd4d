package mandate

import "context"

// Execute does a charge job's work on its order numbers, as ChargeWorker
// does (rerun: the job ran before), so that a test can run it under a
// context of its own.
func (s *Service) Execute(ctx context.Context, orderNos []string, rerun bool) error {
	return s.execute(ctx, orderNos, rerun)
}

// NoticeLease is how long a run holds the notices it claimed.
const NoticeLease = noticeLease

// SendRefunds does a refund job's work, as RefundWorker does: job is the
// job's id, rerun that it ran before.
func (s *Service) SendRefunds(ctx context.Context, job int64, rerun bool) error {
	return s.sendRefunds(ctx, job, rerun)
}
