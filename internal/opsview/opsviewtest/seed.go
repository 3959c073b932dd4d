// Package opsviewtest fills a database with what the operator console
// reads, in bulk, for opsview's tests and benchmarks: merchants, members,
// bindings, cards, mandates, charges with their attempts, refunds, events
// with deliveries and a webhook backlog, reconciliation runs and audit
// rows, written by INSERT … SELECT generate_series so that a million
// charges take a minute or two, not hours of API calls.
//
// The rows satisfy every constraint of the schema but are not what the
// domain services would have written step by step (a mandate's charges do
// not follow its schedule, a card's ciphertexts are random bytes): they
// are for reading, never for driving domain code. No row holds a card
// number, identity or code: masked numbers are made up, ciphertexts and
// fingerprints are random or hashes of the seed's own tag.
package opsviewtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options says how much to seed. Zero fields take their defaults.
type Options struct {
	// Charges is the number of charges. Defaults to 1,000.
	Charges int
	// ChargesPerMandate: each mandate (with its member, binding and card)
	// has this many charges, one every 30 days back from Day. Defaults to
	// 10.
	ChargesPerMandate int
	// Merchants. Defaults to 3. The first holds 70% of the rows, the
	// others share the rest.
	Merchants int
	// Banks are the cards' bank codes, spread evenly. Defaults to ICBC,
	// CCB, CMB.
	Banks []string
	// Day is the latest charge date (read as a date in Asia/Shanghai):
	// charges fall on it and on the days before it. Defaults to today.
	Day time.Time
}

// Seeded names rows a test can look up. Every id has the form ids.New
// makes (prefix, "_", 24 base32 characters) and starts after its prefix
// with Tag, which no other Seed call shares.
type Seeded struct {
	Tag       string
	Merchants []string // the first is the largest
	Day       time.Time
	Banks     []string

	// One mandate's chain, of the first merchant.
	MemberID      string
	BindingID     string
	CardID        string
	MandateID     string
	PANFP         []byte // the card's pan_fp
	ChargeID      string // succeeded after a failed first attempt
	OrderNo       string // its succeeded attempt's order number
	BankTxnNo     string // that attempt's bank reference
	UnknownCharge string // a charge whose attempt is unknown
	UnknownOrder  string
	RefundID      string
	RefundCharge  string // its charge
	RefundNo      string
	RefundBankRef string // a succeeded refund's bank reference
	EventID       string
	BacklogEvent  string // an event in the webhook backlog
	AuditActor    string // an actor of the seeded audit rows

	// Took is how long each step took, by name.
	Took map[string]time.Duration

	// Counts of what was written.
	Mandates       int
	Charges        int
	Attempts       int
	Refunds        int
	Events         int
	Backlog        int
	Audit          int
	Mismatches     int
	OpenMismatches int
}

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// shanghai is the banks' day (no daylight saving time).
var shanghai = time.FixedZone("Asia/Shanghai", 8*60*60)

