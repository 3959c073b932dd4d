package limits_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func newLimiter(t *testing.T) *limits.Limiter {
	t.Helper()
	return limiterOn(t, testenv.Pool(t))
}

// limiterOn is a Limiter over pool.
func limiterOn(t *testing.T, pool *pgxpool.Pool) *limits.Limiter {
	t.Helper()
	l, err := limits.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestTakeSlidingWindows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLimiter(t)
	card := []byte("card-fp-1")
	hour, day := limits.Rule{Cap: 2, Window: time.Hour}, limits.Rule{Cap: 3, Window: 24 * time.Hour}
	take := func(at time.Time) error {
		return l.Take(ctx, at, limits.Check{Kind: "apply", Key: card, Rule: hour, Take: true},
			limits.Check{Kind: "apply", Key: card, Rule: day, Take: true})
	}
	for i, at := range []time.Time{t0, t0.Add(time.Minute)} {
		if err := take(at); err != nil {
			t.Fatalf("take %d: %v", i+1, err)
		}
	}
	var le *limits.LimitedError
	if err := take(t0.Add(2 * time.Minute)); !errors.As(err, &le) || le.RetryAfter != 58*time.Minute {
		t.Fatalf("third take in the hour: %v, want limited for 58m", err)
	}
	// The refused take counted nothing: an hour after the first, one fits.
	if err := take(t0.Add(time.Hour + time.Second)); err != nil {
		t.Fatalf("after the first left the hour: %v", err)
	}
	// Now the day rule (3) refuses until the first take is a day old.
	if err := take(t0.Add(3 * time.Hour)); !errors.As(err, &le) || le.RetryAfter != 21*time.Hour {
		t.Fatalf("fourth take in the day: %v, want limited for 21h", err)
	}
	if err := take(t0.Add(24*time.Hour + time.Second)); err != nil {
		t.Fatalf("a day after the first: %v", err)
	}
	// Another key is counted apart.
	if err := l.Take(ctx, t0.Add(2*time.Minute), limits.Check{Kind: "apply", Key: []byte("card-fp-2"), Rule: hour, Take: true}); err != nil {
		t.Fatalf("another key: %v", err)
	}
}

func TestTakeAllOrNothingAndChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLimiter(t)
	one := limits.Rule{Cap: 1, Window: time.Hour}
	phone, card := []byte("phone"), []byte("card")
	if err := l.Take(ctx, t0, limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true}); err != nil {
		t.Fatal(err)
	}
	// sms is full, so apply must not be counted either.
	err := l.Take(ctx, t0, limits.Check{Kind: "apply", Key: card, Rule: one, Take: true},
		limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true})
	if !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("take with a full rule: %v, want ErrLimited", err)
	}
	if err := l.Take(ctx, t0, limits.Check{Kind: "apply", Key: card, Rule: one, Take: true}); err != nil {
		t.Fatalf("apply was counted by a refused take: %v", err)
	}
	// A check without take reads only; Record counts without a cap.
	mm := limits.Check{Kind: "mismatch", Key: card, Rule: limits.Rule{Cap: 2, Window: time.Hour}}
	for range 3 {
		if err := l.Take(ctx, t0, mm); err != nil {
			t.Fatalf("check-only counted: %v", err)
		}
	}
	for range 2 {
		if err := l.Record(ctx, t0, time.Hour, "mismatch", card); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Take(ctx, t0, mm); !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("two mismatches recorded, cap 2: %v, want ErrLimited", err)
	}
	// Release gives back one instant.
	if err := l.Release(ctx, t0, limits.Key{Kind: "sms", Key: phone}); err != nil {
		t.Fatal(err)
	}
	if err := l.Take(ctx, t0, limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true}); err != nil {
		t.Fatalf("after release: %v", err)
	}
	// A full check-only rule refuses a take of keys never seen before (the
	// single-statement path), with its wait, and they are not counted.
	fresh := []byte("card-never-seen")
	var le *limits.LimitedError
	err = l.Take(ctx, t0.Add(10*time.Minute), limits.Check{Kind: "apply", Key: fresh, Rule: one, Take: true}, mm)
	if !errors.As(err, &le) || le.RetryAfter != 50*time.Minute {
		t.Fatalf("fresh key with a full check-only rule: %v, want limited for 50m", err)
	}
	if err := l.Take(ctx, t0.Add(10*time.Minute), limits.Check{Kind: "apply", Key: fresh, Rule: one, Take: true}); err != nil {
		t.Fatalf("the refused take counted the fresh key: %v", err)
	}
}

