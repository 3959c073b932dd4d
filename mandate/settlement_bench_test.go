package mandate

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
)

// Sizes of BenchmarkSettlementFile's days (issue 20: a settlement file for
// a day of 100,000 movements).
const (
	benchSettleCharges  = 90_000 // per day, one merchant
	benchSettleRefunds  = 10_000 // per day, of that day's charges
	benchSettleMandates = 1_000
	benchSettleHistory  = 2 // days of movements before the measured ones, written
	// Older files, written straight into settlement_rows: the rows a day's
	// write must not file again, or read through, are years of them.
	benchSettleOldDays = 50
	benchSettleOldRows = 40_000 // per old day
)

// BenchmarkSettlementFile writes the settlement files of a day on which
// one merchant's bank movements were 90,000 charges and 10,000 refunds
// (after benchSettleHistory days as large, already written, and 2,000,000
// rows of older files), then streams
// that merchant's file of 100,000 rows. Each op is one new day: its rows
// are inserted with SQL first (not timed), then the day is written
// (writeSettlementDay: the one INSERT … SELECT; the banks' reconciliations
// it waits for are not part of it) and the file streamed to io.Discard
// through WriteCSV. Reported: seconds for each, and the peak RSS growth of
// this process during each (VmHWM after resetting it, less VmRSS before),
// in MB.
//
//	go test ./mandate/ -run '^$' -bench BenchmarkSettlementFile -benchtime 3x
func BenchmarkSettlementFile(b *testing.B) {
	ctx := context.Background()
	pool := testenv.Pool(b)
	// Each day is written at 06:00 the next morning, after its movements
	// were booked, as the morning job does.
	clk := clock.NewFake(time.Time{})
	s := &Service{cfg: Config{Clock: clk}, pool: pool}
	merchant, err := writeSettlementFixture(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	day := DateOf(2031, 3, 1)
	if last, ok, err := lastSettlementDay(ctx, pool); err != nil {
		b.Fatal(err)
	} else if ok {
		day = last.AddDate(0, 0, 1) // -count above 1 shares the database
	} else if err := writeOldSettlementFiles(ctx, pool, day); err != nil {
		b.Fatal(err)
	}
	for range benchSettleHistory {
		if err := writeSettlementMovements(ctx, pool, merchant, day); err != nil {
			b.Fatal(err)
		}
		clk.Set(dayStart(day).Add(30 * time.Hour))
		if _, _, err := s.writeSettlementDay(ctx, day); err != nil {
			b.Fatal(err)
		}
		day = day.AddDate(0, 0, 1)
	}

	var write, stream time.Duration
	var writeRSS, streamRSS int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := writeSettlementMovements(ctx, pool, merchant, day); err != nil {
			b.Fatal(err)
		}
		// The day's bookings are on disk by morning, as the checkpointer
		// would have written them: the write does not pay for them.
		if _, err := pool.Exec(ctx, `ANALYZE charge_attempts, refunds, settlement_rows`); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
			b.Fatal(err)
		}
		clk.Set(dayStart(day).Add(30 * time.Hour))
		b.StartTimer()

		base := startPeak()
		start := time.Now()
		d, wrote, err := s.writeSettlementDay(ctx, day)
		write += time.Since(start)
		writeRSS = max(writeRSS, peakSince(base))
		if err != nil || !wrote || d.Movements != benchSettleCharges+benchSettleRefunds {
			b.Fatalf("write %s: wrote %v, %d movements, %v", day.Format(time.DateOnly), wrote, d.Movements, err)
		}

		f, err := s.SettlementFile(ctx, merchant, day)
		if err != nil {
			b.Fatal(err)
		}
		var out lineCounter
		base = startPeak()
		start = time.Now()
		err = f.WriteCSV(ctx, &out)
		stream += time.Since(start)
		streamRSS = max(streamRSS, peakSince(base))
		if err != nil || out.lines != 2+benchSettleCharges+benchSettleRefunds {
			b.Fatalf("stream: %d lines, %v", out.lines, err)
		}
		day = day.AddDate(0, 0, 1)
	}
	b.StopTimer()
	b.ReportMetric(write.Seconds()/float64(b.N), "write-s")
	b.ReportMetric(stream.Seconds()/float64(b.N), "stream-s")
	b.ReportMetric(float64(writeRSS)/1024, "write-rss-MB")
	b.ReportMetric(float64(streamRSS)/1024, "stream-rss-MB")
}

