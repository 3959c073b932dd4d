package mandate

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
)

// Sizes of BenchmarkListCharges' fixture (issue 20: a million charges of
// one merchant and a million of others).
const (
	benchCharges        = 1_000_000 // per merchant
	benchOtherMerchants = 1
	benchMandates       = 1_000 // per merchant; each has benchCharges/benchMandates periods
	benchDepth          = 50    // pages of 100 before the deep page
)

// listFixture is the benchmark's data, written once per test process (the
// benchmark function runs more than once; the package's database is
// dropped when the process ends).
var listFixture struct {
	once     sync.Once
	merchant string
	err      error
}

// BenchmarkListCharges measures a page of the charge list through the
// service (SQL and scan, no HTTP) with 1,000,000 charges of one merchant
// and 1,000,000 of another, analyzed: the first page of status=failed
// (2% of the charges) with limit 100, and pages 50 pages deep
// (starting_after) of the whole list and of status=failed. Each op runs
// the three once; p50 and p99 of each are reported in ms.
//
//	go test ./mandate/ -run '^$' -bench BenchmarkListCharges -benchtime 2000x
func BenchmarkListCharges(b *testing.B) {
	ctx := context.Background()
	pool := testenv.Pool(b)
	listFixture.once.Do(func() { listFixture.merchant, listFixture.err = writeListFixture(ctx, b, pool) })
	if listFixture.err != nil {
		b.Fatal(listFixture.err)
	}
	merchant := listFixture.merchant
	s := &Service{cfg: Config{Clock: clock.System{}}, pool: pool}

	// The cursors 50 pages deep, walked once through the same method.
	deep := func(f ChargeFilter) string {
		after := ""
		for range benchDepth {
			cs, more, err := s.Charges(ctx, merchant, f, Page{Limit: 100, StartingAfter: after})
			if err != nil || len(cs) != 100 || !more {
				b.Fatalf("walking %+v: %d rows, more %v, %v", f, len(cs), more, err)
			}
			after = cs[len(cs)-1].ID
		}
		return after
	}
	failed := ChargeFilter{Status: ChargeFailed}
	cases := []struct {
		name string
		f    ChargeFilter
		p    Page
	}{
		{"failed", failed, Page{Limit: 100}},
		{"deep", ChargeFilter{}, Page{Limit: 100, StartingAfter: deep(ChargeFilter{})}},
		{"deep-failed", failed, Page{Limit: 100, StartingAfter: deep(failed)}},
	}
	took := make([][]time.Duration, len(cases))
	b.ResetTimer()
	for range b.N {
		for i, c := range cases {
			start := time.Now()
			cs, more, err := s.Charges(ctx, merchant, c.f, c.p)
			took[i] = append(took[i], time.Since(start))
			if err != nil || len(cs) != 100 || !more {
				b.Fatalf("%s: %d rows, more %v, %v", c.name, len(cs), more, err)
			}
			if c.f.Status != "" && cs[99].Status != c.f.Status {
				b.Fatalf("%s: a %s charge in the page", c.name, cs[99].Status)
			}
		}
	}
	b.StopTimer()
	for i, c := range cases {
		slices.Sort(took[i])
		ms := func(q float64) float64 {
			return float64(took[i][int(q*float64(len(took[i])-1))]) / float64(time.Millisecond)
		}
		b.ReportMetric(ms(0.50), c.name+"-p50-ms")
		b.ReportMetric(ms(0.99), c.name+"-p99-ms")
	}
}

