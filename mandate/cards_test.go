package mandate_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/mandate"
)

// The cards a charge claim reads through mandate.Cards: each card's bank
// and the card rows of its number, under a lock of each number held by
// the claiming transaction.
func TestCardsForCharging(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	first := w.bindCard(t, "ICBC", 1)
	if _, err := w.bindings.Unbind(ctx, first.Merchant, first.ID); err != nil {
		t.Fatal(err)
	}
	again := w.bindAccount(t, first.Merchant, first.Account)
	other := w.bindCard(t, "CCB", 1)
	var cards mandate.Cards = w.bindings

	err := db.InTx(ctx, w.Pool, func(tx pgx.Tx) error {
		got, err := cards.CardsForCharging(ctx, tx, []string{again.ID, other.ID, "card_missing"})
		if err != nil {
			return err
		}
		if len(got) != 2 {
			t.Fatalf("answer has %d cards, want 2 (a missing card is absent)", len(got))
		}
		a, o := got[again.ID], got[other.ID]
		if a.BankCode != "ICBC" || o.BankCode != "CCB" {
			t.Errorf("banks = %q, %q; want ICBC, CCB", a.BankCode, o.BankCode)
		}
		if a.Number == o.Number {
			t.Errorf("two card numbers share the key %d", a.Number)
		}
		want := []string{first.ID, again.ID}
		slices.Sort(want)
		if !slices.Equal(a.SameNumber, want) {
			t.Errorf("rows of the card bound again = %v, want %v (its unbound row too)", a.SameNumber, want)
		}
		if !slices.Equal(o.SameNumber, []string{other.ID}) {
			t.Errorf("rows of the other card = %v, want only its own", o.SameNumber)
		}
		// One lock per card number, held by this transaction.
		var locks int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
			AND pid = pg_backend_pid() AND granted`).Scan(&locks); err != nil {
			return err
		}
		if locks != 2 {
			t.Errorf("advisory locks held = %d, want 2 (one per card number)", locks)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
