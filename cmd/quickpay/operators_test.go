package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestOperatorsCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	tok := testenv.SoftHSM(t)
	vault := testenv.Vault(t)
	conn := []string{"--database-url", testenv.DatabaseURL(t), "--vault-addr", vault.Addr, "--vault-token", vault.Token,
		"--hsm-module", tok.Module, "--hsm-token", tok.Label, "--hsm-pin-path", testenv.HSMPINPath, "--log-level", "warn"}
	run := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := runOperators(ctx, append(args, conn...), &out)
		return out.String(), err
	}
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: testenv.HSM(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(ctx); err != nil { // what a first serve does
		t.Fatal(err)
	}
	store, err := operators.NewStore(operators.Config{Pool: pool, Sealer: v})
	if err != nil {
		t.Fatal(err)
	}
	// login logs in with what a command printed, in the current TOTP step
	// or, for a second login, the next.
	login := func(t *testing.T, name, password, uri string, ahead time.Duration) error {
		t.Helper()
		key, err := otp.NewKeyFromURL(uri)
		if err != nil {
			t.Fatal(err)
		}
		code, err := totp.GenerateCode(key.Secret(), time.Now().Add(ahead))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = store.Login(ctx, name, password, code, "")
		return err
	}
	decode := func(t *testing.T, out string) enrolledOperator {
		t.Helper()
		dec := json.NewDecoder(strings.NewReader(out))
		var keys map[string]any
		if err := dec.Decode(&keys); err != nil || dec.More() {
			t.Fatalf("output is not one JSON value (%v):\n%s", err, out)
		}
		got := slices.Sorted(func(yield func(string) bool) {
			for k := range keys {
				if !yield(k) {
					return
				}
			}
		})
		if want := []string{"name", "operator_id", "password", "role", "totp_uri"}; !slices.Equal(got, want) {
			t.Fatalf("keys %v, want %v", got, want)
		}
		var e enrolledOperator
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatal(err)
		}
		return e
	}

	var created enrolledOperator
	t.Run("create --json prints the five keys once and they log in", func(t *testing.T) {
		out, err := run(t, "create", "--name", "Ops.Alice", "--role", "admin", "--json", "--actor", "cli:test")
		if err != nil {
			t.Fatal(err)
		}
		created = decode(t, out)
		if created.Name != "ops.alice" || created.Role != "admin" || len(created.Password) < 20 ||
			!strings.HasPrefix(created.TOTPURI, "otpauth://totp/") {
			t.Fatalf("printed %s", out)
		}
		if err := login(t, "ops.alice", created.Password, created.TOTPURI, 0); err != nil {
			t.Fatalf("the printed credentials do not log in: %v", err)
		}
		var actor string
		if err := pool.QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'operator.create' AND subject = $1`,
			created.OperatorID).Scan(&actor); err != nil || actor != "cli:test" {
			t.Errorf("audit actor %q (%v), want cli:test", actor, err)
		}
	})
	t.Run("create without --json draws the QR code", func(t *testing.T) {
		out, err := run(t, "create", "--name", "ops.bob", "--role", "viewer")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"operator_id", "password", "otpauth://totp/", "▀", "shown only this once"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			args    []string
			wantErr error // nil: any error
			inErr   string
		}{
			{[]string{"create", "--name", "ops.alice", "--role", "viewer"}, operators.ErrExists, ""},
			{[]string{"create", "--name", "ops.carol", "--role", "root"}, operators.ErrInvalidRole, "--role"},
			{[]string{"create", "--role", "viewer"}, nil, "needs --name"},
			{[]string{"disable", "--name", "nobody"}, operators.ErrNotFound, ""},
			{[]string{"reset", "--name", "nobody"}, operators.ErrNotFound, ""},
			{[]string{"promote", "--name", "ops.alice"}, nil, "usage"},
			{nil, nil, "usage"},
		} {
			_, err := run(t, tc.args...)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.inErr) {
				t.Errorf("%v: got %v, want %v containing %q", tc.args, err, tc.wantErr, tc.inErr)
			}
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM operators WHERE name = 'ops.carol'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("a refused create wrote %d rows (%v)", n, err)
		}
	})
	t.Run("reset --json gives new credentials; the old stop", func(t *testing.T) {
		out, err := run(t, "reset", "--name", "ops.alice", "--json")
		if err != nil {
			t.Fatal(err)
		}
		fresh := decode(t, out)
		if fresh.OperatorID != created.OperatorID || fresh.Password == created.Password {
			t.Fatalf("reset printed %s", out)
		}
		if err := login(t, "ops.alice", created.Password, fresh.TOTPURI, 30*time.Second); !errors.Is(err, operators.ErrBadLogin) {
			t.Errorf("old password: %v, want ErrBadLogin", err)
		}
		if err := login(t, "ops.alice", fresh.Password, fresh.TOTPURI, 30*time.Second); err != nil {
			t.Errorf("new credentials: %v", err)
		}
	})
	t.Run("disable, then list shows it", func(t *testing.T) {
		out, err := run(t, "disable", "--name", "ops.bob")
		if err != nil || !strings.Contains(out, "ops.bob is disabled") {
			t.Fatalf("%v: %s", err, out)
		}
		out, err = run(t, "list", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var list []listedOperator
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		status := map[string]string{}
		for _, o := range list {
			status[o.Name] = o.Status + "/" + o.Role
			if o.Name == "ops.alice" && o.LastLoginAt == nil {
				t.Error("ops.alice's last login is missing")
			}
		}
		if status["ops.alice"] != "active/admin" || status["ops.bob"] != "disabled/viewer" {
			t.Errorf("list: %v", status)
		}
		out, err = run(t, "list")
		if err != nil || !strings.Contains(out, "OPERATOR_ID") || !strings.Contains(out, "ops.bob") {
			t.Errorf("list as text (%v):\n%s", err, out)
		}
		if strings.Contains(out, created.Password) {
			t.Error("list prints a password")
		}
	})
}