// Seed writes the rows in one transaction and analyzes the tables it
// wrote, so that plans see them.
func Seed(ctx context.Context, pool *pgxpool.Pool, o Options) (Seeded, error) {
	if o.Charges <= 0 {
		o.Charges = 1000
	}
	if o.ChargesPerMandate <= 0 {
		o.ChargesPerMandate = 10
	}
	if o.Merchants <= 0 {
		o.Merchants = 3
	}
	if len(o.Banks) == 0 {
		o.Banks = []string{"ICBC", "CCB", "CMB"}
	}
	if o.Day.IsZero() {
		o.Day = time.Now()
	}
	d := o.Day.In(shanghai)
	day := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)

	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return Seeded{}, err
	}
	tag := enc.EncodeToString(b) // 8 characters
	mandates := (o.Charges + o.ChargesPerMandate - 1) / o.ChargesPerMandate
	s := Seeded{Tag: tag, Day: day, Banks: o.Banks, Mandates: mandates, Charges: o.Charges}
	for i := range o.Merchants {
		s.Merchants = append(s.Merchants, fmt.Sprintf("mch_%s%s", tag, num(int64(i+1))))
	}

	tx, err := pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return Seeded{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	sq := &seedSQL{tag: tag, merchants: o.Merchants, day: day}
	steps := []struct {
		what string
		sql  string
		args []any
	}{
		{"settings", `SET LOCAL synchronous_commit = off`, nil},
		{"foreign keys", fkMode(o.Charges), nil},
		{"merchants", `INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash, created_at)
			SELECT m, 'Seed merchant ' || i, ARRAY['bind', 'charge'], 'cli_' || m, 'x',
			       $2::timestamptz - (interval '1 day' * (100 + i))
			  FROM unnest($1::text[]) WITH ORDINALITY AS x(m, i)`, []any{s.Merchants, day}},
		{"numbers", `CREATE TEMP TABLE seed_mandate ON COMMIT DROP AS
			SELECT m, ` + sq.merchant("m") + ` AS merchant_id,
			       ($1::text[])[(` + hash("m") + ` / 1000) % cardinality($1::text[]) + 1] AS bank,
			       10000 + (m % 50) * 100 AS amount,
			       $2::timestamptz - interval '400 days' + m * interval '1 millisecond' AS created_at
			  FROM generate_series(1, $3::int) AS m`, []any{o.Banks, day, mandates}},
		{"charge numbers", `CREATE TEMP TABLE seed_charge ON COMMIT DROP AS
			SELECT n, m, k, merchant_id, bank, amount, d, st,
			       ((d::timestamp + interval '8 hours') AT TIME ZONE 'Asia/Shanghai') + (n % 36000) * interval '1 second' AS ts,
			       (st = 'succeeded' AND n % 10 = 5) AS two,
			       CASE WHEN st = 'succeeded' AND n % 20 = 7 THEN (ARRAY['pending', 'succeeded', 'failed'])[n % 3 + 1] END AS rst
			  FROM (SELECT n, m, k, sm.merchant_id, sm.bank, sm.amount,
			               ($1::date - (k * 30 + m % 30)) AS d,
			               CASE WHEN n % 200 = 0 THEN 'unknown'
			                    WHEN n % 1000 = 1 THEN 'held'
			                    WHEN n % 13 = 2 THEN 'failed'
			                    WHEN n % 50 = 3 THEN 'retry_scheduled'
			                    WHEN n % 97 = 4 THEN 'scheduled'
			                    WHEN k = 0 AND m % 30 = 0 AND m % 5 = 0 THEN 'processing'
			                    ELSE 'succeeded' END AS st
			          FROM generate_series(1, $2::int) AS n
			          CROSS JOIN LATERAL (SELECT (n - 1) / $3::int + 1 AS m, (n - 1) % $3::int AS k) AS mk
			          JOIN seed_mandate sm USING (m)) AS x`,
			[]any{day, o.Charges, o.ChargesPerMandate}},
		{"members", `INSERT INTO members (id, merchant_id, external_id, kind, id_number_ct, id_number_fp,
			    identity_verified, created_at)
			SELECT ` + sq.id("mem", "m") + `, merchant_id, 'user-' || m, 'explicit',
			       CASE WHEN m % 3 = 1 THEN decode(md5(random()::text), 'hex') END,
			       CASE WHEN m % 3 = 1 THEN sha256(convert_to('id` + tag + `' || m, 'UTF8')) END,
			       m % 3 = 2, created_at
			  FROM seed_mandate`, nil},
		{"bindings", `INSERT INTO bindings (id, merchant_id, member_id, status, bank_code, bank_name, card_type,
			    masked_pan, last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct, id_number_fp,
			    phone_ct, otp_expires_at, otp_last_sent_at, card_id, created_at, updated_at)
			SELECT ` + sq.id("bnd", "m") + `, merchant_id, ` + sq.id("mem", "m") + `, 'bound', bank, bank || ' Bank',
			       'debit', '622202******' || lpad((m % 10000)::text, 4, '0'), lpad((m % 10000)::text, 4, '0'),
			       decode(md5(random()::text), 'hex'), sha256(convert_to('pan` + tag + `' || m, 'UTF8')),
			       decode(md5(random()::text), 'hex'), decode(md5(random()::text), 'hex'),
			       decode(md5(random()::text), 'hex'), decode(md5(random()::text), 'hex'),
			       decode(md5(random()::text), 'hex'),
			       created_at + interval '5 minutes', created_at, ` + sq.id("card", "m") + `, created_at, created_at
			  FROM seed_mandate`, nil},
		{"cards", `INSERT INTO cards (id, merchant_id, member_id, binding_id, status, bank_code, bank_name, card_type,
			    masked_pan, last4, pan_ct, pan_fp, agreement_ct, created_at, updated_at)
			SELECT ` + sq.id("card", "m") + `, merchant_id, ` + sq.id("mem", "m") + `, ` + sq.id("bnd", "m") + `,
			       CASE WHEN m % 50 = 0 THEN 'unbound' ELSE 'active' END, bank, bank || ' Bank', 'debit',
			       '622202******' || lpad((m % 10000)::text, 4, '0'), lpad((m % 10000)::text, 4, '0'),
			       decode(md5(random()::text), 'hex'), sha256(convert_to('pan` + tag + `' || m, 'UTF8')),
			       decode(md5(random()::text), 'hex'), created_at, created_at
			  FROM seed_mandate`, nil},
		{"mandates", `INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, amount_type, amount,
			    currency, interval, day_of_month, start_date, timezone, status, next_period, next_charge_date,
			    charges_count, otp_expires_at, otp_last_sent_at, created_at, updated_at)
			SELECT ` + sq.id("mdt", "m") + `, merchant_id, ` + sq.id("mem", "m") + `, ` + sq.id("card", "m") + `,
			       'contract-' || m, 'fixed', amount, 'CNY', 'month', 1 + m % 28, created_at::date, 'Asia/Shanghai',
			       CASE WHEN m % 40 = 0 THEN 'cancelled' WHEN m % 41 = 0 THEN 'paused' ELSE 'active' END,
			       CASE WHEN m % 40 <> 0 THEN 'next' END, CASE WHEN m % 40 <> 0 THEN $1::date + 30 END,
			       0, created_at + interval '5 minutes', created_at, created_at, created_at
			  FROM seed_mandate`, []any{day}},
		{"charges", `INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency,
			    status, next_attempt_at, retries, attempts_count, failure_code, bank_reference,
			    amount_refunded, amount_refund_held, created_at, updated_at)
			SELECT ` + sq.id("chg", "n") + `, merchant_id, ` + sq.id("mdt", "m") + `, ` + sq.id("card", "m") + `,
			       'p' || k, d, amount, 'CNY', st,
			       CASE WHEN st IN ('scheduled', 'retry_scheduled') THEN ts + interval '1 day' END,
			       CASE WHEN st = 'retry_scheduled' THEN 1 ELSE 0 END,
			       CASE WHEN st = 'scheduled' THEN 0 WHEN two THEN 2 ELSE 1 END,
			       CASE st WHEN 'failed' THEN 'insufficient_funds' WHEN 'retry_scheduled' THEN 'insufficient_funds'
			               WHEN 'held' THEN 'amount_mismatch' END,
			       CASE WHEN st IN ('succeeded', 'held') THEN 'BT' || upper('` + tag + `') || n || CASE WHEN two THEN 2 ELSE 1 END END,
			       CASE WHEN rst = 'succeeded' THEN amount / 2 ELSE 0 END,
			       CASE WHEN rst IN ('pending', 'succeeded') THEN amount / 2 ELSE 0 END,
			       ts - interval '3 days', ts
			  FROM seed_charge`, nil},
		{"attempts", `INSERT INTO charge_attempts (order_no, merchant_id, charge_id, card_id, seq, bank_code, amount,
			    status, failure_code, bank_result, bank_txn_no, bank_amount, bank_day, created_at, finished_at)
			SELECT 'QP' || upper('` + tag + `') || n || a.seq, merchant_id, ` + sq.id("chg", "n") + `,
			       ` + sq.id("card", "m") + `, a.seq, bank, amount, a.st,
			       CASE WHEN a.st = 'failed' THEN 'insufficient_funds' END,
			       CASE a.st WHEN 'failed' THEN '51' WHEN 'succeeded' THEN '00' WHEN 'amount_mismatch' THEN '00' END,
			       CASE WHEN a.st IN ('succeeded', 'failed', 'amount_mismatch') THEN 'BT' || upper('` + tag + `') || n || a.seq END,
			       CASE WHEN a.st = 'amount_mismatch' THEN amount + 1 END,
			       d, ts + a.seq * interval '1 minute',
			       CASE WHEN a.st IN ('succeeded', 'failed', 'amount_mismatch') THEN ts + a.seq * interval '1 minute' + interval '2 seconds' END
			  FROM seed_charge
			  CROSS JOIN LATERAL (
			       SELECT 1 AS seq, CASE WHEN two THEN 'failed'
			                             WHEN st IN ('failed', 'retry_scheduled') THEN 'failed'
			                             WHEN st = 'held' THEN 'amount_mismatch'
			                             ELSE st END AS st
			        WHERE st <> 'scheduled'
			       UNION ALL
			       SELECT 2, 'succeeded' WHERE two) AS a`, nil},
		{"refunds", `INSERT INTO refunds (id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no, refund_no,
			    amount, currency, status, failure_code, bank_result, bank_reference, job_id, sent_at,
			    created_at, updated_at, finished_at)
			SELECT ` + sq.id("rfd", "n") + `, merchant_id, ` + sq.id("chg", "n") + `, ` + sq.id("mdt", "m") + `,
			       ` + sq.id("card", "m") + `, bank, 'QP' || upper('` + tag + `') || n || CASE WHEN two THEN 2 ELSE 1 END,
			       'QR' || upper('` + tag + `') || n, amount / 2, 'CNY', rst,
			       CASE WHEN rst = 'failed' THEN 'refund_declined' END,
			       CASE rst WHEN 'failed' THEN '61' WHEN 'succeeded' THEN '00' END,
			       CASE WHEN rst = 'succeeded' THEN 'BR' || upper('` + tag + `') || n END,
			       0, ts + interval '1 day', ts + interval '1 day', ts + interval '1 day',
			       CASE WHEN rst <> 'pending' THEN ts + interval '1 day' + interval '3 seconds' END
			  FROM seed_charge WHERE rst IS NOT NULL`, nil},
		{"events", `INSERT INTO events (id, merchant_id, type, data, created_at)
			SELECT ` + sq.id("evt", "n") + `, merchant_id, 'charge.' || st,
			       jsonb_build_object('id', ` + sq.id("chg", "n") + `, 'amount', amount, 'status', st),
			       ts + interval '2 minutes'
			  FROM seed_charge WHERE st IN ('succeeded', 'failed') ORDER BY ts, n`, nil},
		// The endpoint of each merchant answered 2xx to every event but
		// those of the last two days of one mandate in nine, to which it
		// answered 500: their jobs wait to retry (the backlog).
		{"deliveries", `INSERT INTO webhook_deliveries (merchant_id, event_id, url, attempt, status_code, duration_ms, at)
			SELECT merchant_id, ` + sq.id("evt", "n") + `, 'https://hooks.example.com/qp', 1,
			       CASE WHEN ` + sq.backlog() + ` THEN 500 ELSE 200 END, 40, ts + interval '2 minutes 1 second'
			  FROM seed_charge WHERE st IN ('succeeded', 'failed')`, nil},
		{"backlog jobs", `INSERT INTO river_job (state, attempt, max_attempts, attempted_at, scheduled_at, args, kind, queue, created_at)
			SELECT 'retryable', 1, 25, max(ts), $1::timestamptz + interval '1 year',
			       jsonb_build_object('merchant_id', merchant_id,
			                          'event_ids', jsonb_agg(` + sq.id("evt", "n") + ` ORDER BY n)),
			       'webhook_deliver', 'webhooks', min(ts)
			  FROM seed_charge WHERE st IN ('succeeded', 'failed') AND ` + sq.backlog() + `
			 GROUP BY merchant_id`, []any{day}},
		{"audit", `INSERT INTO audit_log (at, merchant_id, actor, action, subject, details)
			SELECT created_at + interval '1 hour', merchant_id, 'op_` + tag + `' || (m % 5),
			       (ARRAY['card.view', 'member.view', 'refund.create', 'mandate.cancel', 'merchant.view'])[m % 5 + 1],
			       ` + sq.id("card", "m") + `, jsonb_build_object('seed', true)
			  FROM seed_mandate`, nil},
	}
	s.Took = map[string]time.Duration{}
	var rebuild []string
	if o.Charges > checkedCharges {
		start := time.Now()
		if rebuild, err = dropIndexes(ctx, tx); err != nil {
			return Seeded{}, err
		}
		s.Took["drop indexes"] = time.Since(start)
	}
	for _, st := range steps {
		start := time.Now()
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return Seeded{}, fmt.Errorf("seed %s: %w", st.what, err)
		}
		s.Took[st.what] = time.Since(start)
	}
	start := time.Now()
	for _, def := range rebuild {
		if _, err := tx.Exec(ctx, def); err != nil {
			return Seeded{}, fmt.Errorf("seed: rebuild index: %w", err)
		}
	}
	s.Took["rebuild indexes"] = time.Since(start)
	if err := seedReconciliation(ctx, tx, &s); err != nil {
		return Seeded{}, err
	}
	if err := tx.QueryRow(ctx, `SELECT
		(SELECT count(*) FILTER (WHERE st <> 'scheduled') + count(*) FILTER (WHERE two) FROM seed_charge),
		(SELECT count(*) FROM seed_charge WHERE rst IS NOT NULL),
		(SELECT count(*) FROM seed_charge WHERE st IN ('succeeded', 'failed')),
		(SELECT count(*) FROM seed_charge WHERE st IN ('succeeded', 'failed') AND `+sq.backlog()+`),
		(SELECT count(*) FROM seed_mandate)`).
		Scan(&s.Attempts, &s.Refunds, &s.Events, &s.Backlog, &s.Audit); err != nil {
		return Seeded{}, fmt.Errorf("seed counts: %w", err)
	}
	if err := pickExamples(ctx, tx, sq, &s); err != nil {
		return Seeded{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Seeded{}, err
	}
	if _, err := pool.Exec(ctx, `ANALYZE merchants, members, bindings, cards, mandates, charges, charge_attempts,
		refunds, events, webhook_deliveries, river_job, audit_log, reconciliation_runs, reconciliation_mismatches`); err != nil {
		return Seeded{}, fmt.Errorf("seed analyze: %w", err)
	}
	return s, nil
}

