package db_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestFreshDatabase must stay the first test in this file and must not call
// t.Parallel: Go runs sequential top-level tests in source order before any
// parallel one resumes, so nothing in this package has written yet.
func TestFreshDatabase(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)

	var name string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "qp_test_") {
		t.Errorf("connected to %q, want a per-package qp_test_* database", name)
	}
	for _, table := range []string{"key_policies", "key_versions", "audit_log", "river_job"} {
		var n int
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s`, table)).Scan(&n); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if n != 0 {
			t.Errorf("fresh database has %d rows in %s", n, table)
		}
	}
}

// newTable creates a table of the test's own with one row (id 1) and drops
// it when t ends.
func newTable(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	ident := pgx.Identifier{"t_" + rand.Text()}.Sanitize()
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text NOT NULL)`, ident)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), fmt.Sprintf(`DROP TABLE IF EXISTS %s`, ident)) })
	if _, err := pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s VALUES (1, 'one')`, ident)); err != nil {
		t.Fatal(err)
	}
	return ident
}

func count(t *testing.T, pool *pgxpool.Pool, table string, id int) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*) FROM %s WHERE id = $1`, table), id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInTx(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)

	t.Run("commits when fn returns nil", func(t *testing.T) {
		table := newTable(t, pool)
		err := db.InTx(context.Background(), pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s VALUES (2, 'two')`, table))
			return err
		})
		if err != nil {
			t.Fatalf("InTx = %v", err)
		}
		if n := count(t, pool, table, 2); n != 1 {
			t.Fatalf("committed row found %d times, want 1", n)
		}
	})

	t.Run("rolls back when fn returns an error", func(t *testing.T) {
		table := newTable(t, pool)
		boom := errors.New("boom")
		err := db.InTx(context.Background(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s VALUES (2, 'two')`, table)); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want fn's error", err)
		}
		if n := count(t, pool, table, 2); n != 0 {
			t.Fatalf("row of a rolled-back transaction found %d times", n)
		}
	})

	t.Run("cancelled context still rolls back and releases the row lock", func(t *testing.T) {
		table := newTable(t, pool)
		// A connection of its own, so the test can see it survives: a
		// rollback that ran leaves it idle and usable; one skipped because
		// ctx was done would leave it in the transaction or dead.
		conn, err := pgx.Connect(context.Background(), testenv.DatabaseURL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err = db.InTx(ctx, conn, func(tx pgx.Tx) error {
			var v string
			if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT v FROM %s WHERE id = 1 FOR UPDATE`, table)).Scan(&v); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`UPDATE %s SET v = 'changed' WHERE id = 1`, table)); err != nil {
				return err
			}
			cancel()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("InTx = %v, want context.Canceled", err)
		}
		if conn.IsClosed() {
			t.Fatal("InTx's connection was closed instead of rolled back")
		}
		if st := conn.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("connection transaction status after InTx = %q, want idle 'I'", st)
		}

		other, err := pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Release()
		lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer lcancel()
		ltx, err := other.Begin(lctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ltx.Rollback(context.Background()) }()
		if _, err := ltx.Exec(lctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := ltx.QueryRow(lctx, fmt.Sprintf(`SELECT v FROM %s WHERE id = 1 FOR UPDATE`, table)).Scan(&v); err != nil {
			t.Fatalf("row lock still held after InTx returned: %v", err)
		}
		if v != "one" {
			t.Fatalf("row v = %q after rollback, want the original %q", v, "one")
		}
	})

	t.Run("panic in fn rolls back and releases the connection", func(t *testing.T) {
		// Production bug: InTx's deferred rollback runs only when err is
		// set, and a panic leaves err nil, so the transaction stays open
		// with its locks on a connection that never returns to the pool
		// (echo's Recover middleware then keeps the server running).
		// Unskip once InTx rolls back on panic too.

		table := newTable(t, pool)
		conn, err := pgx.Connect(context.Background(), testenv.DatabaseURL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		recovered := func() (r any) {
			defer func() { r = recover() }()
			_ = db.InTx(context.Background(), conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(context.Background(), fmt.Sprintf(`SELECT 1 FROM %s WHERE id = 1 FOR UPDATE`, table)); err != nil {
					return err
				}
				panic("boom")
			})
			return nil
		}()
		if recovered != "boom" {
			t.Fatalf("InTx recovered = %v, want the panic to propagate", recovered)
		}
		if st := conn.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("connection transaction status after a panic = %q, want idle 'I'", st)
		}
	})

	t.Run("begin failure is reported", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		called := false
		err := db.InTx(ctx, pool, func(pgx.Tx) error { called = true; return nil })
		if err == nil || !strings.Contains(err.Error(), "begin") {
			t.Fatalf("InTx on a cancelled context = %v, want a begin error", err)
		}
		if called {
			t.Fatal("fn ran although Begin failed")
		}
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)

	// The package database is already migrated (cloned from the template),
	// so both runs are re-runs.
	for i := range 2 {
		if err := db.Migrate(ctx, pool); err != nil {
			t.Fatalf("Migrate run %d: %v", i+1, err)
		}
	}
	for _, table := range []string{"key_policies", "key_versions", "audit_log", "river_job", "quickpay_schema_version"} {
		var reg *string
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1)::text`, "public."+table).Scan(&reg); err != nil {
			t.Fatal(err)
		}
		if reg == nil {
			t.Errorf("table %s missing after Migrate", table)
		}
	}
	var version int
	if err := pool.QueryRow(ctx, `SELECT version FROM quickpay_schema_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 1 {
		t.Errorf("quickpay_schema_version = %d, want >= 1", version)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM quickpay_schema_version`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("quickpay_schema_version has %d rows, want 1", rows)
	}
}

func TestIsUniqueViolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)

	// Provoke real errors inside a transaction that is rolled back, so the
	// schema's tables stay empty for other tests.
	run := func(t *testing.T, sqls ...string) error {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for _, s := range sqls {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		t.Fatal("statements did not fail")
		return nil
	}
	dup := run(t,
		`INSERT INTO key_policies (purpose, current_version) VALUES ('data', 1)`,
		`INSERT INTO key_policies (purpose, current_version) VALUES ('data', 1)`)
	check := run(t, `INSERT INTO key_policies (purpose, current_version) VALUES ('nope', 1)`)

	var pgErr *pgconn.PgError
	if !errors.As(dup, &pgErr) || pgErr.Code != "23505" || pgErr.ConstraintName != "key_policies_pkey" {
		t.Fatalf("duplicate insert gave %v, want 23505 on key_policies_pkey", dup)
	}

	tests := []struct {
		name       string
		err        error
		constraint string
		want       bool
	}{
		{"23505 on the named constraint", dup, "key_policies_pkey", true},
		{"23505 with any constraint", dup, "", true},
		{"23505 wrapped", fmt.Errorf("insert policy: %w", dup), "key_policies_pkey", true},
		{"23505 on another constraint", dup, "key_versions_label_key", false},
		{"check violation", check, "", false},
		{"plain error naming the code", errors.New("ERROR: duplicate key (SQLSTATE 23505)"), "", false},
		{"nil", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := db.IsUniqueViolation(tt.err, tt.constraint); got != tt.want {
				t.Fatalf("IsUniqueViolation(%v, %q) = %v, want %v", tt.err, tt.constraint, got, tt.want)
			}
		})
	}
}

