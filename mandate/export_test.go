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
