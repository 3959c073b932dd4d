package audit_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestAuditLogAppendOnly: the database refuses every change to audit_log
// but INSERT (migration 014), whatever the statement would touch.
func TestAuditLogAppendOnly(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	subject := ids.New("tst")
	if err := audit.Write(ctx, pool, audit.Entry{Actor: "test", Action: "test.append_only", Subject: subject,
		Details: map[string]any{"outcome": audit.OutcomeOK}}); err != nil {
		t.Fatal(err)
	}
	for name, sql := range map[string]string{
		"update":             `UPDATE audit_log SET details = '{"outcome":"rewritten"}' WHERE subject = $1`,
		"delete":             `DELETE FROM audit_log WHERE subject = $1`,
		"delete of no row":   `DELETE FROM audit_log WHERE subject = $1 AND false`,
		"truncate":           `TRUNCATE audit_log`,
		"update of no row":   `UPDATE audit_log SET actor = 'x' WHERE subject = $1 AND false`,
		"delete via cte":     `WITH d AS (DELETE FROM audit_log WHERE subject = $1 RETURNING id) SELECT count(*) FROM d`,
		"truncate cascading": `TRUNCATE audit_log CASCADE`,
	} {
		var args []any
		if name != "truncate" && name != "truncate cascading" {
			args = []any{subject}
		}
		_, err := pool.Exec(ctx, sql, args...)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s: err = %v, want SQLSTATE 42501 (append-only)", name, err)
		}
	}
	var n int
	var outcome string
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(min(details->>'outcome'), '') FROM audit_log WHERE subject = $1`,
		subject).Scan(&n, &outcome); err != nil {
		t.Fatal(err)
	}
	if n != 1 || outcome != audit.OutcomeOK {
		t.Errorf("after the refusals: %d rows, outcome %q; want the one row unchanged", n, outcome)
	}
	// Appending still works.
	if err := audit.Write(ctx, pool, audit.Entry{Actor: "test", Action: "test.append_only", Subject: subject}); err != nil {
		t.Errorf("insert after the refusals: %v", err)
	}
}
