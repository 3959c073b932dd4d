package webhooks

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
)

// TestTypedFeedReadsOnlyItsTypes: a feed read narrowed to a rare type at a
// merchant with many events of other types touches about a page of rows,
// not the merchant's other events (index events_merchant_type_seq,
// migration 023). It reads the plan's actual row counts, so it holds
// whichever index the planner picks, as long as it does not walk past the
// other types' events.
func TestTypedFeedReadsOnlyItsTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	m := ids.New("mch")
	if _, err := pool.Exec(ctx, `INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash)
		VALUES ($1, 'test', '{bind,withhold}', $2, 'x')`, m, ids.New("cli")); err != nil {
		t.Fatal(err)
	}
	const others, rare = 5000, 3
	// The rare events first, then many of another type: a walk from the
	// start along (merchant_id, seq) filtered by type reads them all.
	if _, err := pool.Exec(ctx, `
		INSERT INTO events (id, merchant_id, type, data)
		SELECT 'evt_' || substr($1, 5) || '_' || g, $1, CASE WHEN g <= $2::int THEN $3 ELSE $4 END, '{}'
		  FROM generate_series(1, $2::int + $5::int) AS g ORDER BY g`,
		m, rare, EventBindingBound, EventChargeSucceeded, others); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE events`); err != nil {
		t.Fatal(err)
	}
	var lastRare int64
	if err := pool.QueryRow(ctx, `SELECT max(seq) FROM events WHERE merchant_id = $1 AND type = $2`,
		m, EventBindingBound).Scan(&lastRare); err != nil {
		t.Fatal(err)
	}
	// After the rare events: no rare event follows, so only an index
	// led by type finds that out without reading the others.
	var plan []struct {
		Plan planNode `json:"Plan"`
	}
	var raw []byte
	if err := pool.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+feedTypedSQL,
		m, lastRare, DefaultListLimit+1, []string{EventBindingBound}).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
		t.Fatalf("plan %s: %v", raw, err)
	}
	if read := plan[0].Plan.rowsRead(); read > 2*(DefaultListLimit+1) {
		t.Errorf("a read narrowed to a type with no event left read %d rows, want at most a page's: plan %s", read, raw)
	}
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	NodeType      string     `json:"Node Type"`
	ActualRows    float64    `json:"Actual Rows"`
	ActualLoops   float64    `json:"Actual Loops"`
	RemovedFilter float64    `json:"Rows Removed by Filter"`
	RemovedIndex  float64    `json:"Rows Removed by Index Recheck"`
	Plans         []planNode `json:"Plans"`
}

// rowsRead is how many rows the scans under n produced or filtered out.
func (n planNode) rowsRead() int {
	var read float64
	switch n.NodeType {
	case "Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan":
		read = (n.ActualRows + n.RemovedFilter + n.RemovedIndex) * max(n.ActualLoops, 1)
	}
	for _, c := range n.Plans {
		read += float64(c.rowsRead())
	}
	return int(read)
}
