package webhooks

// The package's SQL, in one place. Every query filters on merchant_id.

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/db"
)

// feedLock is the key, in SQL, of the per-merchant advisory lock that
// orders event writers (shared, held to the end of their transaction)
// against feed readers (exclusive, held around the read), for the SQL
// expression merchantID. See the package doc.
func feedLock(merchantID string) string { return `hashtext('quickpay.events.' || ` + merchantID + `)` }

// queueEvents queues on b the statements that write evs, in order, and
// returns, filled in once b is sent, whether each event's merchant's
// endpoint subscribes to its type. The statements run in this order, the
// merchants' feed locks taken in a fixed order.
func queueEvents(b *pgx.Batch, evs []Event) []bool {
	n := len(evs)
	evIDs, merchants, types := make([]string, n), make([]string, n), make([]string, n)
	data, at := make([]string, n), make([]time.Time, n)
	for i, ev := range evs {
		evIDs[i], merchants[i], types[i], data[i], at[i] = ev.ID, ev.MerchantID, ev.Type, string(ev.Data), ev.CreatedAt
	}
	distinct := slices.Compact(slices.Sorted(slices.Values(merchants)))
	b.Queue(`SELECT pg_advisory_xact_lock_shared(`+feedLock("m")+`)
		FROM unnest($1::text[]) WITH ORDINALITY AS u(m, n) ORDER BY n`, distinct)
	b.Queue(`INSERT INTO events (id, merchant_id, type, data, created_at)
		SELECT id, merchant_id, type, data::jsonb, created_at
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY
			AS u(id, merchant_id, type, data, created_at, n)
		ORDER BY n`, evIDs, merchants, types, data, at)
	subscribed := make([]bool, n)
	b.Queue(`SELECT n - 1 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(merchant_id, type, n)
		JOIN webhook_endpoints w USING (merchant_id) WHERE w.events IS NULL OR u.type = ANY (w.events)`,
		merchants, types).Query(func(rows pgx.Rows) error {
		var i int
		_, err := pgx.ForEachRow(rows, []any{&i}, func() error { subscribed[i] = true; return nil })
		return err
	})
	return subscribed
}

// feedLockTimeout bounds how long a reader waits for open event-writing
// transactions of the merchant.
const feedLockTimeout = "5s"

// feedFilter narrows a feed read: every event (all), or those of the types
// shown; after must name an event of all or of the types visible.
type feedFilter struct {
	all     bool
	visible []string // non-nil unless all
	shown   []string // non-nil unless all; a subset of visible
}