// checkedCharges is the largest seed whose foreign keys are checked row
// by row and whose indexes are kept during the load. A larger one skips
// the checks (session_replication_role = replica: no triggers, so neither
// the foreign keys' nor audit_log's append-only ones, which refuse only
// updates and deletes) and builds the indexes at the end (dropIndexes):
// its rows are those of a small seed, made by the same statements, whose
// keys the tests check. 1,000,000 charges took 67 s to 185 s here (2
// shared cores), the index builds about a third of it.
const checkedCharges = 50_000

func fkMode(charges int) string {
	if charges > checkedCharges {
		return `SET LOCAL session_replication_role = replica`
	}
	return `SET LOCAL session_replication_role = origin`
}

// bulkTables are the tables a large seed fills.
var bulkTables = []string{"members", "bindings", "cards", "mandates", "charges", "charge_attempts", "refunds",
	"events", "webhook_deliveries", "audit_log"}

// dropIndexes drops the indexes of bulkTables that no constraint owns and
// returns the statements that create them again. A large seed fills the
// tables without them and builds each once at the end, in one sorted
// pass, instead of inserting a million rows into a dozen indexes in no
// order (PostgreSQL's own advice for a bulk load, "Populating a
// Database"). The transaction holds the tables meanwhile; a failed seed
// rolls the drops back with the rest.
func dropIndexes(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
		  FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
		 WHERE t.relname = ANY ($1) AND t.relnamespace = 'public'::regnamespace
		   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)`, bulkTables)
	if err != nil {
		return nil, fmt.Errorf("seed: list indexes: %w", err)
	}
	type index struct{ name, def string }
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var x index
		return x, r.Scan(&x.name, &x.def)
	})
	if err != nil {
		return nil, fmt.Errorf("seed: list indexes: %w", err)
	}
	var defs []string
	for _, x := range idx {
		if _, err := tx.Exec(ctx, "DROP INDEX "+x.name); err != nil {
			return nil, fmt.Errorf("seed: drop index %s: %w", x.name, err)
		}
		defs = append(defs, x.def)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '256MB'`); err != nil {
		return nil, err
	}
	return defs, nil
}

