package binding

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// What other domains (mandates) need of a card: its reserved phone, to text
// the member, and its agreement number, to charge it. Both are decrypted in
// the HSM and each decryption is audited. Charges read agreement numbers
// in batches (Agreements).

// CardPhone returns the card and the phone number reserved at the bank,
// which the binding's four elements carried, read on q: a caller that
// holds a transaction passes it (and carries it for the decryption's audit
// row, audit.WithExecer), so no second connection is needed. Errors:
// ErrNotFound.
func (s *Service) CardPhone(ctx context.Context, q Querier, merchantID, cardID string, who sensitive.Access) (Card, string, error) {
	var bindingID string
	var phoneCT []byte
	c, err := scanCardWith(q.QueryRow(ctx, `SELECT `+cardColsC+`, b.id, b.phone_ct FROM cards c
		JOIN bindings b ON b.id = c.binding_id AND b.merchant_id = c.merchant_id
		WHERE c.merchant_id = $1 AND c.id = $2`, merchantID, cardID), &bindingID, &phoneCT)
	if err != nil {
		return Card{}, "", err
	}
	phone, err := s.vault.Decrypt(ctx, phoneCT, BindingAAD(merchantID, bindingID, "phone"), who)
	if err != nil {
		return Card{}, "", fmt.Errorf("card %s phone: %w", cardID, err)
	}
	return c, string(phone), nil
}

// CardRef names one merchant's card.
type CardRef struct{ MerchantID, CardID string }

// CardAgreement is a card with its decrypted bank agreement number, or the
// error that kept the number from being decrypted.
type CardAgreement struct {
	Card      Card
	Agreement string
	Err       error
}

// Agreements returns cards with their bank agreement numbers, for a batch
// of charges: the cards are read in one query and each number is decrypted
// in the HSM, its audit row written for (actor, reason); all rows commit
// together before any number is returned. A card that does not exist is
// absent from the map; one whose number does not decrypt carries the error.
// Errors: a database error, for the whole batch.
func (s *Service) Agreements(ctx context.Context, refs []CardRef, actor, reason string) (map[CardRef]CardAgreement, error) {
	merchants, ids := make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		merchants[i], ids[i] = r.MerchantID, r.CardID
	}
	out := make(map[CardRef]CardAgreement, len(refs))
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		clear(out)
		rows, err := tx.Query(ctx, `SELECT `+cardColsC+`, c.agreement_ct FROM cards c
			JOIN unnest($1::text[], $2::text[]) AS r(merchant_id, id) ON c.merchant_id = r.merchant_id AND c.id = r.id`,
			merchants, ids)
		if err != nil {
			return err
		}
		type sealed struct {
			card Card
			ct   []byte
		}
		var list []sealed
		for rows.Next() {
			var x sealed
			if x.card, err = scanCardWith(rows, &x.ct); err != nil {
				rows.Close()
				return err
			}
			list = append(list, x)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// The audit rows are written together, in this transaction.
		ctx, rec := audit.WithCollector(ctx)
		for _, x := range list {
			c := x.card
			pt, err := s.vault.Decrypt(ctx, x.ct, CardAgreementAAD(c.MerchantID, c.ID), sensitive.Access{
				MerchantID: c.MerchantID, Actor: actor, Subject: c.ID, Reason: reason})
			a := CardAgreement{Card: c, Agreement: string(pt)}
			if err != nil {
				a.Err = fmt.Errorf("card %s agreement: %w", c.ID, err)
			}
			out[CardRef{c.MerchantID, c.ID}] = a
		}
		return rec.Flush(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("card agreements: %w", err)
	}
	return out, nil
}
