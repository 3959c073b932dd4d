package mandate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The lists' SQL. Each page is a keyset read: the merchant's rows before
// the cursor's (created_at, id), newest first, on an index led by
// merchant_id and ending in (created_at, id) (migration 022), never OFFSET.
// A filter adds a condition only when it is set, so each combination is
// its own statement and plans for what it asks.

// cursor is the (created_at, id) of the row a page starts after; the zero
// cursor starts at the newest row.
type cursor struct {
	at time.Time
	id string
}

// keyset builds a page's WHERE clause and its arguments, $1 being the
// merchant id.
type keyset struct {
	conds []string
	args  []any
}

func newKeyset(merchantID string) *keyset {
	return &keyset{conds: []string{"merchant_id = $1"}, args: []any{merchantID}}
}

// arg adds v as an argument and returns its placeholder.
func (k *keyset) arg(v any) string {
	k.args = append(k.args, v)
	return "$" + strconv.Itoa(len(k.args))
}

// where adds a condition.
func (k *keyset) where(cond string) { k.conds = append(k.conds, cond) }

// sql is the page's statement over table: rows before after, newest
// first, at most limit.
func (k *keyset) sql(cols, table string, after cursor, limit int) string {
	if after.id != "" {
		k.where("(created_at, id) < (" + k.arg(after.at) + ", " + k.arg(after.id) + ")")
	}
	return `SELECT ` + cols + ` FROM ` + table + ` WHERE ` + strings.Join(k.conds, " AND ") +
		` ORDER BY created_at DESC, id DESC LIMIT ` + k.arg(limit)
}

// rowCursor returns the position of the merchant's charge (prefix "chg"),
// mandate ("mdt") or refund ("rfd") id; ErrNotFound if it has none such.
func rowCursor(ctx context.Context, q querier, prefix, merchantID, id string) (cursor, error) {
	var table string
	switch prefix {
	case "chg":
		table = "charges"
	case "mdt":
		table = "mandates"
	case "rfd":
		table = "refunds"
	default:
		return cursor{}, fmt.Errorf("mandate: no list of %q rows", prefix)
	}
	c := cursor{id: id}
	err := q.QueryRow(ctx, `SELECT created_at FROM `+table+` WHERE merchant_id = $1 AND id = $2`, merchantID, id).
		Scan(&c.at)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, err
}

// listChargePage reads up to limit of the merchant's charges that f
// shows, before after, newest first, with their attempts.
func listChargePage(ctx context.Context, q querier, merchantID string, f ChargeFilter, after cursor, limit int) ([]Charge, error) {
	k := newKeyset(merchantID)
	if f.Status != "" {
		k.where("status = " + k.arg(string(f.Status)))
	}
	if f.MandateID != "" {
		k.where("mandate_id = " + k.arg(f.MandateID))
	}
	if f.CardID != "" {
		// Through the card's mandates (a card has few, and a mandate's
		// card never changes), so the mandate index serves it.
		card := k.arg(f.CardID)
		k.where("card_id = " + card + " AND mandate_id IN (SELECT id FROM mandates WHERE merchant_id = $1 AND card_id = " + card + ")")
	}
	if f.MemberID != "" {
		// Charges hold no member: their mandates do (a member has few).
		k.where("mandate_id IN (SELECT id FROM mandates WHERE merchant_id = $1 AND member_id = " + k.arg(f.MemberID) + ")")
	}
	if !f.CreatedGTE.IsZero() {
		k.where("created_at >= " + k.arg(f.CreatedGTE))
	}
	if !f.CreatedLT.IsZero() {
		k.where("created_at < " + k.arg(f.CreatedLT))
	}
	rows, err := q.Query(ctx, k.sql(chargeCols, "charges", after, limit), k.args...)
	if err != nil {
		return nil, err
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Charge, error) { return scanCharge(r) })
	if err != nil || len(cs) == 0 {
		return cs, err
	}
	idList := make([]string, len(cs))
	for i, c := range cs {
		idList[i] = c.ID
	}
	as, err := listAttempts(ctx, q, merchantID, idList)
	for i := range cs {
		cs[i].Attempts = as[cs[i].ID]
	}
	return cs, err
}

// listMandatePage reads up to limit of the merchant's mandates that f
// shows at now, before after, newest first. A pending mandate whose
// consent code ran out by now is listed as the API shows it: expired.
func listMandatePage(ctx context.Context, q querier, merchantID string, f MandateFilter, now time.Time, after cursor, limit int) ([]Mandate, error) {
	k := newKeyset(merchantID)
	switch f.Status {
	case "":
	case StatusPendingConfirmation:
		k.where("status = 'pending_confirmation' AND otp_expires_at >= " + k.arg(now))
	case StatusExpired:
		k.where("(status = 'expired' OR (status = 'pending_confirmation' AND otp_expires_at < " + k.arg(now) + "))")
	default:
		k.where("status = " + k.arg(string(f.Status)))
	}
	if f.CardID != "" {
		k.where("card_id = " + k.arg(f.CardID))
	}
	if f.MemberID != "" {
		k.where("member_id = " + k.arg(f.MemberID))
	}
	rows, err := q.Query(ctx, k.sql(mandateCols, "mandates", after, limit), k.args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mandate, error) {
		m, err := scanMandate(r)
		return m.Mandate, err
	})
}