// pickExamples names one row of each kind, of the first merchant.
func pickExamples(ctx context.Context, tx pgx.Tx, sq *seedSQL, s *Seeded) error {
	var m, n, un, rn, rbn, bn int64
	err := tx.QueryRow(ctx, `SELECT
		(SELECT m FROM seed_mandate WHERE merchant_id = $1 ORDER BY m LIMIT 1),
		(SELECT n FROM seed_charge WHERE merchant_id = $1 AND two ORDER BY n LIMIT 1),
		(SELECT n FROM seed_charge WHERE st = 'unknown' ORDER BY n LIMIT 1),
		(SELECT n FROM seed_charge WHERE rst IS NOT NULL ORDER BY n LIMIT 1),
		(SELECT n FROM seed_charge WHERE rst = 'succeeded' ORDER BY n LIMIT 1),
		(SELECT coalesce(min(n), 0) FROM seed_charge WHERE st IN ('succeeded', 'failed') AND `+sq.backlog()+`)`,
		s.Merchants[0]).Scan(&m, &n, &un, &rn, &rbn, &bn)
	if err != nil {
		return fmt.Errorf("seed examples (seed more charges: every kind needs one): %w", err)
	}
	t := s.Tag
	s.MemberID, s.BindingID, s.CardID, s.MandateID = id("mem", t, m), id("bnd", t, m), id("card", t, m), id("mdt", t, m)
	fp := sha256.Sum256([]byte(fmt.Sprintf("pan%s%d", t, m)))
	s.PANFP = fp[:]
	up := strings.ToUpper(t)
	s.ChargeID = id("chg", t, n)
	s.OrderNo = fmt.Sprintf("QP%s%d2", up, n)
	s.BankTxnNo = fmt.Sprintf("BT%s%d2", up, n)
	s.EventID = id("evt", t, n)
	s.UnknownCharge, s.UnknownOrder = id("chg", t, un), fmt.Sprintf("QP%s%d1", up, un)
	s.RefundID, s.RefundNo = id("rfd", t, rn), fmt.Sprintf("QR%s%d", up, rn)
	s.RefundCharge = id("chg", t, rn)
	s.RefundBankRef = fmt.Sprintf("BR%s%d", up, rbn)
	if bn > 0 {
		s.BacklogEvent = id("evt", t, bn)
	}
	s.AuditActor = "op_" + t + "1"
	return nil
}