// writeListFixture writes, with INSERT … SELECT generate_series, the bench
// merchant and the others, each with benchMandates members, cards and
// cancelled mandates (so no scheduler run takes them) and benchCharges
// charges a second apart, 2% failed and the rest succeeded, then ANALYZEs.
// Ids are of ids.New's shape (24 base32 characters from an md5), so
// starting_after accepts them.
func writeListFixture(ctx context.Context, b *testing.B, pool *pgxpool.Pool) (string, error) {
	var merchant string
	for i := range 1 + benchOtherMerchants {
		m := testenv.Merchant(b, pool)
		if i == 0 {
			merchant = m
		}
		start := time.Now()
		// An id of prefix's shape from a seed: md5's hex digits 0, 1, 8
		// and 9 mapped into base32's alphabet.
		const id = `%s || '_' || translate(substr(md5(%s), 1, 24), '0189', 'wxyz')`
		mandateID := fmt.Sprintf(id, `'mdt'`, `$1 || 'mdt' || %s`)
		cardID := fmt.Sprintf(id, `'card'`, `$1 || 'card' || %s`)
		memberID := fmt.Sprintf(id, `'mem'`, `$1 || 'mem' || %s`)
		at := func(e string) string { return fmt.Sprintf(e, "g") }
		bnd := ids.New("bnd")
		// $1 the merchant, $2 the mandates (members, cards) per merchant,
		// $3 the charges per merchant, $4 the placeholder binding.
		stmts := []string{
			`INSERT INTO bindings (id, merchant_id, external_user_id, status, bank_code, bank_name, card_type, masked_pan,
				last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct, id_number_fp, phone_ct, otp_expires_at,
				otp_last_sent_at) VALUES ($4, $1, 'bench', 'bound', 'ICBC', 'ICBC', 'debit', '622202******0000', '0000',
				'\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', now(), now())`,
			`INSERT INTO members (id, merchant_id, external_id, kind, created_at)
				SELECT ` + at(memberID) + `, $1, 'bench-' || g, 'implicit', now() FROM generate_series(0, $2 - 1) g`,
			`INSERT INTO cards (id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4,
				pan_ct, pan_fp, agreement_ct, binding_id, created_at, updated_at)
				SELECT ` + at(cardID) + `, $1, ` + at(memberID) + `, 'active', 'ICBC', 'ICBC', 'debit', '622202******0000',
				'0000', '\x00', decode(md5($1 || 'pan' || g), 'hex'), '\x00', $4, now(), now()
				FROM generate_series(0, $2 - 1) g`,
			`INSERT INTO mandates (id, merchant_id, member_id, card_id, reference, amount_type, amount, currency, interval,
				day_of_month, start_date, timezone, status, otp_expires_at, otp_last_sent_at, created_at, updated_at)
				SELECT ` + at(mandateID) + `, $1, ` + at(memberID) + `, ` + at(cardID) + `, 'bench-' || g, 'fixed', 1999,
				'CNY', 'month', 1, date '1950-01-01', '` + DefaultTimezone + `', 'cancelled', now(), now(), now(), now()
				FROM generate_series(0, $2 - 1) g`,
			`INSERT INTO charges (id, merchant_id, mandate_id, card_id, period, charge_date, amount, currency, status,
				failure_code, created_at, updated_at)
				SELECT ` + fmt.Sprintf(id, `'chg'`, `$1 || 'chg' || g`) + `, $1, ` + fmt.Sprintf(mandateID, "g % $2") + `,
					` + fmt.Sprintf(cardID, "g % $2") + `,
					to_char(date '1950-01-01' + (g / $2) * interval '1 month', 'YYYY-MM'),
					date '1950-01-01' + (g / $2) * interval '1 month', 1999, 'CNY',
					CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
					CASE WHEN g % 50 = 0 THEN 'insufficient_funds' END,
					timestamptz '2029-01-01 00:00:00Z' + g * interval '1 second',
					timestamptz '2029-01-01 00:00:00Z' + g * interval '1 second'
				FROM generate_series(0, $3 - 1) g`,
		}
		for _, st := range stmts {
			if _, err := pool.Exec(ctx, fixtureSQL(st), m, benchMandates, benchCharges, bnd); err != nil {
				return "", fmt.Errorf("fixture: %w", err)
			}
		}
		b.Logf("fixture: merchant %d: %d charges in %s", i, benchCharges, time.Since(start).Round(time.Second))
	}
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		return "", err
	}
	return merchant, nil
}

// fixtureSQL gives a fixture statement all four arguments' types, so that
// each is sent with all four whichever it names.
func fixtureSQL(st string) string {
	return `WITH args AS (SELECT $1::text, $2::int, $3::int, $4::text) ` + st
}
