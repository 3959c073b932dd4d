package opsview

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// maxQuery is the longest search text looked up: ids, order and refund
// numbers (64) and bank references are all shorter.
const maxQuery = 128

// idKinds maps an id's prefix to its table and kind.
var idKinds = []struct {
	prefix string
	kind   HitKind
	sql    string // reads id, merchant_id, summary by id = $1
}{
	{"mch_", HitMerchant, `SELECT id, id, name || ' (' || client_id || ')' FROM merchants WHERE id = $1`},
	{"mem_", HitMember, `SELECT id, merchant_id, 'member ' || external_id || ' (' || kind || ')' FROM members WHERE id = $1`},
	{"bnd_", HitBinding, `SELECT id, merchant_id, 'binding ' || status || ', ' || bank_code || ' ' || masked_pan FROM bindings WHERE id = $1`},
	{"card_", HitCard, `SELECT id, merchant_id, 'card ' || status || ', ' || bank_code || ' ' || masked_pan FROM cards WHERE id = $1`},
	{"mdt_", HitMandate, `SELECT id, merchant_id, 'mandate ' || status || ', ' || reference FROM mandates WHERE id = $1`},
	{"chg_", HitCharge, `SELECT id, merchant_id, 'charge ' || status || ', ' || period || ', ' || amount || ' fen' FROM charges WHERE id = $1`},
	{"rfd_", HitRefund, `SELECT id, merchant_id, 'refund ' || status || ', ' || amount || ' fen, ' || refund_no FROM refunds WHERE id = $1`},
	{"evt_", HitEvent, `SELECT id, merchant_id, 'event ' || type FROM events WHERE id = $1`},
}

// numberSQL finds q among the numbers that are not ids: a charge
// attempt's order number, a refund number, and the banks' references of
// attempts, charges and refunds. Each is an index probe.
const numberSQL = `
	SELECT 'charge', charge_id, merchant_id, 'order number of attempt ' || seq || ' (' || status || ', ' || bank_code || ')'
	  FROM charge_attempts WHERE order_no = $1
	UNION ALL
	SELECT 'charge', charge_id, merchant_id, 'bank reference of attempt ' || order_no || ' (' || status || ', ' || bank_code || ')'
	  FROM charge_attempts WHERE bank_txn_no = $1
	UNION ALL
	SELECT 'refund', id, merchant_id, 'refund number (' || status || ', ' || bank_code || ')'
	  FROM refunds WHERE refund_no = $1
	UNION ALL
	SELECT 'refund', id, merchant_id, 'bank reference of refund ' || refund_no || ' (' || status || ', ' || bank_code || ')'
	  FROM refunds WHERE bank_reference = $1
	LIMIT 200`

// Search finds q (surrounding blanks ignored): an id of a merchant,
// member, binding, card, mandate, charge, refund or event, by its prefix's
// table; else a charge attempt's order number, a refund number or a bank
// reference (a hit names the charge or refund and says which number
// matched). Nothing found is an empty slice, not an error.
func (r *Reader) Search(ctx context.Context, q string) ([]Hit, error) {
	q = strings.TrimSpace(q)
	if q == "" || len(q) > maxQuery {
		return nil, nil
	}
	scan := func(kind HitKind) pgx.RowToFunc[Hit] {
		return func(row pgx.CollectableRow) (Hit, error) {
			h := Hit{Kind: kind}
			return h, row.Scan(&h.ID, &h.MerchantID, &h.Summary)
		}
	}
	for _, k := range idKinds {
		if strings.HasPrefix(q, k.prefix) {
			return all(ctx, r, "search "+string(k.kind), scan(k.kind), k.sql, q)
		}
	}
	return all(ctx, r, "search numbers", func(row pgx.CollectableRow) (Hit, error) {
		var h Hit
		var kind string
		if err := row.Scan(&kind, &h.ID, &h.MerchantID, &h.Summary); err != nil {
			return h, err
		}
		switch HitKind(kind) {
		case HitCharge, HitRefund:
			h.Kind = HitKind(kind)
		default:
			return h, fmt.Errorf("search: hit of kind %q", kind)
		}
		return h, nil
	}, numberSQL, q)
}