// seedReconciliation writes, for each bank, two runs of the day before
// Day and one of the day before that: the first run of the later day
// found two mismatches, its second run one of them (open), and the
// earlier day's run one (open).
func seedReconciliation(ctx context.Context, tx pgx.Tx, s *Seeded) error {
	for _, bank := range s.Banks {
		for _, r := range []struct {
			day   int
			found []string
		}{{-2, []string{"a"}}, {-1, []string{"b", "c"}}, {-1, []string{"c"}}} {
			var runID int64
			err := tx.QueryRow(ctx, `INSERT INTO reconciliation_runs (bank_code, bank_day, entries, matched, settled, mismatches)
				VALUES ($1, $2::date, 100, 100 - $3::int, 0, $3::int) RETURNING id`,
				bank, s.Day.AddDate(0, 0, r.day).Format(time.DateOnly), len(r.found)).Scan(&runID)
			if err != nil {
				return fmt.Errorf("seed reconciliation: %w", err)
			}
			for _, f := range r.found {
				_, err := tx.Exec(ctx, `INSERT INTO reconciliation_mismatches
					(run_id, kind, bank_code, bank_day, order_no, merchant_id, bank_amount, our_amount)
					VALUES ($1, 'amount_mismatch', $2, $3::date, $4, $5, 10100, 10000)`,
					runID, bank, s.Day.AddDate(0, 0, r.day).Format(time.DateOnly),
					"QP"+strings.ToUpper(s.Tag)+"RECON"+bank+f, s.Merchants[0])
				if err != nil {
					return fmt.Errorf("seed mismatch: %w", err)
				}
				s.Mismatches++
			}
		}
		s.OpenMismatches += 2
	}
	return nil
}

