// Package bankadapters will hold the Bank contract quickpay's domain uses
// (bind apply, resend, confirm, charge, query, unbind; statements and async
// notices as optional capabilities), BIN routing, one sub-package per bank
// dialect, and the conformance suite every adapter passes against banksim.
package bankadapters
