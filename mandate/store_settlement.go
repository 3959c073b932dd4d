package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The settlement store: the days written, the one statement that writes a
// day's files for every merchant, and a merchant's rows of a day, read as
// a stream. settlement_rows and settlement_days are append-only
// (migration 025): nothing here updates or deletes.

// settlementLock is the advisory lock key, in SQL, that orders writers of
// settlement days: one day at a time, in day order, across every process.
const settlementLock = `hashtextextended('quickpay.settlement_files', 0)`

// lockSettlement takes the writers' lock for tx.
func lockSettlement(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+settlementLock+`)`)
	return err
}

// lastSettlementDay returns the latest day written; ok is false if none is.
func lastSettlementDay(ctx context.Context, q querier) (day time.Time, ok bool, err error) {
	var last *time.Time
	if err := q.QueryRow(ctx, `SELECT max(bank_day) FROM settlement_days`).Scan(&last); err != nil {
		return time.Time{}, false, err
	}
	if last == nil {
		return time.Time{}, false, nil
	}
	return *last, true, nil
}

// settlementDay returns a written day. Errors: ErrSettlementNotReady.
func settlementDay(ctx context.Context, q querier, day time.Time) (SettlementDay, error) {
	d := SettlementDay{Day: day}
	err := q.QueryRow(ctx, `SELECT movements, written_at FROM settlement_days WHERE bank_day = $1`, day).
		Scan(&d.Movements, &d.WrittenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, ErrSettlementNotReady
	}
	return d, err
}

// finalStatementBanks returns which of banks have a reconciliation run of
// day whose statement was final.
func finalStatementBanks(ctx context.Context, q querier, banks []string, day time.Time) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT bank_code FROM reconciliation_runs
		WHERE bank_code = ANY($1) AND bank_day = $2 AND final`, banks, day)
	if err != nil {
		return nil, err
	}
	final := map[string]bool{}
	var code string
	_, err = pgx.ForEachRow(rows, []any{&code}, func() error { final[code] = true; return nil })
	return final, err
}

// settlementWindow bounds the movements a day's write reads
// (writeSettlementDay says why none is missed): those of the day itself
// (charges booked from dayFrom on, refunds by the bank's finish time
// alone, so a bank clock ahead of quickpay's loses none), and those of
// earlier days booked from lateFrom on. A movement's booking is when
// quickpay recorded it (a charge's attempt's finished_at, a refund's
// updated_at).
type settlementWindow struct {
	day, dayFrom, lateFrom time.Time
}

// insertSettlementDay writes w.day's files, every merchant's, and marks the
// day written, in one statement (no row passes through Go), and returns
// the rows written: the succeeded movements of the day (a charge's bank
// day; a refund's bank finish time's Shanghai date), and those of earlier
// days not in a file yet (late ones, each looked up in the files by its
// number: they are few). Rows go in in key order, which makes placing them
// in the key's index cheaper. The caller holds the writers' lock and has
// checked that the day is not written and the day before is.
func insertSettlementDay(ctx context.Context, tx pgx.Tx, w settlementWindow, now time.Time) (int64, error) {
	// The statement's estimated cost makes Postgres compile it (JIT),
	// which takes longer than it saves on a day's rows (0.85 s of a
	// 100,000-row day's write, BenchmarkSettlementFile's data).
	if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
		return 0, err
	}
	var n int64
	err := tx.QueryRow(ctx, `WITH charge_rows AS (
			INSERT INTO settlement_rows (kind, order_no, file_day, merchant_id, moved_day, id, charge_id, mandate_id,
				member_id, reference, bank_code, bank_reference, amount, currency, finished_at)
			SELECT 'charge', a.order_no, $1, a.merchant_id, a.bank_day, c.id, c.id, c.mandate_id, m.member_id,
				m.reference, a.bank_code, coalesce(a.bank_txn_no, ''), a.amount, c.currency, a.finished_at
			FROM (SELECT * FROM charge_attempts WHERE status = 'succeeded' AND finished_at >= $2 AND bank_day = $1
				UNION ALL
				SELECT * FROM charge_attempts a WHERE status = 'succeeded' AND finished_at >= $3 AND bank_day < $1
					AND (SELECT true FROM settlement_rows r WHERE r.kind = 'charge' AND r.order_no = a.order_no) IS NULL
				) a
			JOIN charges c ON c.id = a.charge_id JOIN mandates m ON m.id = c.mandate_id
			ORDER BY a.order_no
			RETURNING 1),
		refund_rows AS (
			INSERT INTO settlement_rows (kind, order_no, file_day, merchant_id, moved_day, id, charge_id, mandate_id,
				member_id, reference, bank_code, bank_reference, amount, currency, finished_at)
			SELECT 'refund', f.refund_no, $1, f.merchant_id, (f.finished_at AT TIME ZONE $5)::date, f.id, f.charge_id,
				f.mandate_id, m.member_id, m.reference, f.bank_code, coalesce(f.bank_reference, ''), f.amount,
				f.currency, f.finished_at
			FROM (SELECT * FROM refunds WHERE status = 'succeeded' AND finished_at >= $6 AND finished_at < $7
				UNION ALL
				SELECT * FROM refunds f WHERE status = 'succeeded' AND updated_at >= $3 AND finished_at < $6
					AND (SELECT true FROM settlement_rows r WHERE r.kind = 'refund' AND r.order_no = f.refund_no) IS NULL
				) f
			JOIN mandates m ON m.id = f.mandate_id
			ORDER BY f.refund_no
			RETURNING 1)
		INSERT INTO settlement_days (bank_day, movements, written_at)
			SELECT $1, (SELECT count(*) FROM charge_rows) + (SELECT count(*) FROM refund_rows), $4
		RETURNING movements`, w.day, w.dayFrom, w.lateFrom, now, bankZone.String(),
		dayStart(w.day), dayStart(w.day.AddDate(0, 0, 1))).Scan(&n)
	return n, err
}

// settlementRow is one line of a file.
type settlementRow struct {
	kind                                         MovementKind
	id, chargeID, mandateID, memberID, reference string
	bankCode, orderNo, bankReference, currency   string
	amount                                       int64
	finishedAt                                   time.Time
}

// eachSettlementRow calls fn with each of the merchant's rows of day, in
// the file's order (when the movement finished, then kind and number),
// reading them as a stream through the file index: r is reused.
func eachSettlementRow(ctx context.Context, q querier, merchantID string, day time.Time, fn func(r *settlementRow) error) error {
	rows, err := q.Query(ctx, `SELECT kind, id, charge_id, mandate_id, member_id, reference, bank_code, order_no,
			bank_reference, amount, currency, finished_at
		FROM settlement_rows WHERE merchant_id = $1 AND file_day = $2 ORDER BY finished_at, kind, order_no`,
		merchantID, day)
	if err != nil {
		return err
	}
	var r settlementRow
	_, err = pgx.ForEachRow(rows, []any{&r.kind, &r.id, &r.chargeID, &r.mandateID, &r.memberID, &r.reference,
		&r.bankCode, &r.orderNo, &r.bankReference, &r.amount, &r.currency, &r.finishedAt}, func() error { return fn(&r) })
	return err
}
