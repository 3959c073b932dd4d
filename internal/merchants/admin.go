package merchants

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// actorOr is actor, or the actor ctx names (WithActor) when it is empty.
func actorOr(ctx context.Context, actor string) string {
	if actor != "" {
		return actor
	}
	return actorFrom(ctx)
}

// Disable disables the merchant: it gets no more tokens (the token
// endpoint answers as for a wrong secret) and the API refuses its live
// tokens (api.Auth, within its status cache's few seconds). Disabling a
// disabled merchant is not an error and keeps the first disabled_at.
// Audited (merchant.disable). Error: ErrNotFound.
func (s *Store) Disable(ctx context.Context, id, actor string) error {
	return s.setDisabled(ctx, id, actor, true)
}

// Enable undoes Disable. Audited (merchant.enable). Error: ErrNotFound.
func (s *Store) Enable(ctx context.Context, id, actor string) error {
	return s.setDisabled(ctx, id, actor, false)
}

func (s *Store) setDisabled(ctx context.Context, id, actor string, disable bool) error {
	if !ids.Valid(IDPrefix, id) {
		return ErrNotFound
	}
	action, at := "merchant.enable", (*time.Time)(nil)
	if disable {
		now := s.clock.Now().UTC().Truncate(time.Microsecond)
		action, at = "merchant.disable", &now
	}
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var wasDisabled bool
		err := tx.QueryRow(ctx, `
			WITH before AS (SELECT id, disabled_at FROM merchants WHERE id = $1 FOR UPDATE)
			UPDATE merchants m SET disabled_at = CASE WHEN $2::timestamptz IS NULL THEN NULL
				ELSE coalesce(before.disabled_at, $2) END
			FROM before WHERE m.id = before.id
			RETURNING before.disabled_at IS NOT NULL`, id, at).Scan(&wasDisabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{MerchantID: id, Actor: actorOr(ctx, actor), Action: action,
			Subject: id, Details: map[string]any{"was_disabled": wasDisabled}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s %s: %w", action, id, err)
	}
	return err
}

// RotateSecret gives the merchant a new client secret, returned once; the
// old one stops working at once (tokens issued with it live on until they
// expire, at most 15 minutes; Disable refuses them too). Audited
// (merchant.rotate_secret). Error: ErrNotFound.
func (s *Store) RotateSecret(ctx context.Context, id, actor string) (secret string, err error) {
	if !ids.Valid(IDPrefix, id) {
		return "", ErrNotFound
	}
	secret, err = newSecret()
	if err != nil {
		return "", err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return "", fmt.Errorf("hash client secret: %w", err)
	}
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var clientID string
		err := tx.QueryRow(ctx, `UPDATE merchants SET client_secret_hash = $2 WHERE id = $1 RETURNING client_id`,
			id, string(hash)).Scan(&clientID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{MerchantID: id, Actor: actorOr(ctx, actor), Action: "merchant.rotate_secret",
			Subject: id, Details: map[string]any{"client_id": clientID}})
	})
	if errors.Is(err, ErrNotFound) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("rotate secret of %s: %w", id, err)
	}
	return secret, nil
}

// Disabled reports whether the merchant is disabled: one indexed read, for
// the API's status cache. Error: ErrNotFound.
func (s *Store) Disabled(ctx context.Context, id string) (bool, error) {
	if !ids.Valid(IDPrefix, id) {
		return false, ErrNotFound
	}
	var disabled bool
	err := s.pool.QueryRow(ctx, `SELECT disabled_at IS NOT NULL FROM merchants WHERE id = $1`, id).Scan(&disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("status of merchant %s: %w", id, err)
	}
	return disabled, nil
}
