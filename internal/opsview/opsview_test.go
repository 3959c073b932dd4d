package opsview_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/opsview/opsviewtest"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func() error {
		if seedPool != nil {
			seedPool.Close()
		}
		return nil
	}))
}

// The package's database holds one small seed, written by the first test
// that asks for it and only read afterwards, beside the rows each test
// makes by hand with its own ids. Counts across every merchant are checked
// in tests that own the database: they do not call t.Parallel, and
// read before or after the seed only what they count.

// seedDay is the seed's latest charge date.
var seedDay = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

// seedNow is the readers' clock: the seed's day, 16:00 in Shanghai.
var seedNow = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

var (
	seedOnce sync.Once
	seeded   opsviewtest.Seeded
	seedErr  error
	seedPool *pgxpool.Pool
)

// seed returns the package's seed (1,000 charges) and a Reader on the
// seed's clock.
func seed(t testing.TB) (opsviewtest.Seeded, *opsview.Reader, *pgxpool.Pool) {
	t.Helper()
	seedOnce.Do(func() {
		pool, err := db.Open(context.Background(), db.Config{URL: testenv.DatabaseURL(t)})
		if err != nil {
			seedErr = err
			return
		}
		seedPool = pool
		seeded, seedErr = opsviewtest.Seed(context.Background(), pool, opsviewtest.Options{Charges: 1000, Day: seedDay})
	})
	if seedErr != nil {
		t.Fatal(seedErr)
	}
	return seeded, opsview.New(seedPool, opsview.WithClock(clock.NewFake(seedNow))), seedPool
}