// lineCounter is io.Discard that counts lines.
type lineCounter struct{ lines int }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.lines += strings.Count(string(p), "\n")
	return io.Discard.Write(p)
}

// startPeak restarts the kernel's peak-RSS count (VmHWM) of this process
// and returns the RSS now, in KiB.
func startPeak() int64 {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	return procStatus("VmRSS:")
}

// peakSince is the peak RSS since startPeak, less base, in KiB.
func peakSince(base int64) int64 { return max(0, procStatus("VmHWM:")-base) }

func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// writeSettlementFixture writes a merchant with benchSettleMandates
// members, cards and (cancelled) mandates, and returns its id.
func writeSettlementFixture(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	m := ids.New("mch")
	if _, err := pool.Exec(ctx, `INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash)
		VALUES ($1, 'settlement bench', '{withhold}', $2, 'not-a-hash')`, m, "qpc_bench_"+m[4:12]); err != nil {
		return "", err
	}
	bnd := ids.New("bnd")
	for _, st := range []string{
		`INSERT INTO bindings (id, merchant_id, external_user_id, status, bank_code, bank_name, card_type, masked_pan,
			last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct, id_number_fp, phone_ct, otp_expires_at,
			otp_last_sent_at) VALUES ($3, $1, 'bench', 'bound', 'ICBC', 'ICBC', 'debit', '622202******0000', '0000',
			'\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', now(), now())`,
		`INSERT INTO members (id, merchant_id, external_id, kind, created_at)
			SELECT 'mem_' || md5($1 || 'mem' || g), $1, 'bench-' || g, 'implicit', now() FROM generate_series(0, $2 - 1) g`,
		`INSERT INTO cards (id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4,
			pan_ct, pan_fp, agreement_ct, binding_id, created_at, updated_at)
			SELECT 'card_' || md5($1 || 'card' || g), $1, 'mem_' || md5($1 || 'mem' || g), 'active', 'ICBC', 'ICBC',
				'debit', '622202******0000', '0000', '\x00', decode(md5($1 || 'pan' || g), 'hex'), '\x00', $3, now(), now()
			FROM generate_series(0, $2 - 1) g`,
		`INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, amount_type, amount, currency, interval,
			day_of_month, start_date, timezone, status, otp_expires_at, otp_last_sent_at, created_at, updated_at)
			SELECT 'mdt_' || md5($1 || 'mdt' || g), $1, 'mem_' || md5($1 || 'mem' || g), 'card_' || md5($1 || 'card' || g),
				'bench, "' || g || '"', 'fixed', 1999, 'CNY', 'month', 1, date '2030-01-01', 'Asia/Shanghai', 'cancelled',
				now(), now(), now(), now()
			FROM generate_series(0, $2 - 1) g`,
	} {
		if _, err := pool.Exec(ctx, `WITH args AS (SELECT $1::text, $2::int, $3::text) `+st, m, benchSettleMandates, bnd); err != nil {
			return "", fmt.Errorf("settlement fixture: %w", err)
		}
	}
	return m, nil
}

