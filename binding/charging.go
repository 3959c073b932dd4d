package binding

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// What charging (mandate) needs of cards beyond their phones and
// agreement numbers (cards.go): each card's bank, and, for the banks' cap
// on failed debits per card and day, the card rows that carry the same
// card number, read under a lock of that number.

// ChargingCard is a card as a charge claim needs it.
type ChargingCard struct {
	BankCode string
	// Number tells the card numbers of one answer apart: the cards of one
	// number share it. It is neither the number nor its fingerprint, and
	// means nothing outside its answer.
	Number int
	// SameNumber are the ids of every card row with this card's number,
	// this one included: the card unbound and bound again, or bound by
	// another merchant. A bank counts them as one card.
	SameNumber []string
}

// CardsForCharging returns the cards of cardIDs, by id, read in the
// caller's transaction tx, after taking for tx an advisory lock per card
// number, in a fixed order: claims that run at once, each holding the
// charges it claims, take a number's allowance one after the other and
// never deadlock on it. (Advisory, not the card rows: unbinding locks a
// card row and then its charges, which the claim holds.) A card that does
// not exist is absent from the map. One round trip, whatever the number of
// cards. Errors: a database error.
func (s *Service) CardsForCharging(ctx context.Context, tx pgx.Tx, cardIDs []string) (map[string]ChargingCard, error) {
	return chargingCards(ctx, tx, cardIDs)
}
