// Package bankadapters is quickpay's side of the banks' quick-pay and
// withholding interfaces: the Bank contract the domain uses, BIN routing, the
// outcome classes every bank answer maps to, the per-bank call limit
// (WithLimit), and (in sub-packages) one adapter per wire Dialect: jsonhmac
// and formrsa, built from Vault by channels. The conformance sub-package is
// the test suite every adapter passes against banksim; an adapter's tests
// hand it a description of their dialect.
//
// Every call takes a context and carries a deadline. Retries happen only
// where the operation is idempotent (query, unbind, statement). Bank bodies
// are never logged; logs carry the operation, HTTP status, the bank's code and
// the latency.
package bankadapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/quickpay/quickpay/internal/sensitive"
)

// Dialect is a bank's wire protocol: how its requests and answers are
// encoded and signed (docs/banksim.md). Each has one adapter sub-package;
// a bank's channel settings name its dialect (package channels).
type Dialect string

// Dialects, each with its adapter package.
const (
	DialectJSONHMAC Dialect = "json-hmac" // JSON bodies, HMAC-SHA256 in headers: package jsonhmac
	DialectFormRSA  Dialect = "form-rsa"  // signed forms, RSA-SHA256: package formrsa
)

// Outcome is the class of a bank's answer. The domain sees only these, never
// a bank's own codes.
type Outcome string

// Outcome classes.
const (
	OutcomeSuccess             Outcome = "success"
	OutcomeProcessing          Outcome = "processing" // unknown for now: settle by query
	OutcomeRetryableDecline    Outcome = "retryable_decline"
	OutcomeHardDecline         Outcome = "hard_decline"
	OutcomeOTPWrong            Outcome = "otp_wrong"
	OutcomeOTPExpired          Outcome = "otp_expired"
	OutcomeOTPAttemptsExceeded Outcome = "otp_attempts_exceeded"
	OutcomeElementsMismatch    Outcome = "elements_mismatch"
	OutcomeAlreadyBound        Outcome = "already_bound"
	OutcomeUnavailable         Outcome = "bank_unavailable"
)

// Elements a bank can refuse, named as the API names them.
const (
	FieldHolderName = "holder_name"
	FieldIDNumber   = "id_number"
	FieldPhone      = "phone"
	FieldCardNumber = "card_number"
	FieldExpiry     = "expiry" // expiry or CVV2: banks do not say which
)

// Error is a bank's refusal or a failure to reach it, classified.
type Error struct {
	Bank    string  // bank code
	Op      string  // operation: "bind_apply", "charge", …
	Outcome Outcome // never OutcomeSuccess
	Field   string  // for OutcomeElementsMismatch: which element
	Reason  string  // for a decline whose code has one: a Reason constant
	Code    string  // the bank's own code, for operators
	Message string  // the bank's message
	Err     error   // the transport cause, for OutcomeUnavailable
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.Bank, e.Op, e.Outcome)
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	if e.Code != "" {
		s += " code " + e.Code
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// OutcomeOf classifies err: success for nil, the Error's outcome, and
// bank_unavailable for anything else.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OutcomeSuccess
	}
	var be *Error
	if errors.As(err, &be) {
		return be.Outcome
	}
	return OutcomeUnavailable
}

// ErrOrderNotFound: a query found no order with that number at the bank.
var ErrOrderNotFound = errors.New("order not found at the bank")

// BindRequest carries the four elements (and a credit card's expiry and
// CVV2, which are sent and never stored).
type BindRequest struct {
	RequestNo  string // the platform's id for this attempt
	CardNumber sensitive.PAN
	HolderName string
	IDNumber   sensitive.IDNumber
	Phone      string
	Expiry     sensitive.Expiry // credit cards
	CVV2       sensitive.CVV2   // credit cards
}

// BindSession is the bank's handle on a binding waiting for its SMS code.
type BindSession struct {
	BindRef string
}

// ChargeRequest debits a card by its agreement. OrderNo is the idempotency
// key at the bank: persist it before calling.
type ChargeRequest struct {
	OrderNo     string
	AgreementNo string
	Amount      int64 // fen
	Currency    string
	Description string
	NotifyURL   string // where an async bank posts the result
}

// ChargeStatus is what the bank says of a debit.
type ChargeStatus string

// Charge statuses.
const (
	ChargeSucceeded  ChargeStatus = "succeeded"
	ChargeFailed     ChargeStatus = "failed"
	ChargeProcessing ChargeStatus = "processing" // the bank accepted it and will settle it
	ChargeUnknown    ChargeStatus = "unknown"    // no usable answer: the debit may or may not have happened
)

// ChargeResult is a charge's or a query's answer.
type ChargeResult struct {
	OrderNo    string
	Status     ChargeStatus
	Outcome    Outcome // success, processing, retryable or hard decline, or unavailable for unknown
	Code       string  // the bank's code for the debit
	Reason     string  // for a failed debit: a Reason constant ("declined" if its code has none)
	Amount     int64
	BankTxnNo  string
	FinishedAt time.Time
	// Cause says why the status is unknown (timeout, lost answer, 5xx, bad
	// signature). Nil otherwise.
	Cause error
}

// RefundRequest returns money from an earlier debit (OrderNo) to its card.
// RefundNo is the idempotency key at the bank: persist it before calling.
type RefundRequest struct {
	RefundNo  string
	OrderNo   string // the debit refunded
	Amount    int64  // fen; at most the debit's amount less its earlier refunds
	Currency  string
	NotifyURL string // where an async bank posts the result
}

