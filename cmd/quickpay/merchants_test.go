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

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
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

func TestMerchantsRPS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	pool := testenv.Pool(t)
	store, err := merchants.NewStore(merchants.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runMerchants(ctx, append(args, "--database-url", dbURL), &out)
		return out.String(), err
	}
	ceiling := func(t *testing.T, id string) int {
		t.Helper()
		n, err := store.RPSCeiling(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("create --rps sets the ceiling; --json keeps its three keys", func(t *testing.T) {
		out, err := run("create", "--name", "Ceiling Utilities", "--rps", "3", "--json", "--actor", "cli:test")
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 3 {
			t.Fatalf("--json output %q: want the three keys (%v)", out, err)
		}
		id, _ := got["merchant_id"].(string)
		if n := ceiling(t, id); n != 3 {
			t.Fatalf("ceiling = %d, want 3", n)
		}
		var details string
		if err := pool.QueryRow(ctx, `SELECT details::text FROM audit_log WHERE action = 'merchant.create' AND merchant_id = $1`, id).
			Scan(&details); err != nil || !strings.Contains(details, `"rps_ceiling": 3`) {
			t.Fatalf("merchant.create audit details %s (%v): want rps_ceiling 3", details, err)
		}

		out, err = run("create", "--name", "Ceiling Lending", "--rps", "4")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "rps_ceiling") || !strings.Contains(out, "4 requests/s") {
			t.Fatalf("readable output does not show the ceiling:\n%s", out)
		}
		out, err = run("create", "--name", "No Ceiling Co")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "rps_ceiling") || !strings.Contains(out, "none") {
			t.Fatalf("readable output does not say there is no ceiling:\n%s", out)
		}
	})

	t.Run("set-rps changes it and 0 takes it away, audited", func(t *testing.T) {
		id := testenv.Merchant(t, pool)
		if n := ceiling(t, id); n != 0 {
			t.Fatalf("a new merchant's ceiling = %d, want none", n)
		}
		out, err := run("set-rps", "--merchant", id, "--rps", "6", "--actor", "cli:test")
		if err != nil {
			t.Fatal(err)
		}
		if n := ceiling(t, id); n != 6 || !strings.Contains(out, id) || !strings.Contains(out, "6 requests/s") {
			t.Fatalf("ceiling = %d, output %q; want 6 and a line naming the merchant and the ceiling", n, out)
		}
		if _, err := run("set-rps", "--merchant", id, "--rps", "0", "--actor", "cli:test"); err != nil {
			t.Fatal(err)
		}
		var stored *int
		if err := pool.QueryRow(ctx, `SELECT rps_ceiling FROM merchants WHERE id = $1`, id).Scan(&stored); err != nil || stored != nil {
			t.Fatalf("rps_ceiling after --rps 0 = %v (%v), want NULL", stored, err)
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'merchant.rps_ceiling' AND subject = $1 AND actor = 'cli:test'`, id).
			Scan(&n); err != nil || n != 2 {
			t.Fatalf("merchant.rps_ceiling audit rows by cli:test = %d (%v), want 2", n, err)
		}
	})

	t.Run("bad input is refused naming the flag, changing nothing", func(t *testing.T) {
		id := testenv.Merchant(t, pool)
		if _, err := run("set-rps", "--merchant", id, "--rps", "2"); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"-1", "x", "1.5", "", "100001"} {
			out, err := run("set-rps", "--merchant", id, "--rps", bad)
			if err == nil || !strings.Contains(err.Error(), "rps") || out != "" {
				t.Errorf("set-rps --rps %q: err %v, output %q; want an error naming -rps and no output", bad, err, out)
			}
			name := "Refused " + bad
			out, err = run("create", "--name", name, "--rps", bad)
			if err == nil || !strings.Contains(err.Error(), "rps") || out != "" {
				t.Errorf("create --rps %q: err %v, output %q; want an error naming -rps and no output", bad, err, out)
			}
			var n int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM merchants WHERE name = $1`, name).Scan(&n); err != nil || n != 0 {
				t.Errorf("create --rps %q made %d merchants (%v), want none", bad, n, err)
			}
		}
		if _, err := run("set-rps", "--merchant", id); err == nil || !strings.Contains(err.Error(), "--rps") {
			t.Errorf("set-rps without --rps: %v, want an error naming --rps", err)
		}
		if _, err := run("set-rps", "--rps", "3"); err == nil || !strings.Contains(err.Error(), "--merchant") {
			t.Errorf("set-rps without --merchant: %v, want an error naming --merchant", err)
		}
		if _, err := run("set-rps", "--merchant", "mch_nobody", "--rps", "3"); !errors.Is(err, merchants.ErrNotFound) {
			t.Errorf("unknown merchant: %v, want ErrNotFound", err)
		}
		if n := ceiling(t, id); n != 2 {
			t.Fatalf("after refused changes the ceiling = %d, want 2 kept", n)
		}
	})
}
