package merchants_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/merchants"
)

func TestDisableAndEnable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	m, secret := f.create(t)
	tests := []struct {
		name         string
		act          func() error
		wantDisabled bool
	}{
		{"disable refuses the right secret", func() error { return f.store.Disable(ctx, m.ID, "cli:ops") }, true},
		{"disable again keeps it disabled", func() error { return f.store.Disable(ctx, m.ID, "cli:ops") }, true},
		{"enable lets it in again", func() error { return f.store.Enable(ctx, m.ID, "operator:op_x") }, false},
		{"enable again is harmless", func() error { return f.store.Enable(ctx, m.ID, "operator:op_x") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.clock.Advance(time.Minute)
			if err := tt.act(); err != nil {
				t.Fatal(err)
			}
			disabled, err := f.store.Disabled(ctx, m.ID)
			if err != nil || disabled != tt.wantDisabled {
				t.Fatalf("Disabled = %v, %v; want %v", disabled, err, tt.wantDisabled)
			}
			got, err := f.store.Get(ctx, m.ID)
			if err != nil || got.Disabled() != tt.wantDisabled {
				t.Fatalf("Get: Disabled() = %v (%v), want %v", got.Disabled(), err, tt.wantDisabled)
			}
			_, err = f.store.AuthenticateFrom(ctx, m.ClientID, "203.0.113.5", secret)
			if tt.wantDisabled && !errors.Is(err, merchants.ErrInvalidClient) {
				t.Errorf("token for a disabled merchant: %v, want ErrInvalidClient", err)
			}
			if !tt.wantDisabled && err != nil {
				t.Errorf("token for an enabled merchant: %v", err)
			}
		})
	}
	// The first disable's time stays.
	var first time.Time
	var n int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action IN ('merchant.disable', 'merchant.enable')
		AND merchant_id = $1`, m.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d disable/enable audit rows, want 4", n)
	}
	if err := f.store.Disable(ctx, m.ID, "cli:ops"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	if err := f.store.Disable(ctx, m.ID, "cli:ops"); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.QueryRow(ctx, `SELECT disabled_at FROM merchants WHERE id = $1`, m.ID).Scan(&first); err != nil {
		t.Fatal(err)
	}
	if !first.Equal(f.clock.Now().Add(-time.Hour)) {
		t.Errorf("disabled_at %s, want the first disable's %s", first, f.clock.Now().Add(-time.Hour))
	}
	var reasons []string
	for _, l := range f.logins(t, m.ClientID) {
		reasons = append(reasons, l.Outcome)
	}
	if len(reasons) != 4 || reasons[0] != "failed" || reasons[1] != "failed" || reasons[2] != "ok" || reasons[3] != "ok" {
		t.Errorf("auth.login outcomes %v, want failed failed ok ok", reasons)
	}
	var disabledRows int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND subject = $1
		AND details->>'reason' = 'disabled'`, m.ClientID).Scan(&disabledRows); err != nil {
		t.Fatal(err)
	}
	if disabledRows != 2 {
		t.Errorf("%d auth.login rows with reason disabled, want 2", disabledRows)
	}
}

func TestRotateSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	m, old := f.create(t)
	fresh, err := f.store.RotateSecret(ctx, m.ID, "operator:op_x")
	if err != nil {
		t.Fatal(err)
	}
	if fresh == old || len(fresh) != 43 {
		t.Fatalf("new secret of %d characters, equal to the old: %v", len(fresh), fresh == old)
	}
	if _, err := f.store.AuthenticateFrom(ctx, m.ClientID, "203.0.113.6", old); !errors.Is(err, merchants.ErrInvalidClient) {
		t.Errorf("old secret: %v, want ErrInvalidClient", err)
	}
	if got, err := f.store.AuthenticateFrom(ctx, m.ClientID, "203.0.113.6", fresh); err != nil || got.ID != m.ID {
		t.Errorf("new secret: %v", err)
	}
	var actor, clientID string
	if err := f.pool.QueryRow(ctx, `SELECT actor, details->>'client_id' FROM audit_log
		WHERE action = 'merchant.rotate_secret' AND merchant_id = $1`, m.ID).Scan(&actor, &clientID); err != nil {
		t.Fatal(err)
	}
	if actor != "operator:op_x" || clientID != m.ClientID {
		t.Errorf("audit row by %s for %s", actor, clientID)
	}
}

func TestAdminUnknownMerchant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	for _, id := range []string{"mch_aaaaaaaaaaaaaaaaaaaaaaaa", "not-an-id"} {
		calls := map[string]error{
			"Disable": f.store.Disable(ctx, id, "cli:ops"),
			"Enable":  f.store.Enable(ctx, id, "cli:ops"),
		}
		_, calls["RotateSecret"] = f.store.RotateSecret(ctx, id, "cli:ops")
		_, calls["Disabled"] = f.store.Disabled(ctx, id)
		for name, err := range calls {
			if !errors.Is(err, merchants.ErrNotFound) {
				t.Errorf("%s(%q): %v, want ErrNotFound", name, id, err)
			}
		}
	}
}