// RefundResult is a refund's or a refund query's answer. Status and Outcome
// read as a charge's: succeeded, failed (Outcome the decline's class — a
// refund's own refusals are hard declines — and Reason says why),
// processing, or unknown (no usable answer, or one that names another
// refund: settle by QueryRefund on the same refund number, never by a
// second refund).
type RefundResult struct {
	RefundNo   string
	OrderNo    string // the debit refunded, where the answer names it
	Status     ChargeStatus
	Outcome    Outcome
	Code       string // the bank's code for the refund
	Reason     string // for a failed refund: a Reason constant ("declined" if its code has none)
	Amount     int64
	BankTxnNo  string
	FinishedAt time.Time
	Cause      error // why the status is unknown; nil otherwise
}

// EntryType says which way a statement entry moved money.
type EntryType string

// Statement entry types.
const (
	EntryDebit  EntryType = "debit"
	EntryRefund EntryType = "refund"
)

// StatementEntry is one successful movement in a bank's daily statement: a
// debit (OrderNo its order number) or a refund (OrderNo its refund number,
// RefundOf the debit's order number).
type StatementEntry struct {
	Type        EntryType
	OrderNo     string
	RefundOf    string // refunds: the debit refunded
	AgreementNo string
	Amount      int64
	BankTxnNo   string
	FinishedAt  time.Time
}

// Statement is a bank's statement of one day. Final is true once the bank's
// day has closed: until then entries may still be added.
type Statement struct {
	Entries []StatementEntry
	Final   bool
}

// CallOptions are the transport settings every adapter's Config embeds.
type CallOptions struct {
	// Timeout bounds each attempt. Defaults to 10s.
	Timeout time.Duration
	// Retries are extra attempts for idempotent operations. Defaults to 2;
	// negative means none.
	Retries int
	// HTTPClient defaults to a keep-alive client without an overall timeout
	// (deadlines come from Timeout and the context).
	HTTPClient *http.Client
	// Logger defaults to slog.Default(). Bodies are never logged.
	Logger *slog.Logger
	// Now is the clock for request timestamps. Defaults to time.Now.
	Now func() time.Time
}

// Bank is what every bank adapter does.
//
// Errors: *Error with its Outcome for refusals and transport failures.
// Charge never returns an error for an answer it could not get: it returns
// a ChargeResult with Status ChargeUnknown, and the caller settles it with
// Query on the same order number — never a new one. An error from Charge
// means the debit was not sent: a request the adapter refused to build, or
// a call that never left quickpay (ErrNotSent, from WithLimit's gate).
type Bank interface {
	// Code is the bank code: "ICBC".
	Code() string
	// BindApply checks the four elements and makes the bank text a code to
	// the reserved phone. Not retried: a retry would send another SMS.
	BindApply(ctx context.Context, req BindRequest) (BindSession, error)
	// BindResend makes the bank text a fresh code.
	BindResend(ctx context.Context, bindRef string) error
	// BindConfirm checks the code and returns the agreement number. A
	// repeat of a confirmed session with the same code returns the same
	// agreement while it is live (how a confirm whose answer was lost is
	// settled); with another code it is OutcomeOTPExpired.
	BindConfirm(ctx context.Context, bindRef string, otp sensitive.OTP) (agreementNo string, err error)
	// Charge debits by agreement. See the interface doc for unknown results.
	Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error)
	// Query returns the state of an order; ErrOrderNotFound if the bank never
	// received it.
	Query(ctx context.Context, orderNo string) (ChargeResult, error)
	// Unbind terminates an agreement; unbinding a terminated one succeeds.
	Unbind(ctx context.Context, agreementNo string) error
	// Refund credits the card from an earlier debit. As with Charge, an
	// answer it could not get is a RefundResult with Status ChargeUnknown,
	// never an error; an error means the refund was not sent.
	Refund(ctx context.Context, req RefundRequest) (RefundResult, error)
	// QueryRefund returns the state of a refund; ErrOrderNotFound if the
	// bank never received it.
	QueryRefund(ctx context.Context, refundNo string) (RefundResult, error)
}

// Statementer is a bank that serves daily statements (reconciliation).
type Statementer interface {
	Statement(ctx context.Context, date time.Time) (Statement, error)
}

// NoticeKind is what a bank's own POST to quickpay says.
type NoticeKind string

// Notice kinds.
const (
	NoticeCharge              NoticeKind = "charge"               // an async debit settled
	NoticeRefund              NoticeKind = "refund"               // an async refund settled
	NoticeAgreementTerminated NoticeKind = "agreement_terminated" // the cardholder ended an agreement at the bank
)

// Notice is a bank's callback, verified: one of its fields is set, as Kind
// says.
type Notice struct {
	Kind        NoticeKind
	Charge      ChargeResult // NoticeCharge
	Refund      RefundResult // NoticeRefund
	AgreementNo string       // NoticeAgreementTerminated
	At          time.Time    // NoticeAgreementTerminated: when the bank ended it
}

// CallbackParser is a bank that posts results and notices on its own. It
// verifies the callback's signature and its timestamp window: a bad one is
// an error, never a notice. Errors name no value of the callback.
type CallbackParser interface {
	ParseCallback(header map[string][]string, body []byte) (Notice, error)
}

// CallbackWindow is how far a callback's timestamp may be from the
// adapter's clock (CallOptions.Now), either way. A notice recorded and
// posted again later is refused; within the window a repeat is harmless,
// as every notice is applied idempotently.
const CallbackWindow = 300 * time.Second

// ErrStaleCallback is ParseCallback's refusal of a callback whose
// timestamp is missing or outside CallbackWindow. A bank retries a refused
// callback with a fresh timestamp.
var ErrStaleCallback = errors.New("callback timestamp is missing or more than 300 s from our clock")