// listFeed reads merchantID's events after the event named by after, at
// most limit of them, narrowed by f in the query itself: a page holds limit
// events of f whenever that many follow, however many others lie between
// them. after must name an event f makes visible (else ErrNotFound).
//
// Two plans: every event, or every known type, walks (merchant_id, seq)
// (the others it steps over are events of no known type: none, in
// practice). Some types take at most limit of each type from
// (merchant_id, type, seq) (migration 023) and keep the first limit of
// those, so a reader narrowed to rare types never walks the merchant's
// other events.
func listFeed(ctx context.Context, pool *pgxpool.Pool, merchantID string, f feedFilter, after string, limit int) ([]Event, error) {
	walk := f.all || len(f.shown) == len(EventTypes())
	var evs []Event
	err := db.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+feedLockTimeout+`'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+feedLock("$1")+`)`, merchantID); err != nil {
			return err
		}
		var afterSeq int64
		if after != "" {
			err := tx.QueryRow(ctx, `SELECT seq FROM events WHERE merchant_id = $1 AND id = $2
				AND ($3 OR type = ANY ($4::text[]))`,
				merchantID, after, f.all, f.visible).Scan(&afterSeq)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
		}
		var rows pgx.Rows
		var err error
		if walk {
			rows, err = tx.Query(ctx, feedWalkSQL, merchantID, afterSeq, limit, f.all, f.shown)
		} else {
			rows, err = tx.Query(ctx, feedTypedSQL, merchantID, afterSeq, limit, f.shown)
		}
		if err != nil {
			return err
		}
		evs, err = pgx.CollectRows(rows, scanEvent)
		return err
	})
	if evs == nil && err == nil {
		evs = []Event{}
	}
	return evs, err
}

// feedWalkSQL reads a page of the merchant's ($1) events after seq $2, at
// most $3, of every type ($4) or of the types $5, along (merchant_id, seq).
const feedWalkSQL = `
	SELECT id, merchant_id, type, created_at, data FROM events
	 WHERE merchant_id = $1 AND seq > $2 AND ($4 OR type = ANY ($5::text[]))
	 ORDER BY seq LIMIT $3`

// feedTypedSQL reads a page of the merchant's ($1) events after seq $2, at
// most $3, of the types $4: the first $3 of each type along
// (merchant_id, type, seq), then the first $3 of those.
const feedTypedSQL = `
	SELECT id, merchant_id, type, created_at, data FROM events
	 WHERE merchant_id = $1 AND seq IN (
	       SELECT p.seq FROM unnest($4::text[]) AS t(type)
	        CROSS JOIN LATERAL (
	              SELECT e.seq FROM events e
	               WHERE e.merchant_id = $1 AND e.type = t.type AND e.seq > $2
	               ORDER BY e.seq LIMIT $3) AS p
	        ORDER BY p.seq LIMIT $3)
	 ORDER BY seq`

// getEvent reads merchantID's event id if its type is one of visible.
func getEvent(ctx context.Context, pool *pgxpool.Pool, merchantID, id string, visible []string) (Event, error) {
	rows, err := pool.Query(ctx, `SELECT id, merchant_id, type, created_at, data FROM events
		WHERE merchant_id = $1 AND id = $2 AND type = ANY ($3::text[])`, merchantID, id, visible)
	if err != nil {
		return Event{}, err
	}
	ev, err := pgx.CollectExactlyOneRow(rows, scanEvent)
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, ErrNotFound
	}
	return ev, err
}

func scanEvent(r pgx.CollectableRow) (Event, error) {
	var ev Event
	err := r.Scan(&ev.ID, &ev.MerchantID, &ev.Type, &ev.CreatedAt, &ev.Data)
	ev.CreatedAt = ev.CreatedAt.UTC()
	return ev, err
}

// undelivered returns the events of merchantID among ids that have no 2xx
// answer recorded in a webhook_deliveries row after the row after (0: in
// any), in order, and how many of ids are events of merchantID.
func undelivered(ctx context.Context, pool *pgxpool.Pool, merchantID string, ids []string, after int64) ([]Event, int, error) {
	rows, err := pool.Query(ctx, `
		SELECT e.id, e.merchant_id, e.type, e.created_at, e.data,
		       EXISTS (SELECT 1 FROM webhook_deliveries d
		                WHERE d.event_id = e.id AND d.status_code BETWEEN 200 AND 299 AND d.id > $3) AS delivered
		  FROM events e WHERE e.merchant_id = $1 AND e.id = ANY ($2) ORDER BY e.seq`,
		merchantID, ids, after)
	if err != nil {
		return nil, 0, err
	}
	type row struct {
		ev        Event
		delivered bool
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.ev.ID, &x.ev.MerchantID, &x.ev.Type, &x.ev.CreatedAt, &x.ev.Data, &x.delivered)
		x.ev.CreatedAt = x.ev.CreatedAt.UTC()
		return x, err
	})
	if err != nil {
		return nil, 0, err
	}
	var evs []Event
	for _, x := range all {
		if !x.delivered {
			evs = append(evs, x.ev)
		}
	}
	return evs, len(all), nil
}

func upsertEndpoint(ctx context.Context, pool *pgxpool.Pool, merchantID, url string, events []string, secretCT []byte, now time.Time) error {
	_, err := pool.Exec(ctx, `
		INSERT INTO webhook_endpoints (merchant_id, url, events, secret_ct, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (merchant_id) DO UPDATE
		   SET url = EXCLUDED.url, events = EXCLUDED.events, secret_ct = EXCLUDED.secret_ct,
		       updated_at = EXCLUDED.updated_at`,
		merchantID, url, events, secretCT, now)
	return err
}

// endpointRow is an endpoint as stored.
type endpointRow struct {
	url      string
	events   []string // nil: every type
	secretCT []byte
}

func (e endpointRow) subscribes(eventType string) bool {
	return e.events == nil || slices.Contains(e.events, eventType)
}

func loadEndpoint(ctx context.Context, pool *pgxpool.Pool, merchantID string) (endpointRow, error) {
	var e endpointRow
	err := pool.QueryRow(ctx, `SELECT url, events, secret_ct FROM webhook_endpoints WHERE merchant_id = $1`,
		merchantID).Scan(&e.url, &e.events, &e.secretCT)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNotFound
	}
	return e, err
}

// attempt is one delivery attempt, as recorded.
type attempt struct {
	merchantID, eventID, url string
	n                        int
	statusCode               *int
	errText                  *string
	duration                 time.Duration
	at                       time.Time
}

func recordAttempt(ctx context.Context, pool *pgxpool.Pool, a attempt) error {
	_, err := pool.Exec(ctx, `
		INSERT INTO webhook_deliveries (merchant_id, event_id, url, attempt, status_code, error, duration_ms, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		a.merchantID, a.eventID, a.url, a.n, a.statusCode, a.errText, a.duration.Milliseconds(), a.at)
	return err
}
