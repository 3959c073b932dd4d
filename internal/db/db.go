// Package db holds quickpay's PostgreSQL plumbing: the pgx pool, the one
// transaction helper every store uses, and the embedded migrations (quickpay's
// own and River's), applied by `quickpay migrate` and at `serve` start.
package db

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures the pool.
type Config struct {
	// URL is a libpq connection string or URL. Required.
	URL string
	// MaxConns caps open connections. Defaults to 32: requests hold a
	// connection across an HSM or bank call, so the pool must be wider than
	// the CPU count (pgxpool's own default is max(4, CPUs)).
	MaxConns int32
	// ConnectTimeout bounds the first ping. Defaults to 10s.
	ConnectTimeout time.Duration
	// Tracer traces every statement (telemetry: spans when tracing is
	// on). Nil traces nothing.
	Tracer pgx.QueryTracer
}

// randomPageCost is the planner's price of a random page read on quickpay's
// connections: the value commonly used for SSDs and cached data, against
// PostgreSQL's 4 for spinning disks.
const randomPageCost = "1.1"

// Open creates a pool and checks that the server answers, so a missing
// database fails at start with a message that says what to start.
func Open(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	if cfg.URL == "" {
		return nil, errors.New("database URL is empty: set QUICKPAY_DATABASE_URL or run `make run`")
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	} else if pc.ConnString() != "" && !hasParam(cfg.URL, "pool_max_conns") {
		pc.MaxConns = 32
	}
	// quickpay reads and writes by key, rows a month-end run has just
	// touched; PostgreSQL's default random_page_cost (4) prices each index
	// probe as a disk seek, so growing tables flip plans to sequential
	// scans mid-run (docs/decisions.md, "Planner cost"). A URL that sets
	// random_page_cost, as a parameter or in options (or PGOPTIONS), wins.
	params := pc.ConnConfig.RuntimeParams
	if _, set := params["random_page_cost"]; !set && !strings.Contains(params["options"], "random_page_cost") {
		params["random_page_cost"] = randomPageCost
	}
	if cfg.Tracer != nil {
		pc.ConnConfig.Tracer = cfg.Tracer
	}
	timeout := cfg.ConnectTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres at %s:%d is not reachable (start it, or run `make run`): %w",
			pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	return pool, nil
}

// Beginner is what InTx needs: a pool or a connection.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InTx runs fn in a transaction and commits if fn returns nil. The rollback
// runs on a context detached from ctx's cancellation, so a cancelled request
// still releases its locks promptly instead of leaving the connection to time
// out.
func InTx(ctx context.Context, db Beginner, fn func(tx pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		// Also on panic: the connection must not go back holding locks.
		if committed {
			return
		}
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rbCtx)
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint violation,
// optionally of the named constraint.
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return false
	}
	return constraint == "" || pgErr.ConstraintName == constraint
}

func hasParam(url, name string) bool { return strings.Contains(url, name+"=") }
