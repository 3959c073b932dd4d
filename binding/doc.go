// Package binding holds members (explicit and implicit), four-element card
// binding confirmed by the bank's SMS code, and cards, with their Postgres
// store. It speaks domain types and declares the small interfaces it needs
// from the token vault (Vault), the banks (Banks) and the abuse limits
// (Limiter).
//
// A binding starts with the four elements (holder name, ID number, card
// number, phone reserved at the bank): apply.go validates them, routes the
// card by BIN, tokenizes the card number at once, and asks the bank to text
// a code. confirm.go checks the user's code at the bank, which returns an
// agreement number; the card is created, its agreement stored encrypted,
// and the member created if the binding was implicit. resend.go asks the
// bank for a fresh code; cards.go unbinds, revokes and reads cards;
// revoke.go acts on a bank's notice that a cardholder ended an agreement
// (the card found by its agreement's keyed fingerprint) and records every
// such notice for operators; members.go registers explicit members; charging.go answers what the
// charge workers need of cards (each card's bank and the rows sharing its
// number), under a lock of the number taken in the caller's transaction, so
// that mandate never reads this package's tables. CVV2 and expiry go to the
// bank and are never stored.
//
// # No bank call inside a transaction
//
// Confirm, Resend and Unbind never wait on a bank while holding a
// connection or a row lock. Confirm and Unbind claim their row first
// (claimed_by, a token of the call, and claim_until, when the claim lapses)
// and commit; then call the bank; then apply the answer in a second
// transaction, which checks the call still holds the claim and releases
// it. Another confirm or an unbind of a claimed row waits for the claim
// (polling, bounded). Resend reserves its send in one transaction and takes
// no claim; it sends nothing while a confirm holds one. The window between the
// bank's answer and the second transaction is named in confirm.go and
// cards.go, with what settles a crash there. How many calls wait on one
// bank is bankadapters.WithLimit's business, not this package's.
//
// # One unit of work
//
// Every write of an operation goes through one unit (unit.go): its
// transaction or batch, its audit rows (the vault's decryption rows
// included), its events, and the error to answer once it has committed.
//
// OTP rules quickpay enforces itself: a code is valid 5 minutes; 5 wrong
// tries end the binding; resends are at least 60 s apart and at most 5 sends
// in all. Every send, try and result is audited.
package binding