func TestTakeConcurrentExact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLimiter(t)
	rule := limits.Rule{Cap: 5, Window: time.Hour}
	var mu sync.Mutex
	ok, limited := 0, 0
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Overlapping keys in either order must not deadlock.
			a, b := []byte("a"), []byte("b")
			if i%2 == 1 {
				a, b = b, a
			}
			err := l.Take(ctx, t0, limits.Check{Kind: "k", Key: a, Rule: rule, Take: true},
				limits.Check{Kind: "k", Key: b, Rule: rule, Take: true})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, limits.ErrLimited):
				limited++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 5 || limited != 15 {
		t.Fatalf("%d taken, %d limited; want 5 and 15", ok, limited)
	}
}

func TestDeleteExpired(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	l := limiterOn(t, pool)
	// Before every other test's instants, so that their rows stay.
	old := t0.AddDate(-5, 0, 0)
	if err := l.Take(ctx, old, limits.Check{Kind: "x", Key: []byte("k"), Rule: limits.Rule{Cap: 1, Window: time.Hour}, Take: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.DeleteExpired(ctx, old.Add(59*time.Minute)); err != nil || n != 0 {
		t.Fatalf("within the window: deleted %d, %v; want 0", n, err)
	}
	if n, err := l.DeleteExpired(ctx, old.Add(61*time.Minute)); err != nil || n != 1 {
		t.Fatalf("after the window: deleted %d, %v; want 1", n, err)
	}
}

// TestTakeInATransaction: a take in a caller's transaction needs no second
// connection (here the pool has one, which the transaction holds), a
// refusal gives its fresh rows back in it, and the count commits or rolls
// back with it.
func TestTakeInATransaction(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool, err := db.Open(ctx, db.Config{URL: testenv.DatabaseURL(t), MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	l := limiterOn(t, pool)
	one := limits.Rule{Cap: 1, Window: time.Hour}
	phone, card := []byte("tx-phone"), []byte("tx-card")
	if err := l.Take(ctx, t0, limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true}); err != nil {
		t.Fatal(err)
	}
	inTx := func(commit bool, checks ...limits.Check) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		err = l.TakeIn(ctx, tx, t0, checks...)
		if commit {
			if cerr := tx.Commit(ctx); cerr != nil {
				t.Fatal(cerr)
			}
		}
		return err
	}
	apply := limits.Check{Kind: "apply", Key: card, Rule: one, Take: true}
	// The card is fresh, the phone full: the refusal gives the card back
	// on the transaction, which commits.
	if err := inTx(true, apply, limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true}); !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("take with a full rule in a transaction: %v, want ErrLimited", err)
	}
	// A take rolled back counts nothing.
	if err := inTx(false, apply); err != nil {
		t.Fatal(err)
	}
	// So the card has its one take, committed here.
	if err := inTx(true, apply); err != nil {
		t.Fatalf("the card after a refusal and a rollback: %v", err)
	}
	if err := l.Take(ctx, t0, apply); !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("the card after a committed take: %v, want ErrLimited", err)
	}
}

