// Package audit writes the append-only audit trail (table audit_log).
//
// Entries name what happened to what, never a sensitive value: details must
// hold ids, versions and outcomes only.
package audit

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Execer is a pool, connection or transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the API request id, which Write records
// on every row written under it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id ctx carries, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

type execerKey struct{}

// WithExecer returns ctx carrying the transaction that audit rows written
// under it should join. Code that holds a transaction while it calls
// something that audits (a decryption) passes it this way, so the row
// commits with the change and no second connection is needed (which, with
// every connection held by such transactions, would deadlock the pool).
func WithExecer(ctx context.Context, db Execer) context.Context {
	return context.WithValue(ctx, execerKey{}, db)
}

// ExecerFrom returns the transaction ctx carries, or fallback.
func ExecerFrom(ctx context.Context, fallback Execer) Execer {
	if db, ok := ctx.Value(execerKey{}).(Execer); ok {
		return db
	}
	return fallback
}

// Entry is one audit row.
type Entry struct {
	MerchantID string         // empty for platform-level actions
	Actor      string         // who: "cli", "api:<client id>", "worker:<kind>"
	Action     string         // what: "key.rotate", "vault.detokenize", …
	Subject    string         // on what: a key label, card id, …
	Details    map[string]any // ids, versions, outcomes; never sensitive values
}

// Outcome values for Details["outcome"].
const (
	OutcomeOK     = "ok"
	OutcomeFailed = "failed"
)

// Write appends e. Run it in the transaction of the change it records.
func Write(ctx context.Context, db Execer, e Entry) error {
	details := []byte("{}")
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details)
		if err != nil {
			return fmt.Errorf("audit details: %w", err)
		}
		details = b
	}
	_, err := db.Exec(ctx,
		`INSERT INTO audit_log (merchant_id, actor, action, subject, details, request_id)
		 VALUES (NULLIF($1, ''), $2, $3, NULLIF($4, ''), $5, NULLIF($6, ''))`,
		e.MerchantID, e.Actor, e.Action, e.Subject, details, RequestID(ctx))
	if err != nil {
		return fmt.Errorf("write audit %s: %w", e.Action, err)
	}
	return nil
}