func TestSchemaHashIsStable(t *testing.T) {
	t.Parallel()
	a, err := db.SchemaHash()
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.SchemaHash()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("SchemaHash changed between calls: %s then %s", a, b)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a) {
		t.Fatalf("SchemaHash = %q, want 16 hex digits", a)
	}
}

// TestOldChargeJobsBecomeBatches: migration 007 turns charge jobs queued
// under the one-attempt kind into batches of one, and 011 turns batches of
// attempts into lists of their order numbers, in order. Both keep a job's
// attempt count and leave finished jobs alone.
func TestOldChargeJobsBecomeBatches(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	args := `{"order_no": "QP1", "merchant_id": "mch_1", "charge_id": "chg_1", "card_id": "card_1",
		"bank_code": "ICBC", "amount": 4321}`
	batch := `{"attempts": [` + args + `, {"order_no": "QP2", "merchant_id": "mch_2", "charge_id": "chg_2",
		"card_id": "card_2", "bank_code": "ICBC", "amount": 1}]}`
	var queued, batched, batchDone, done int64
	if err := pool.QueryRow(ctx, `INSERT INTO river_job (kind, args, queue, state, max_attempts, attempt, priority)
		VALUES ('mandate_charge', $1, 'charges', 'retryable', 25, 2, 1) RETURNING id`, args).Scan(&queued); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO river_job (kind, args, queue, state, max_attempts, attempt, priority)
		VALUES ('mandate_charges', $1, 'charges', 'available', 25, 0, 1) RETURNING id`, batch).Scan(&batched); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO river_job (kind, args, queue, state, max_attempts, attempt, priority,
		finalized_at) VALUES ('mandate_charges', $1, 'charges', 'completed', 25, 1, 1, now()) RETURNING id`,
		batch).Scan(&batchDone); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO river_job (kind, args, queue, state, max_attempts, attempt, priority,
		finalized_at) VALUES ('mandate_charge', $1, 'charges', 'completed', 25, 1, 1, now()) RETURNING id`,
		args).Scan(&done); err != nil {
		t.Fatal(err)
	}
	// Back to the version before 007 (this database is this package's, and
	// 007 and 011 are the migrations touching river_job), and up again.
	if _, err := pool.Exec(ctx, `UPDATE quickpay_schema_version SET version = 6`); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	check := func(id int64, wantKind, wantArgs string, wantAttempt int) {
		t.Helper()
		var kind string
		var attempt int
		var same bool
		if err := pool.QueryRow(ctx, `SELECT kind, attempt, args = $2::jsonb FROM river_job WHERE id = $1`,
			id, wantArgs).Scan(&kind, &attempt, &same); err != nil {
			t.Fatal(err)
		}
		if kind != wantKind || attempt != wantAttempt || !same {
			t.Errorf("job %d: kind %s, attempt %d, args as wanted %v; want %s, %d", id, kind, attempt, same,
				wantKind, wantAttempt)
		}
	}
	check(queued, "mandate_charges", `{"order_nos": ["QP1"]}`, 2)
	check(batched, "mandate_charges", `{"order_nos": ["QP1", "QP2"]}`, 0)
	check(batchDone, "mandate_charges", batch, 1)
	check(done, "mandate_charge", args, 1)
}

// TestBatchOutsideTransactionIsAtomic pins the pgx behaviour that code
// saving a row and its audit rows in one batch relies on: a batch sent on
// the pool runs as one implicit transaction, so a failing statement undoes
// the ones before it.
func TestBatchOutsideTransactionIsAtomic(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	table := newTable(t, pool)
	var b pgx.Batch
	b.Queue(fmt.Sprintf(`INSERT INTO %s VALUES (2, 'two')`, table))
	b.Queue(fmt.Sprintf(`INSERT INTO %s VALUES (3, 'three')`, table))
	b.Queue(`SELECT 1/0`)
	if err := pool.SendBatch(context.Background(), &b).Close(); err == nil {
		t.Fatal("a batch with a failing statement succeeded")
	}
	for _, id := range []int{2, 3} {
		if n := count(t, pool, table, id); n != 0 {
			t.Errorf("row %d of a failed batch found %d times, want 0", id, n)
		}
	}
}

// TestOpenPricesRandomReads: quickpay's connections plan with
// random_page_cost 1.1 (docs/decisions.md, "Planner cost"), unless the
// database URL sets it, as a parameter or in options.
func TestOpenPricesRandomReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	for _, tc := range []struct{ url, want string }{
		{url, "1.1"},
		{url + sep + "random_page_cost=2.5", "2.5"},
		{url + sep + "options=-c%20random_page_cost%3D3", "3"},
	} {
		pool, err := db.Open(ctx, db.Config{URL: tc.url})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = pool.QueryRow(ctx, `SHOW random_page_cost`).Scan(&got)
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("random_page_cost = %s, want %s", got, tc.want)
		}
	}
}
