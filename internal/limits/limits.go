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
// Take checks and counts in one round trip: keys never seen within their
// windows by a single INSERT, others by the function limits_take (migration
// 013), which locks and checks their rows. All rules of a call pass and are
// counted together, or none is.
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
	"github.com/jackc/pgx/v5/pgconn"
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
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// New returns a Limiter over pool (migrated to 013).
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
// INSERT … ON CONFLICT DO NOTHING counts them, reading the check-only rows
// in the same statement (takeFreshSQL; a tenth of the work of
// limits_take). Keys that have a row (or that another take inserted
// meanwhile) go through limits_take, which locks and checks them; if it,
// or a check-only rule, refuses, the fresh rows' instants are given back,
// so a refused take still counts nothing.
func (l *Limiter) TakeIn(ctx context.Context, q Querier, now time.Time, checks ...Check) error {
	for _, c := range checks {
		if !c.Rule.Valid() || len(c.Key) == 0 || c.Kind == "" {
			return fmt.Errorf("limits: invalid check of %q (cap %d, window %s)", c.Kind, c.Rule.Cap, c.Rule.Window)
		}
	}
	fresh, wait, err := takeFresh(ctx, q, now, checks)
	if err != nil {
		return err
	}
	var rest []Check
	for _, c := range checks {
		if c.Take && !fresh[rowKey{c.Kind, string(c.Key)}] {
			rest = append(rest, c)
		}
	}
	if wait == nil && len(rest) > 0 {
		// limits_take checks these keys' rules; the check-only ones were
		// read already.
		wait, err = takeAll(ctx, q, now, rest)
		if err != nil {
			// Whether it counted is unknown; the fresh rows keep theirs.
			return err
		}
	}
	if wait == nil {
		return nil
	}
	for k := range fresh {
		// On q: in a transaction, the fresh rows are its own (and a
		// second connection would wait on their locks).
		if err := release(ctx, q, now, k.kind, []byte(k.key)); err != nil {
			return fmt.Errorf("limits: give back a refused take: %w", err)
		}
	}
	l.countRefusal(ctx, q, now, checks)
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
// function limits_take_fresh (migration 021), which keeps one generic plan
// for it; sent as is, Postgres planned it anew on every call.
const takeFreshSQL = `SELECT taken_kind, taken_key, wait FROM limits_take_fresh($1, $2, $3, $4, $5, $6, $7, $8)`

// takeFresh counts the taken keys of checks that have no row yet, and
// reads the check-only rules. It returns the keys it counted and, if a
// check-only rule refuses, for how long.
func takeFresh(ctx context.Context, q Querier, now time.Time, checks []Check) (map[rowKey]bool, *time.Duration, error) {
	keep := map[rowKey]time.Duration{} // a taken key's longest window
	var order []rowKey
	var ckinds []string
	var ckeys [][]byte
	var ccaps []int32
	var cwins []time.Duration
	for _, c := range checks {
		if !c.Take {
			ckinds, ckeys = append(ckinds, string(c.Kind)), append(ckeys, c.Key)
			ccaps, cwins = append(ccaps, int32(min(c.Rule.Cap, unlimited))), append(cwins, c.Rule.Window)
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
	var gotKinds []string
	var gotKeys [][]byte
	var wait *float64
	if err := q.QueryRow(ctx, takeFreshSQL, now, kinds, keys, wins, ckinds, ckeys, ccaps, cwins).
		Scan(&gotKinds, &gotKeys, &wait); err != nil {
		return nil, nil, fmt.Errorf("limits: take: %w", err)
	}
	fresh := make(map[rowKey]bool, len(gotKinds))
	for i := range gotKinds {
		fresh[rowKey{Kind(gotKinds[i]), string(gotKeys[i])}] = true
	}
	return fresh, seconds(wait), nil
}

// takeAll applies checks through limits_take, all or nothing, and answers
// how long they refuse (nil: counted).
func takeAll(ctx context.Context, q Querier, now time.Time, checks []Check) (*time.Duration, error) {
	n := len(checks)
	kinds, keys, takes := make([]string, n), make([][]byte, n), make([]bool, n)
	caps, wins := make([]int32, n), make([]time.Duration, n)
	for i, c := range checks {
		kinds[i], keys[i], takes[i] = string(c.Kind), c.Key, c.Take
		caps[i], wins[i] = int32(min(c.Rule.Cap, unlimited)), c.Rule.Window
	}
	var wait *float64
	if err := q.QueryRow(ctx, takeSQL, now, kinds, keys, takes, caps, wins).Scan(&wait); err != nil {
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

// Release gives back one instant taken at `at` for (kind, key): the take
// did not reach the outside world, or should not count.
func (l *Limiter) Release(ctx context.Context, at time.Time, kind Kind, key []byte) error {
	return release(ctx, l.pool, at, kind, key)
}

func release(ctx context.Context, q Querier, at time.Time, kind Kind, key []byte) error {
	_, err := q.Exec(ctx, releaseSQL, string(kind), key, at)
	if err != nil {
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
