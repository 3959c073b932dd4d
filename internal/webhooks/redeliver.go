package webhooks

import (
	"context"
	"errors"
)

// ErrNoEndpoint: the merchant has no webhook endpoint to deliver to.
var ErrNoEndpoint = errors.New("webhooks: no endpoint")

// Redeliver enqueues a new delivery of merchantID's event eventID to the
// merchant's current endpoint, as the usual delivery job, so its attempts
// are recorded like any other delivery's. actor names the operator in the
// audit entry.
//
// It returns ErrNotFound for another merchant's or an unknown event and
// ErrNoEndpoint when the merchant has no endpoint.
func (s *Service) Redeliver(ctx context.Context, merchantID, eventID, actor string) error {
	return errors.New("redeliver: not implemented")
}
