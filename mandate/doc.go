// Package mandate holds withholding mandates: a biller's standing order to
// debit a member's bound card on a schedule, consented to once by an SMS
// code that quickpay sends itself. It owns the mandates' schedules, their
// charges (one per mandate and period, a database constraint), the bank
// attempts of each charge, retries, pre-debit notices, reconciliation
// against the banks' daily statements, refunds of succeeded charges, and
// the River workers that send due charges and refunds and ask banks about
// unknown ones.
//
// # Where each story lives
//
//   - consent.go: Create, Confirm and Resend, and the consent code and text.
//   - lifecycle.go: Pause, Resume, Cancel, CancelForCard, completion; Get.
//   - list.go: the mandate and charge lists, newest first, a page at a time.
//   - materialize.go: periods that fell due become charges; PostCharge.
//   - send.go: RunDue; due charges are claimed and sent to their bank.
//   - settle.go: bank answers applied (the charge answer, callbacks, queries),
//     and a card revoked when its agreement is gone.
//   - notice.go: pre-debit notices; reconcile.go: daily statements (debits
//     and refunds); mismatch.go: successes for another amount, held for
//     operators.
//   - refund.go: refunds created, read, listed, and settled by a bank's
//     callback; refund_workers.go: refunds claimed, sent and settled.
//   - workers.go: the River workers and their job args.
//   - schedule.go, text.go: dates and periods; text that reaches a phone.
//   - store*.go: every SQL statement of the package.
//
// mandate reads binding's cards only through its Cards interface
// (implemented by *binding.Service): phones and agreement numbers, and
// each card's bank and number for the per-card failure cap
// (CardsForCharging, in the claiming transaction).
//
// # Outside calls and transactions
//
// No bank or carrier call happens inside a database transaction. A
// consent text is committed (the mandate, its code's hash, the phone's
// count) and then sent; a refused one expires the mandate
// (consent_not_sent). Pre-debit notices are claimed (a lease, committed),
// texted one by one outside any transaction, and each is recorded
// (notice_sent_at, the charge.pre_debit_notice event) in a short
// transaction of its own; a refused notice is released for the next run.
// Every bank call goes through the bank's adapter, which bankadapters.WithLimit
// wraps with the bank's own concurrency and rate gate (QUICKPAY_BANK_LIMITS),
// shared with binding: a call queued past its job's time is
// bankadapters.ErrNotSent, and leaves its attempt as it was for the job's
// next run.
//
// # Exactly once
//
// A charge is claimed, and its attempt's bank order number persisted, in
// one transaction with the River job that executes it. The worker sends the
// debit under that order number, and settles the answers in a second
// transaction. An answer it cannot trust (timeout, lost answer, bank
// "processing" or system error) leaves the attempt unknown; it is settled
// by querying the bank with the same order number, by the bank's callback,
// or by the daily statement, and never by a second debit. A job that runs
// again after a crash queries before it charges. At most one attempt per
// charge is open at a time (a partial unique index).
//
// Refunds follow the same rules under their own refund numbers: a refund
// is written (its number persisted) with its job, claimed for the bank in
// a committed transaction, sent, and settled in a second one; an answer
// it cannot trust leaves it pending, settled by querying the same number,
// by callback or by statement, never by a second refund. A charge's
// refunds never exceed it: each raises the charge's held refund sum in the
// transaction that writes it, under a CHECK (migration 024).
//
// # Time
//
// Everything is dated by an injected clock. RunDue(asOf) does what would be
// due at asOf: materializes the periods that fell due, sends pre-debit
// notices, and claims the charges whose time has come. Retries are dated
// (retry_days after the charge date); status queries after an unknown
// answer back off in real time (Config.QueryBackoff).
package mandate
