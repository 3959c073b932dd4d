// Package limits meters abuse-prone actions in Postgres, so that every
// serve instance shares one count (DESIGN.md "Abuse limits").
//
// A Rule is "at most Cap in any Window". What is metered is named by a Kind
// and a key: the callers' keyed fingerprints (made in the HSM; this package
// never sees a clear value) or a hash of values that are not secret. The
// windows slide: the instants counted are kept (table limit_events, at most
// the cap of the kind's longest window), so "10 a day" is 10 in any 24
// hours, and the wait told to a refused caller is exact.
//
// Take checks and counts: keys that have no row by the function
// limits_take_fresh, which also reads the check-only keys' rows; others by
// the function limits_take, which locks and checks their rows (migrations
// 013, 021, 034). All rules of a call pass and are counted together, or
// none is. Queue puts the first in a caller's batch, for the round trip of
// the caller's reads.
// Callers take before the call to the outside world (reserve, then call), so
// a caller who hangs up once the bank or carrier has been asked has been
// counted already; Release gives back a take that turned out not to reach
// anyone (the bank answered with no SMS sent), or that should not count
// (a right client secret).
//
// Windows are counted by fingerprint, so after an fp key rotation the same
// card or phone gets a new key and its count restarts: an attacker gains at
// most one more window's allowance per rotation, which is rare and
// operator-driven.
package limits

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind names what is metered.
type Kind string

// Rule is at most Cap in any Window.
type Rule struct {
	Cap    int
	Window time.Duration
}

// Valid reports whether r can be enforced (Cap ≥ 1, Window ≥ 1 s).
func (r Rule) Valid() bool { return r.Cap >= 1 && r.Window >= time.Second }

// Unlimited is a cap no count reaches: Record counts with it.
const unlimited = math.MaxInt32

// Check is one rule applied to one key. Take counts the call (once per
// kind and key, whatever the number of its rules); a Check without Take
// only reads the count.
type Check struct {
	Kind Kind
	Key  []byte
	Rule Rule
	Take bool
}

// ErrLimited is what every *LimitedError matches.
var ErrLimited = errors.New("rate limited")

// LimitedError refuses a take: RetryAfter is how long until every refusing
// rule has room.
type LimitedError struct{ RetryAfter time.Duration }

func (e *LimitedError) Error() string {
	return fmt.Sprintf("rate limited, retry after %s", e.RetryAfter)
}

// Is lets errors.Is(err, ErrLimited) match.
func (e *LimitedError) Is(target error) bool { return target == ErrLimited }

// Seconds is RetryAfter in whole seconds, rounded up, at least 1.
func (e *LimitedError) Seconds() int {
	return max(1, int((e.RetryAfter+time.Second-1)/time.Second))
}

// Limiter meters in Postgres.
type Limiter struct {
	pool    *pgxpool.Pool
	metrics *metrics // set by Observe; nil counts nothing
}

// Querier is what a take runs on: the pool, or a caller's transaction
// (pgx.Tx). A caller that holds a transaction takes in it (TakeIn): a take
// on the pool would wait for a second connection while the first is held,
// and with every connection held so, none would come.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// New returns a Limiter over pool, migrated (limits_take and
// limits_take_fresh, migration 034).
func New(pool *pgxpool.Pool) (*Limiter, error) {
	if pool == nil {
		return nil, errors.New("limits: New needs a pool")
	}
	return &Limiter{pool: pool}, nil
}

const takeSQL = `SELECT limits_take($1, $2, $3, $4, $5, $6)`

// Take applies checks at now, on the pool (TakeIn). Errors: *LimitedError
// (nothing was counted), a database error.
func (l *Limiter) Take(ctx context.Context, now time.Time, checks ...Check) error {
	return l.TakeIn(ctx, l.pool, now, checks...)
}

// TakeIn applies checks at now on q: in a caller's transaction the count
// commits or rolls back with it, and the rows of the keys taken stay locked
// until it ends, so the transaction should be short. Errors:
// *LimitedError (nothing was counted), a database error.
//
// Most takes are of keys with no row yet (a card or phone not seen within
// its windows): their rules cannot refuse (a cap is at least 1), so one
// statement counts them (INSERT … ON CONFLICT DO NOTHING) and reads the
// check-only keys' rows (takeFreshSQL). Keys that have a row (or that another
// take inserted meanwhile) go through limits_take, which locks and checks
// them; if it, or a check-only rule, refuses, the fresh rows' instants are
// given back, so a refused take still counts nothing.
func (l *Limiter) TakeIn(ctx context.Context, q Querier, now time.Time, checks ...Check) error {
	t, err := newTake(now, checks)
	if err != nil {
		return err
	}
	if err := t.scan(q.QueryRow(ctx, takeFreshSQL, t.args...)); err != nil {
		return err
	}
	return l.finish(ctx, q, t)
}

