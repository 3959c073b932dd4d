package merchants

import (
	"context"
	"errors"
)

// Disable disables the merchant: it gets no more tokens (the token
// endpoint answers as for a wrong secret) and the API refuses its live
// tokens (api.Auth, within its status cache's few seconds). Disabling a
// disabled merchant is not an error. Audited (merchant.disable). Error:
// ErrNotFound.
func (s *Store) Disable(ctx context.Context, id, actor string) error {
	return errors.New("merchants: not implemented yet")
}

// Enable undoes Disable. Audited (merchant.enable). Error: ErrNotFound.
func (s *Store) Enable(ctx context.Context, id, actor string) error {
	return errors.New("merchants: not implemented yet")
}

// RotateSecret gives the merchant a new client secret, returned once; the
// old one stops working at once (tokens issued with it live on until they
// expire, at most 15 minutes). Audited (merchant.rotate_secret). Error:
// ErrNotFound.
func (s *Store) RotateSecret(ctx context.Context, id, actor string) (secret string, err error) {
	return "", errors.New("merchants: not implemented yet")
}

// Disabled reports whether the merchant is disabled: one indexed read, for
// the API's status cache. Error: ErrNotFound.
func (s *Store) Disabled(ctx context.Context, id string) (bool, error) {
	return false, errors.New("merchants: not implemented yet")
}
