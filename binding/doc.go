// Package binding will hold members (explicit and implicit), four-element
// card binding confirmed by the bank's SMS code, and cards, with their
// Postgres store. It speaks domain types and declares the small interfaces it
// needs from the token vault, the banks, SMS and the clock.
package binding