// Pending is a take whose first statement a caller sends in its own batch
// (Queue); Finish completes it, or Cancel gives back what it counted.
type Pending struct {
	l        *Limiter
	t        *take
	answered bool // the first statement answered (its batch may still have failed)
}

// Queue queues the first statement of a take of checks at now in b, a
// batch the caller sends on the pool outside a transaction, with its own
// statements, in one round trip: the take's count commits with the batch
// (a batch is one implicit transaction), or not at all if the batch
// fails. Once the batch has been sent without error, Finish completes the
// take, or Cancel gives back what it counted.
func (l *Limiter) Queue(b *pgx.Batch, now time.Time, checks ...Check) (*Pending, error) {
	t, err := newTake(now, checks)
	if err != nil {
		return nil, err
	}
	p := &Pending{l: l, t: t}
	b.Queue(takeFreshSQL, t.args...).QueryRow(func(row pgx.Row) error {
		if err := t.scan(row); err != nil {
			return err
		}
		p.answered = true
		return nil
	})
	return p, nil
}

// Finish completes a take whose batch was sent without error (a batch
// that failed counted nothing, and its take must not be finished): keys
// seen before are taken through limits_take, on the pool. Errors:
// *LimitedError (nothing was counted), a database error.
func (p *Pending) Finish(ctx context.Context) error {
	if !p.answered {
		return errors.New("limits: Finish of a take whose first statement did not answer")
	}
	return p.l.finish(ctx, p.l.pool, p.t)
}

// Cancel gives back what a take's first statement counted (its keys that
// had no row), for a caller that will not finish it: what it was to count
// did not happen. After a batch that failed it gives back nothing.
func (p *Pending) Cancel(ctx context.Context) error {
	if !p.answered {
		return nil
	}
	return release(ctx, p.l.pool, p.t.now, p.t.freshKeys()...)
}

// finish takes the keys of t its first statement did not count (they have
// a row: limits_take checks their rules), and gives the fresh rows back if
// a rule refuses.
func (l *Limiter) finish(ctx context.Context, q Querier, t *take) error {
	wait := t.wait
	var rest []Check
	for _, c := range t.checks {
		if c.Take && !t.fresh[rowKey{c.Kind, string(c.Key)}] {
			rest = append(rest, c)
		}
	}
	if wait == nil && len(rest) > 0 {
		// limits_take checks these keys' rules; the check-only ones were
		// read already.
		var err error
		wait, err = takeAll(ctx, q, t.now, rest)
		if err != nil {
			// Whether it counted is unknown; the fresh rows keep theirs.
			return err
		}
	}
	if wait == nil {
		return nil
	}
	// On q: in a transaction, the fresh rows are its own (and a second
	// connection would wait on their locks).
	if err := release(ctx, q, t.now, t.freshKeys()...); err != nil {
		return fmt.Errorf("limits: give back a refused take: %w", err)
	}
	l.countRefusal(ctx, q, t.now, t.checks)
	return &LimitedError{RetryAfter: *wait}
}

// rowKey names a row of limit_events.
type rowKey struct {
	kind Kind
	key  string
}

// takeFreshSQL inserts the taken keys that have no row, with the one
// instant $1, and answers which it inserted and how long the check-only
// rules ($5–$8) refuse (NULL: they allow). The statement lives in the
// function limits_take_fresh (migrations 021, 034), which keeps one
// generic plan of primary-key probes, made with sequential scans off: sent
// as is, Postgres planned it anew on every call, and a plan made while
// limit_events was small would scan it whole as it grew.
const takeFreshSQL = `SELECT taken_kind, taken_key, wait FROM limits_take_fresh($1, $2, $3, $4, $5, $6, $7, $8)`

// take is one take's first statement (takeFreshSQL) and what it answered.
type take struct {
	now    time.Time
	checks []Check
	args   []any

	fresh map[rowKey]bool // the taken keys the statement inserted
	wait  *time.Duration  // how long the check-only rules refuse; nil: they allow
}

// newTake validates checks and makes the statement's arguments: the taken
// keys, each with its longest window, and the check-only rules.
func newTake(now time.Time, checks []Check) (*take, error) {
	keep := map[rowKey]time.Duration{} // a taken key's longest window
	var order []rowKey
	var probes []Check
	for _, c := range checks {
		if !c.Rule.Valid() || len(c.Key) == 0 || c.Kind == "" {
			return nil, fmt.Errorf("limits: invalid check of %q (cap %d, window %s)", c.Kind, c.Rule.Cap, c.Rule.Window)
		}
		if !c.Take {
			probes = append(probes, c)
			continue
		}
		k := rowKey{c.Kind, string(c.Key)}
		if _, ok := keep[k]; !ok {
			order = append(order, k)
		}
		keep[k] = max(keep[k], c.Rule.Window)
	}
	kinds, keys, wins := make([]string, len(order)), make([][]byte, len(order)), make([]time.Duration, len(order))
	for i, k := range order {
		kinds[i], keys[i], wins[i] = string(k.kind), []byte(k.key), keep[k]
	}
	p := columnsOf(probes)
	return &take{now: now, checks: checks, args: []any{now, kinds, keys, wins, p.kinds, p.keys, p.caps, p.wins}}, nil
}

