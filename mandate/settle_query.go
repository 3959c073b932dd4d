package mandate

import (
	"context"
	"errors"
)

// ErrNothingUnknown: the charge's latest attempt is not waiting on the
// bank's answer (SettleByQuery has nothing to settle).
var ErrNothingUnknown = errors.New("charge has no attempt with an unknown outcome")

// SettleByQuery asks the bank now for the outcome of the latest attempt of
// merchantID's charge chargeID, when that attempt's outcome is unknown
// (its order number is queried; nothing is debited anew), and applies the
// answer as the scheduled query does. actor names the operator in the
// audit entry. When the bank still says processing the charge stays as it
// is and the scheduled queries go on.
//
// It returns the charge as it is afterwards; ErrNotFound for another
// merchant's or an unknown charge; ErrNothingUnknown when the latest
// attempt's outcome is known.
func (s *Service) SettleByQuery(ctx context.Context, merchantID, chargeID, actor string) (Charge, error) {
	return Charge{}, errors.New("settle by query: not implemented")
}