// writeOldSettlementFiles writes benchSettleOldDays days of files, each of
// benchSettleOldRows rows of other merchants, ending the day before
// before, straight into the settlement tables.
func writeOldSettlementFiles(ctx context.Context, pool *pgxpool.Pool, before time.Time) error {
	_, err := pool.Exec(ctx, `WITH days AS (
			INSERT INTO settlement_days (bank_day, movements, written_at)
			SELECT $1::date - d, $2, now() FROM generate_series(1, $3) d)
		INSERT INTO settlement_rows (kind, order_no, file_day, merchant_id, moved_day, id, charge_id, mandate_id,
			member_id, reference, bank_code, bank_reference, amount, currency, finished_at)
		SELECT k.kind, 'QP' || md5(d || k.kind || g), $1::date - d, 'mch_old' || g % 100, $1::date - d,
			CASE k.kind WHEN 'charge' THEN 'chg_' ELSE 'rfd_' END || md5(d || 'id' || g), 'chg_' || md5(d || 'id' || g),
			'mdt_' || md5('m' || g % 5000), 'mem_' || md5('m' || g % 5000), 'old-' || g, 'ICBC', 'T' || md5(d || 't' || g),
			1000 + g % 997, 'CNY', ($1::date - d)::timestamp AT TIME ZONE 'Asia/Shanghai' + g * interval '1 second'
		FROM generate_series(1, $3) d, generate_series(0, $2 - 1) g,
			LATERAL (SELECT CASE WHEN g % 10 = 9 THEN 'refund' ELSE 'charge' END AS kind) k`,
		before, benchSettleOldRows, benchSettleOldDays)
	if err != nil {
		return fmt.Errorf("old settlement files: %w", err)
	}
	_, err = pool.Exec(ctx, `ANALYZE settlement_days, settlement_rows`)
	return err
}

// writeSettlementMovements writes the merchant's movements of bank day:
// benchSettleCharges succeeded charges, each with its succeeded attempt
// (ICBC, CCB and CMB in turn) booked during the day, and
// benchSettleRefunds succeeded refunds of every ninth of them.
func writeSettlementMovements(ctx context.Context, pool *pgxpool.Pool, merchant string, day time.Time) error {
	// $1 the merchant, $2 the day, $3 a seed unique to the day, $4 the
	// mandates, $5 the charges, $6 the refunds.
	at := `(($2::date)::timestamp AT TIME ZONE 'Asia/Shanghai') + g * interval '800 milliseconds'`
	for _, st := range []string{
		`INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, status,
			bank_reference, created_at, updated_at)
			SELECT 'chg_' || md5($3 || 'chg' || g), $1, 'mdt_' || md5($1 || 'mdt' || g % $4),
				'card_' || md5($1 || 'card' || g % $4), $3 || '-' || g, $2, 1000 + g % 997, 'CNY', 'succeeded',
				'T' || md5($3 || 'txn' || g), ` + at + `, ` + at + `
			FROM generate_series(0, $5 - 1) g`,
		`INSERT INTO charge_attempts (order_no, merchant_id, charge_id, card_id, seq, bank_code, amount, status,
			bank_txn_no, bank_day, created_at, finished_at)
			SELECT 'QP' || md5($3 || 'ord' || g), $1, 'chg_' || md5($3 || 'chg' || g), 'card_' || md5($1 || 'card' || g % $4),
				1, (ARRAY['ICBC', 'CCB', 'CMB'])[1 + g % 3], 1000 + g % 997, 'succeeded', 'T' || md5($3 || 'txn' || g),
				$2, ` + at + `, ` + at + `
			FROM generate_series(0, $5 - 1) g`,
		`INSERT INTO refunds (id, merchant_id, charge_id, mandate_id, card_id, bank_code, order_no, refund_no, amount,
			currency, status, bank_reference, job_id, created_at, updated_at, finished_at)
			SELECT 'rfd_' || md5($3 || 'rfd' || g), $1, 'chg_' || md5($3 || 'chg' || (g * 9)),
				'mdt_' || md5($1 || 'mdt' || (g * 9) % $4), 'card_' || md5($1 || 'card' || (g * 9) % $4),
				(ARRAY['ICBC', 'CCB', 'CMB'])[1 + (g * 9) % 3], 'QP' || md5($3 || 'ord' || (g * 9)),
				'QR' || md5($3 || 'rfd' || g), 100, 'CNY', 'succeeded', 'R' || md5($3 || 'rtxn' || g), 0,
				` + at + `, ` + at + `, ` + at + `
			FROM generate_series(0, $6 - 1) g`,
	} {
		if _, err := pool.Exec(ctx, `WITH args AS (SELECT $1::text, $2::date, $3::text, $4::int, $5::int, $6::int) `+st,
			merchant, day, day.Format(time.DateOnly), benchSettleMandates, benchSettleCharges, benchSettleRefunds); err != nil {
			return fmt.Errorf("settlement movements of %s: %w", day.Format(time.DateOnly), err)
		}
	}
	return nil
}