// TestTakeReadsByKeyOnly: a take probes limit_events by primary key, never
// scans it whole, even with plans made while the table was empty. The
// functions keep one generic plan per connection; one made from an empty
// or small table's statistics scanned the whole table, and kept doing so
// as the table grew (migration 034). The table is emptied as a crash of the
// server empties it (unlogged), so the test does not run in parallel.
func TestTakeReadsByKeyOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool := testenv.PoolOf(t, 1)
	// No ANALYZE but the test's own: one would replan on the grown table.
	for _, sql := range []string{`ALTER TABLE limit_events SET (autovacuum_enabled = off)`,
		`TRUNCATE limit_events`, `ANALYZE limit_events`} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	l := limiterOn(t, pool)
	day := limits.Rule{Cap: 5, Window: 24 * time.Hour}
	apply := func(card, phone, id string) []limits.Check {
		return []limits.Check{
			{Kind: "apply", Key: []byte(card), Rule: day, Take: true},
			{Kind: "sms", Key: []byte(phone), Rule: day, Take: true},
			{Kind: "mismatch_id", Key: []byte(id), Rule: day},
			{Kind: "mismatch_card", Key: []byte(card), Rule: day},
		}
	}
	// This connection plans both functions on the empty table: fresh keys,
	// then the same again (limits_take).
	for range 2 {
		if err := l.Take(ctx, t0, apply("scan-card-0", "scan-phone-0", "scan-id-0")...); err != nil {
			t.Fatal(err)
		}
	}
	// The table grows, with no ANALYZE since.
	if _, err := pool.Exec(ctx, `INSERT INTO limit_events (kind, key, times, expires_at)
		SELECT k, sha256((k || i)::bytea), ARRAY[$1::timestamptz], $1::timestamptz + interval '1 day'
		FROM generate_series(1, 2000) AS i, unnest(ARRAY['apply', 'sms', 'mismatch_card']) AS k`, t0); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The backend's counts not yet reported (they include statements
	// before this transaction): read before and after.
	scans := func() (seq, idx int64) {
		t.Helper()
		if err := tx.QueryRow(ctx, `SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
			WHERE relid = 'limit_events'::regclass`).Scan(&seq, &idx); err != nil {
			t.Fatal(err)
		}
		return seq, idx
	}
	seq0, idx0 := scans()
	for i, checks := range [][]limits.Check{
		apply("scan-card-1", "scan-phone-1", "scan-id-1"), // fresh
		apply("scan-card-0", "scan-phone-0", "scan-id-0"), // seen: limits_take
	} {
		if err := l.TakeIn(ctx, tx, t0.Add(time.Minute), checks...); err != nil {
			t.Fatalf("take %d: %v", i+1, err)
		}
	}
	seq, idx := scans()
	if seq, idx = seq-seq0, idx-idx0; seq != 0 || idx == 0 {
		t.Fatalf("two takes scanned limit_events %d times whole and probed its index %d times; want 0 and some", seq, idx)
	}
}

// TestQueueInACallersBatch: a take queued in a caller's batch counts with
// the batch, in its round trip, and a batch that fails counts nothing;
// Finish completes it (limits_take for a key seen before, and a refusal
// gives the fresh keys back), Cancel gives back what the batch counted.
func TestQueueInACallersBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	l := limiterOn(t, pool)
	one := limits.Rule{Cap: 1, Window: time.Hour}
	card, phone := []byte("batch-card"), []byte("batch-phone")
	send := func(fail bool, checks ...limits.Check) (*limits.Pending, error) {
		t.Helper()
		var b pgx.Batch
		p, err := l.Queue(&b, t0, checks...)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		b.Queue(`SELECT 1`).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
		if fail {
			b.Queue(`SELECT 1/0`)
		}
		return p, pool.SendBatch(ctx, &b).Close()
	}
	apply := limits.Check{Kind: "apply", Key: card, Rule: one, Take: true}
	sms := limits.Check{Kind: "sms", Key: phone, Rule: one, Take: true}
	// A batch that fails takes nothing.
	if _, err := send(true, apply); err == nil {
		t.Fatal("a batch dividing by zero succeeded")
	}
	p, err := send(false, apply)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(ctx); err != nil {
		t.Fatalf("the card's take after a failed batch: %v", err)
	}
	// The card is full now: with a fresh phone, Finish refuses and gives
	// the phone back.
	if p, err = send(false, apply, sms); err != nil {
		t.Fatal(err)
	}
	var le *limits.LimitedError
	if err := p.Finish(ctx); !errors.As(err, &le) || le.RetryAfter != time.Hour {
		t.Fatalf("a full card's take: %v, want limited for 1h", err)
	}
	if err := l.Take(ctx, t0, sms); err != nil {
		t.Fatalf("the phone after a refused take: %v", err)
	}
	// Cancel gives back what the batch counted (the new key), and only
	// that: the full card keeps its take.
	fresh := limits.Check{Kind: "sms", Key: []byte("batch-phone-2"), Rule: one, Take: true}
	if p, err = send(false, apply, fresh); err != nil {
		t.Fatal(err)
	}
	if err := p.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Take(ctx, t0, fresh); err != nil {
		t.Fatalf("a new phone after a cancelled take: %v", err)
	}
	if err := l.Take(ctx, t0, apply); !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("the full card after a cancelled take: %v, want limited", err)
	}
}