// seedSQL writes the expressions the statements share.
type seedSQL struct {
	tag       string
	merchants int
	day       time.Time
}

// id is the SQL of the id Seed gives row number n (an SQL expression) of
// prefix: the tag, then n in 16 hexadecimal digits with the decimal ones
// spelled as the letters q…z, all base32 characters.
func (q *seedSQL) id(prefix, n string) string {
	return fmt.Sprintf(`('%s_%s' || translate(lpad(to_hex(%s), 16, '0'), '0123456789', 'qrstuvwxyz'))`, prefix, q.tag, n)
}

// merchant is the SQL of the merchant of mandate m: the first for 7 in 10,
// the others in turn for the rest, by a hash of m so that neither follows
// m's other residues (which set the charge dates).
func (q *seedSQL) merchant(m string) string {
	if q.merchants == 1 {
		return fmt.Sprintf("'mch_%s%s'", q.tag, num(1))
	}
	h := hash(m)
	return fmt.Sprintf(`CASE WHEN %[1]s %% 10 < 7 THEN 'mch_%[2]s' || translate(lpad(to_hex(1), 16, '0'), '0123456789', 'qrstuvwxyz')
		ELSE 'mch_%[2]s' || translate(lpad(to_hex(2 + (%[1]s / 10) %% %[3]d), 16, '0'), '0123456789', 'qrstuvwxyz') END`,
		h, q.tag, q.merchants-1)
}

// hash is the SQL of a multiplicative hash of n (Knuth's), 0 ≤ hash < 2³².
func hash(n string) string { return fmt.Sprintf("((%s)::bigint * 2654435761 %% 4294967296)", n) }

// backlog is the SQL condition of a charge (of seed_charge) whose event
// waits in the backlog.
func (q *seedSQL) backlog() string {
	return fmt.Sprintf(`(d >= DATE '%s' - 1 AND m %% 9 = 4)`, q.day.Format(time.DateOnly))
}

// id is seedSQL.id computed in Go.
func id(prefix, tag string, n int64) string { return prefix + "_" + tag + num(n) }

// num is n as seedSQL.id spells it.
func num(n int64) string {
	h := fmt.Sprintf("%016x", n)
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return 'q' + (r - '0')
		}
		return r
	}, h)
}
