package binding

import (
	"context"
	"fmt"

	"github.com/quickpay/quickpay/internal/sensitive"
)

// What other domains (mandates) need of a card: its reserved phone, to text
// the member, and its agreement number, to charge it. Both are decrypted in
// the HSM and each decryption is audited.

// CardPhone returns the card and the phone number reserved at the bank,
// which the binding's four elements carried. Errors: ErrNotFound.
func (s *Service) CardPhone(ctx context.Context, merchantID, cardID string, who sensitive.Access) (Card, string, error) {
	var bindingID string
	var phoneCT []byte
	c, err := scanCardWith(s.pool.QueryRow(ctx, `SELECT `+cardColsC+`, b.id, b.phone_ct FROM cards c
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

// Agreement returns the card and its bank agreement number, for a charge.
// Errors: ErrNotFound.
func (s *Service) Agreement(ctx context.Context, merchantID, cardID string, who sensitive.Access) (Card, string, error) {
	c, agreementCT, err := getCard(ctx, s.pool, merchantID, cardID, false)
	if err != nil {
		return Card{}, "", err
	}
	agreement, err := s.vault.Decrypt(ctx, agreementCT, CardAgreementAAD(merchantID, cardID), who)
	if err != nil {
		return Card{}, "", fmt.Errorf("card %s agreement: %w", cardID, err)
	}
	return c, string(agreement), nil
}
