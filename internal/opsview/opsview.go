package opsview

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
)

// Errors the Reader returns; anything else is the database's.
var (
	// ErrNotFound: no row has that id (or number).
	ErrNotFound = errors.New("opsview: not found")
	// ErrBadCursor: a Page's After was not made by this package for that
	// list.
	ErrBadCursor = errors.New("opsview: bad page cursor")
)

// Page limits.
const (
	// DefaultLimit is a page's size when Page.Limit is 0 or less.
	DefaultLimit = 50
	// MaxLimit is the largest page; a larger Limit is cut to it.
	MaxLimit = 200
)

// Page asks for one keyset page of a list: the rows after the cursor
// After ("" for the first page), at most Limit of them. A list returns the
// cursor of its next page, or "" when it has no more rows.
type Page struct {
	After string
	Limit int
}

func (p Page) limit() int {
	switch {
	case p.Limit <= 0:
		return DefaultLimit
	case p.Limit > MaxLimit:
		return MaxLimit
	default:
		return p.Limit
	}
}

// Reader reads every merchant's rows for the operator console. It is safe
// for concurrent use.
type Reader struct {
	pool  *pgxpool.Pool
	clock clock.Clock
}

// Option changes a Reader.
type Option func(*Reader)

// WithClock makes the Reader measure ages (of unknown attempts, of the
// oldest undelivered event) and "the last 24 hours" on c. Defaults to the
// system clock.
func WithClock(c clock.Clock) Option { return func(r *Reader) { r.clock = c } }

// New returns a Reader over pool.
func New(pool *pgxpool.Pool, opts ...Option) *Reader {
	r := &Reader{pool: pool, clock: clock.System{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// A cursor is a list's position: the sort key of the last row shown. It
// names its list, so a cursor of one list is refused by another. It is
// opaque to callers (base64 of "list|time|id" or "list|number|id").
type cursor struct {
	list string
	at   time.Time // time-ordered lists
	n    int64     // number-ordered lists (events by seq, audit by id)
	id   string
}

func (c cursor) encode() string {
	var b strings.Builder
	b.WriteString(c.list)
	b.WriteByte('|')
	if c.at.IsZero() {
		b.WriteString(strconv.FormatInt(c.n, 10))
	} else {
		b.WriteString(strconv.FormatInt(c.at.UnixMicro(), 10))
	}
	b.WriteByte('|')
	b.WriteString(c.id)
	return base64.RawURLEncoding.EncodeToString([]byte(b.String()))
}

// decodeCursor reads after for list; "" is the first page (ok false).
func decodeCursor(list, after string, timed bool) (c cursor, ok bool, err error) {
	if after == "" {
		return cursor{}, false, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(after)
	if err != nil {
		return cursor{}, false, ErrBadCursor
	}
	parts := strings.SplitN(string(raw), "|", 3)
	if len(parts) != 3 || parts[0] != list {
		return cursor{}, false, ErrBadCursor
	}
	n, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return cursor{}, false, ErrBadCursor
	}
	c = cursor{list: list, id: parts[2]}
	if timed {
		c.at = time.UnixMicro(n).UTC()
	} else {
		c.n = n
	}
	return c, true, nil
}

// page cuts rows (fetched with one row more than the limit) to the limit
// and returns the cursor of the next page, made from the last row kept.
func page[T any](rows []T, limit int, key func(T) cursor) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, key(rows[limit-1]).encode()
}

// one reads exactly one row, ErrNotFound for none.
func one[T any](ctx context.Context, r *Reader, what string, scan pgx.RowToFunc[T], sql string, args ...any) (T, error) {
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("read %s: %w", what, err)
	}
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}

// all reads every row of a query.
func all[T any](ctx context.Context, r *Reader, what string, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	v, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}
