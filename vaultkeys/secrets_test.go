package vaultkeys_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestVaultPIN(t *testing.T) {
	ctx := context.Background()
	testenv.SoftHSM(t) // writes the token's PIN to Vault
	sec := testenv.Secrets(t)

	t.Run("read from real vault", func(t *testing.T) {
		pin, err := sec.PIN(testenv.HSMPINPath, "pin").PIN(ctx)
		if err != nil || len(pin) < 8 {
			t.Fatalf("PIN = %d chars, %v", len(pin), err)
		}
	})
	t.Run("missing secret", func(t *testing.T) {
		_, err := sec.ReadString(ctx, "secret/quickpay/nothing-here", "pin")
		if !errors.Is(err, vaultkeys.ErrSecretNotFound) || !strings.Contains(err.Error(), "quickpay/nothing-here") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing field", func(t *testing.T) {
		_, err := sec.ReadString(ctx, testenv.HSMPINPath, "so_pin")
		if !errors.Is(err, vaultkeys.ErrSecretNotFound) || !strings.Contains(err.Error(), `"so_pin"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad path", func(t *testing.T) {
		if _, err := sec.ReadString(ctx, "justamount", "pin"); err == nil {
			t.Fatal("a path without a mount was accepted")
		}
	})
	t.Run("wrong pin in vault refuses login", func(t *testing.T) {
		tok := testenv.SoftHSM(t)
		if err := sec.Write(ctx, "secret/quickpay/wrong", map[string]any{"pin": "00000000"}); err != nil {
			t.Fatal(err)
		}
		h, err := vaultkeys.OpenHSM(ctx, vaultkeys.HSMConfig{
			Module: tok.Module, TokenLabel: tok.Label, PIN: sec.PIN("secret/quickpay/wrong", "pin"),
		})
		if err == nil {
			h.Close()
			t.Fatal("opened the HSM with a wrong PIN")
		}
		if strings.Contains(err.Error(), "00000000") {
			t.Fatalf("error shows the PIN: %v", err)
		}
	})
}

func TestVaultStoppedOrSealed(t *testing.T) {
	ctx := context.Background()

	t.Run("stopped", func(t *testing.T) {
		srv := testenv.StartVault(t)
		sec, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{Addr: srv.Addr, Token: srv.Token, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer sec.Close()
		if err := sec.Write(ctx, "secret/quickpay/hsm", map[string]any{"pin": "1234"}); err != nil {
			t.Fatal(err)
		}
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		_, err = sec.ReadString(ctx, "secret/quickpay/hsm", "pin")
		if !errors.Is(err, vaultkeys.ErrVaultUnreachable) || !strings.Contains(err.Error(), srv.Addr) {
			t.Fatalf("err = %v", err)
		}
		if _, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{Addr: srv.Addr, Token: srv.Token}); !errors.Is(err, vaultkeys.ErrVaultUnreachable) {
			t.Fatalf("connect to stopped vault: %v", err)
		}
	})

	t.Run("sealed", func(t *testing.T) {
		srv := testenv.StartVault(t)
		sec, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{Addr: srv.Addr, Token: srv.Token})
		if err != nil {
			t.Fatal(err)
		}
		defer sec.Close()
		if err := sec.Healthy(ctx); err != nil {
			t.Fatalf("fresh vault unhealthy: %v", err)
		}
		if err := sec.Client().Sys().SealWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = sec.ReadString(ctx, "secret/quickpay/hsm", "pin")
		if !errors.Is(err, vaultkeys.ErrVaultSealed) {
			t.Fatalf("err = %v", err)
		}
		if err := sec.Healthy(ctx); !errors.Is(err, vaultkeys.ErrVaultSealed) {
			t.Fatalf("Healthy on sealed vault = %v", err)
		}
	})
}

func TestAppRoleLoginAndRenewal(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartVault(t)
	root, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{Addr: srv.Addr, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	c := root.Client()
	if err := c.Sys().PutPolicyWithContext(ctx, "quickpay",
		`path "secret/data/quickpay/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	// A short TTL makes the token expire during the test unless it is renewed.
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/quickpay", map[string]any{
		"token_policies": "quickpay", "token_ttl": "2s", "token_max_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	roleID, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/quickpay/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secretID, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/quickpay/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Write(ctx, "secret/quickpay/hsm", map[string]any{"pin": "24681357"}); err != nil {
		t.Fatal(err)
	}

	sec, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{
		Addr: srv.Addr, RoleID: roleID.Data["role_id"].(string), SecretID: secretID.Data["secret_id"].(string),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Close()
	// Read across several TTLs: each read succeeds only if the token was renewed.
	deadline := time.Now().Add(5 * time.Second)
	for reads := 0; time.Now().Before(deadline); reads++ {
		pin, err := sec.ReadString(ctx, "secret/quickpay/hsm", "pin")
		if err != nil || pin != "24681357" {
			t.Fatalf("read %d after %s: %q, %v", reads, time.Until(deadline), pin, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := sec.Write(ctx, "secret/quickpay/hsm", map[string]any{"pin": "x"}); !errors.Is(err, vaultkeys.ErrVaultDenied) {
		t.Fatalf("write outside the role's policy: %v", err)
	}
}
