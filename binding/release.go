package binding

import (
	"context"
	"errors"
)

// Errors of ReleaseAgreement.
var (
	// ErrNoAgreement: the binding holds no agreement at the bank that
	// quickpay could release (it never reached one, or quickpay kept
	// nothing to release it with).
	ErrNoAgreement = errors.New("binding has no agreement to release")
	// ErrAlreadyReleased: the binding's agreement was released before;
	// ReleaseAgreement did nothing.
	ErrAlreadyReleased = errors.New("agreement already released")
)

// ReleaseAgreement asks the bank to end the agreement of merchantID's
// binding bindingID, one quickpay refused after the bank confirmed it and
// whose earlier release the bank did not accept. It is an operator's
// action: actor names the operator in the audit entry bind.release, which
// records the outcome.
//
// It returns the binding and nil once the bank released the agreement;
// the binding and ErrAlreadyReleased when it was released before (nothing
// is done); ErrNoAgreement when the binding holds no agreement to release;
// ErrNotFound for another merchant's or an unknown binding; and
// ErrBankUnavailable when the bank did not accept the release (the
// agreement stays open, audited failed).
func (s *Service) ReleaseAgreement(ctx context.Context, merchantID, bindingID, actor string) (Binding, error) {
	return Binding{}, errors.New("release agreement: not implemented")
}
