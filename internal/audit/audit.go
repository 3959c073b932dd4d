// Package audit writes the append-only audit trail (table audit_log).
//
// Entries name what happened to what, never a sensitive value: details must
// hold ids, versions and outcomes only.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
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
// Under a Collector's context (WithCollector) the row is held for the
// collector's Flush instead, and db is not used (it may be nil).
func Write(ctx context.Context, db Execer, e Entry) error {
	r, err := newRow(ctx, e)
	if err != nil {
		return err
	}
	if c, ok := ctx.Value(collectorKey{}).(*Collector); ok {
		c.mu.Lock()
		c.rows = append(c.rows, r)
		c.mu.Unlock()
		return nil
	}
	if db == nil {
		return fmt.Errorf("write audit %s: no Collector in the context and no database", e.Action)
	}
	_, err = db.Exec(ctx,
		`INSERT INTO audit_log (merchant_id, actor, action, subject, details, request_id)
		 VALUES (NULLIF($1, ''), $2, $3, NULLIF($4, ''), $5, NULLIF($6, ''))`,
		r.merchantID, r.actor, r.action, r.subject, r.details, r.requestID)
	if err != nil {
		return fmt.Errorf("write audit %s: %w", e.Action, err)
	}
	return nil
}

// row is an entry as audit_log stores it.
type row struct {
	merchantID, actor, action, subject, details, requestID string
}

func newRow(ctx context.Context, e Entry) (row, error) {
	details := "{}"
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details)
		if err != nil {
			return row{}, fmt.Errorf("audit details: %w", err)
		}
		details = string(b)
	}
	return row{e.MerchantID, e.Actor, e.Action, e.Subject, details, RequestID(ctx)}, nil
}

type collectorKey struct{}

// Collector holds the rows written under its context, for a batch of work
// that audits each item (decrypting a job's agreement numbers): Flush
// writes them in one statement, in the transaction of the batch. Safe for
// concurrent use.
type Collector struct {
	mu   sync.Mutex
	rows []row
}

// WithCollector returns ctx under which Write holds rows for the returned
// Collector. The caller must Flush it in its transaction before it
// commits.
func WithCollector(ctx context.Context) (context.Context, *Collector) {
	c := &Collector{}
	return context.WithValue(ctx, collectorKey{}, c), c
}

// Flush writes the rows held, in the order they were written, and forgets
// them.
func (c *Collector) Flush(ctx context.Context, db Execer) error {
	n, args := c.take()
	if n == 0 {
		return nil
	}
	if _, err := db.Exec(ctx, insertRows, args...); err != nil {
		return fmt.Errorf("write %d audit rows: %w", n, err)
	}
	return nil
}

// Queue adds the statement that writes the rows held onto b, which the
// caller sends in the transaction of the change, and forgets them.
func (c *Collector) Queue(b *pgx.Batch) {
	if n, args := c.take(); n > 0 {
		b.Queue(insertRows, args...)
	}
}

// QueueCollected is Queue for the Collector of ctx (WithCollector), if any.
func QueueCollected(ctx context.Context, b *pgx.Batch) {
	if c, ok := ctx.Value(collectorKey{}).(*Collector); ok {
		c.Queue(b)
	}
}

const insertRows = `INSERT INTO audit_log (merchant_id, actor, action, subject, details, request_id)
	SELECT NULLIF(m, ''), a, act, NULLIF(s, ''), d::jsonb, NULLIF(r, '')
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
		AS u(m, a, act, s, d, r, n)
	ORDER BY n`

// take empties the collector and returns how many rows it held and the
// arguments of insertRows.
func (c *Collector) take() (int, []any) {
	c.mu.Lock()
	rows := c.rows
	c.rows = nil
	c.mu.Unlock()
	cols := make([][]string, 6)
	for _, r := range rows {
		for i, v := range []string{r.merchantID, r.actor, r.action, r.subject, r.details, r.requestID} {
			cols[i] = append(cols[i], v)
		}
	}
	return len(rows), []any{cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]}
}
