package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/testenv"
)

// TestMain stops what testenv started (the test database, Vault). It is the
// one TestMain of this directory's test binary, for package main and
// main_test alike.
func TestMain(m *testing.M) {
	// After the tests: no card data or code in the database or the logs.
	logs := testenv.CaptureDefaultLog()
	os.Exit(testenv.Main(m, testenv.ScanPackage(logs, "PAN", "ID number", "OTP")))
}

func TestMerchantsCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	pool := testenv.Pool(t)
	store, err := merchants.NewStore(merchants.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := runMerchants(ctx, append(args, "--database-url", dbURL), &out)
		return out.String(), err
	}

	t.Run("--json prints exactly the three keys, once, and the secret authenticates", func(t *testing.T) {
		out, err := run(t, "create", "--name", "Acme Utilities", "--scopes", "withhold, bind", "--json", "--actor", "cli:test")
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(out))
		var got map[string]any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		if dec.More() {
			t.Fatalf("output holds more than one JSON value:\n%s", out)
		}
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"client_id", "client_secret", "merchant_id"}; !slices.Equal(keys, want) {
			t.Fatalf("keys = %v, want %v", keys, want)
		}
		id, _ := got["merchant_id"].(string)
		clientID, _ := got["client_id"].(string)
		secret, _ := got["client_secret"].(string)
		if id == "" || clientID == "" || len(secret) < 43 {
			t.Fatalf("output %s: want non-empty ids and a secret of ≥ 32 bytes in base64url", out)
		}

		m, err := store.Authenticate(ctx, clientID, secret)
		if err != nil {
			t.Fatalf("the printed secret does not authenticate: %v", err)
		}
		if m.ID != id || !slices.Equal(m.Scopes, []string{"bind", "withhold"}) || m.Name != "Acme Utilities" {
			t.Fatalf("merchant = %+v, want %s named Acme Utilities with bind and withhold", m, id)
		}
		if _, err := store.Authenticate(ctx, clientID, secret+"x"); !errors.Is(err, merchants.ErrInvalidClient) {
			t.Fatalf("a wrong secret: err = %v, want ErrInvalidClient", err)
		}

		var row, hash string
		if err := pool.QueryRow(ctx, `SELECT m::text, client_secret_hash FROM merchants m WHERE id = $1`, id).Scan(&row, &hash); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(row, secret) {
			t.Fatal("the merchants row holds the clear client secret")
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)); err != nil {
			t.Fatalf("client_secret_hash is not a bcrypt hash of the secret: %v", err)
		}
		var actor string
		if err := pool.QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'merchant.create' AND merchant_id = $1`, id).
			Scan(&actor); err != nil || actor != "cli:test" {
			t.Fatalf("merchant.create audit actor = %q (%v), want cli:test", actor, err)
		}
	})

	t.Run("readable form shows the secret once with a warning", func(t *testing.T) {
		out, err := run(t, "create", "--name", "Acme Lending")
		if err != nil {
			t.Fatal(err)
		}
		var clientID, secret string
		for line := range strings.SplitSeq(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "client_id" {
				clientID = f[1]
			}
			if len(f) == 2 && f[0] == "client_secret" {
				secret = f[1]
			}
		}
		if strings.Count(out, secret) != 1 || !strings.Contains(out, "shown only this once") {
			t.Fatalf("output does not show the secret exactly once with the warning:\n%s", out)
		}
		m, err := store.Authenticate(ctx, clientID, secret)
		if err != nil {
			t.Fatalf("the printed secret does not authenticate: %v", err)
		}
		if !slices.Equal(m.Scopes, merchants.AllScopes) {
			t.Fatalf("default scopes = %v, want %v", m.Scopes, merchants.AllScopes)
		}
	})

	refusals := []struct {
		name string
		args []string
		is   error
	}{
		{"no subcommand", []string{}, nil},
		{"unknown subcommand", []string{"delete"}, nil},
		{"missing name", []string{"create", "--json"}, nil},
		{"unknown scope", []string{"create", "--name", "X", "--scopes", "bind,admin"}, merchants.ErrInvalidScopes},
		{"empty scopes", []string{"create", "--name", "X", "--scopes", ","}, merchants.ErrInvalidScopes},
	}
	for _, tt := range refusals {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("err = %v, want an error (%v)", err, tt.is)
			}
			if out != "" {
				t.Fatalf("printed %q on failure", out)
			}
		})
	}
}

func TestMerchantsRetryDays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	pool := testenv.Pool(t)
	id := testenv.Merchant(t, pool)
	run := func(args ...string) error {
		var out bytes.Buffer
		return runMerchants(ctx, append(append([]string{"retry-days"}, args...), "--database-url", dbURL), &out)
	}
	days := func() []int32 {
		var d []int32
		if err := pool.QueryRow(ctx, `SELECT retry_days FROM merchants WHERE id = $1`, id).Scan(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if got := days(); !slices.Equal(got, []int32{1, 3, 5}) {
		t.Fatalf("default retry days = %v, want [1 3 5]", got)
	}
	if err := run("--merchant", id, "--days", "2, 4,7"); err != nil {
		t.Fatal(err)
	}
	if got := days(); !slices.Equal(got, []int32{2, 4, 7}) {
		t.Fatalf("retry days = %v, want [2 4 7]", got)
	}
	for _, bad := range []string{"3,1", "0", "1,1", "31", "x"} {
		if err := run("--merchant", id, "--days", bad); err == nil {
			t.Errorf("--days %s: no error", bad)
		}
	}
	if err := run("--merchant", "mch_nobody", "--days", "1"); !errors.Is(err, merchants.ErrNotFound) {
		t.Errorf("unknown merchant: %v, want ErrNotFound", err)
	}
	if got := days(); !slices.Equal(got, []int32{2, 4, 7}) {
		t.Fatalf("after refused changes retry days = %v, want [2 4 7] kept", got)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'merchant.retry_days' AND subject = $1`, id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("audit rows = %d (%v), want 1", n, err)
	}
}
