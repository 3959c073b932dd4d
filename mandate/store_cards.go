package mandate

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reads of binding's cards table. mandate needs a card's bank and, to keep
// the banks' per-card failure cap across bindings of one card number, the
// card rows that share its number's fingerprint. They run in the claiming
// transaction (its advisory locks and charge locks), which binding's
// Service does not offer yet: these statements are mandate's until a
// Cards method takes a querier and answers them (see the report of issue
// 19). claim's due-charge query (run.go) joins cards for the bank code in
// the same way.

// cardBanks returns the bank code of each card.
func cardBanks(ctx context.Context, q querier, cardIDs []string) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT id, bank_code FROM cards WHERE id = ANY($1)`, cardIDs)
	if err != nil {
		return nil, err
	}
	bankOf := map[string]string{}
	var id, code string
	_, err = pgx.ForEachRow(rows, []any{&id, &code}, func() error { bankOf[id] = code; return nil })
	return bankOf, err
}

// lockCardNumbers takes, for the transaction, an advisory lock per card
// number (its fingerprint) of cardIDs, in fingerprint order.
func lockCardNumbers(ctx context.Context, tx pgx.Tx, cardIDs []string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('mandate.claim.pan:' || encode(fp, 'hex'), 0))
		FROM (SELECT DISTINCT pan_fp FROM cards WHERE id = ANY($1)) AS f(fp) ORDER BY fp`, cardIDs)
	return err
}

// cardDayUse returns, for each card of cardIDs, its number's fingerprint,
// and the failed attempts on bank day day and the open attempts of every
// card row with that number: rows (card id, fingerprint, failed, open).
// By card (its index), not by the partial index of all open attempts:
// hence NOT IN for the open ones.
func cardDayUse(ctx context.Context, q querier, cardIDs []string, day time.Time) (pgx.Rows, error) {
	return q.Query(ctx, `SELECT k.id, k.pan_fp,
		count(a.order_no) FILTER (WHERE a.status = 'failed'),
		count(a.order_no) FILTER (WHERE a.status NOT IN ('succeeded', 'failed', 'amount_mismatch'))
		FROM cards k JOIN cards sib ON sib.pan_fp = k.pan_fp
		LEFT JOIN charge_attempts a ON a.card_id = sib.id
			AND ((a.bank_day = $2 AND a.status = 'failed') OR a.status NOT IN ('succeeded', 'failed', 'amount_mismatch'))
		WHERE k.id = ANY($1) GROUP BY k.id, k.pan_fp`, cardIDs, day)
}
