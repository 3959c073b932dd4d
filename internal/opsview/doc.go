// Package opsview is the operator console's read model: the queries that
// show operators what every merchant's members, cards, bindings, mandates,
// charges, refunds, events, reconciliations and audit rows hold, across
// merchants, with keyset pages. It only reads; actions go through the
// domain services.
package opsview