// freshKeys are the keys the first statement counted.
func (t *take) freshKeys() []Key {
	keys := make([]Key, 0, len(t.fresh))
	for k := range t.fresh {
		keys = append(keys, Key{Kind: k.kind, Key: []byte(k.key)})
	}
	return keys
}

// columns are checks as the parallel arrays the SQL functions take.
type columns struct {
	kinds []string
	keys  [][]byte
	takes []bool
	caps  []int32
	wins  []time.Duration
}

func columnsOf(checks []Check) columns {
	n := len(checks)
	c := columns{make([]string, n), make([][]byte, n), make([]bool, n), make([]int32, n), make([]time.Duration, n)}
	for i, ch := range checks {
		c.kinds[i], c.keys[i], c.takes[i] = string(ch.Kind), ch.Key, ch.Take
		c.caps[i], c.wins[i] = int32(min(ch.Rule.Cap, unlimited)), ch.Rule.Window
	}
	return c
}

// scan reads the statement's answer: the keys it inserted, and whether a
// check-only rule refuses.
func (t *take) scan(row pgx.Row) error {
	var kinds []string
	var keys [][]byte
	var wait *float64
	if err := row.Scan(&kinds, &keys, &wait); err != nil {
		return fmt.Errorf("limits: take: %w", err)
	}
	t.fresh = make(map[rowKey]bool, len(kinds))
	for i := range kinds {
		t.fresh[rowKey{Kind(kinds[i]), string(keys[i])}] = true
	}
	t.wait = seconds(wait)
	return nil
}

// takeAll applies checks through limits_take, all or nothing, and answers
// how long they refuse (nil: counted).
func takeAll(ctx context.Context, q Querier, now time.Time, checks []Check) (*time.Duration, error) {
	c := columnsOf(checks)
	var wait *float64
	if err := q.QueryRow(ctx, takeSQL, now, c.kinds, c.keys, c.takes, c.caps, c.wins).Scan(&wait); err != nil {
		return nil, fmt.Errorf("limits: take: %w", err)
	}
	return seconds(wait), nil
}

// seconds turns a wait in seconds from SQL into a duration.
func seconds(s *float64) *time.Duration {
	if s == nil {
		return nil
	}
	d := max(0, time.Duration(*s*float64(time.Second)))
	return &d
}

// Record counts one instant at now for each (kind, key) without a limit
// (what the outside world answered: a mismatch), kept for window.
func (l *Limiter) Record(ctx context.Context, now time.Time, window time.Duration, kind Kind, keys ...[]byte) error {
	checks := make([]Check, 0, len(keys))
	for _, k := range keys {
		if len(k) > 0 {
			checks = append(checks, Check{Kind: kind, Key: k, Rule: Rule{Cap: unlimited, Window: window}, Take: true})
		}
	}
	return l.Take(ctx, now, checks...)
}

// Key names a row of what is metered: a kind and its key.
type Key struct {
	Kind Kind
	Key  []byte
}

// Release gives back one instant taken at `at` for each key, in one round
// trip: the take did not reach the outside world, or should not count.
func (l *Limiter) Release(ctx context.Context, at time.Time, keys ...Key) error {
	return release(ctx, l.pool, at, keys...)
}

func release(ctx context.Context, q Querier, at time.Time, keys ...Key) error {
	if len(keys) == 0 {
		return nil
	}
	var b pgx.Batch
	for _, k := range keys {
		b.Queue(releaseSQL, string(k.Kind), k.Key, at)
	}
	if err := q.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("limits: release: %w", err)
	}
	return nil
}

// releaseSQL removes one occurrence of $3 (two takes in one microsecond
// are two instants).
const releaseSQL = `UPDATE limit_events
	SET times = times[:array_position(times, $3::timestamptz) - 1] || times[array_position(times, $3::timestamptz) + 1:]
	WHERE kind = $1 AND key = $2 AND $3::timestamptz = ANY (times)`

// DeleteExpired removes rows whose instants have all left their windows,
// and returns how many.
func (l *Limiter) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	tag, err := l.pool.Exec(ctx, `DELETE FROM limit_events WHERE expires_at < $1`, now)
	if err != nil {
		return 0, fmt.Errorf("limits: delete expired: %w", err)
	}
	return tag.RowsAffected(), nil
}
