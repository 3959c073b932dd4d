package bankadapters

import (
	"errors"
	"fmt"
)

// CodeClass is what one of a dialect's codes means to quickpay.
type CodeClass struct {
	Outcome Outcome
	Field   string // for elements mismatch
	Reason  string // for declines: one of the Reason constants
}

// Decline reasons: a debit's refusal in bank-independent words, which
// quickpay records as a charge's failure_code and which decide what happens
// to the mandate.
const (
	ReasonInsufficientFunds = "insufficient_funds" // retryable
	ReasonSingleLimit       = "single_limit"       // retryable
	ReasonDailyLimit        = "daily_limit"        // retryable
	ReasonTryTomorrow       = "try_tomorrow"       // retryable: the card's failures for today are used up
	ReasonAgreementInvalid  = "agreement_invalid"  // hard: the agreement is gone
	ReasonCardFrozen        = "card_frozen"        // hard: the card may thaw
	ReasonCardClosed        = "card_closed"        // hard: the card is gone
	ReasonOrderConflict     = "order_conflict"     // hard: the order number was used with other terms
	ReasonElementsMismatch  = "elements_mismatch"  // hard: the card's elements no longer match the bank's

	// A refund's refusals (all hard: the same refund will not pass later).
	ReasonRefundExceeds       = "refund_exceeds"        // more than the debit less its refunds
	ReasonOrderNotRefundable  = "order_not_refundable"  // no succeeded debit of that order number
	ReasonRefundWindowExpired = "refund_window_expired" // the debit is more than 180 days old
)

// ValidateCharge refuses a charge that must not reach a bank.
func ValidateCharge(req ChargeRequest) error {
	switch {
	case req.OrderNo == "" || len(req.OrderNo) > 64:
		return errors.New("charge: order number must be 1–64 characters")
	case req.AgreementNo == "":
		return errors.New("charge: agreement number is empty")
	case req.Amount <= 0:
		return errors.New("charge: amount must be positive fen")
	case req.Currency != "CNY":
		return fmt.Errorf("charge: currency %q not supported", req.Currency)
	}
	return nil
}

// UnknownResult is a charge whose answer never arrived or could not be
// trusted: the debit may have happened. Settle it with Query on the same
// order number.
func UnknownResult(req ChargeRequest, cause error) ChargeResult {
	return ChargeResult{OrderNo: req.OrderNo, Amount: req.Amount, Status: ChargeUnknown,
		Outcome: OutcomeProcessing, Cause: cause}
}

// Classify sets r's Status and Outcome from the debit's code, read through
// the dialect's table, and the bank's status word (SUCCESS, FAILED,
// PROCESSING; may be empty on a decline). Anything it cannot read with
// certainty is unknown, never success.
func Classify(r ChargeResult, table map[string]CodeClass, code, status string) ChargeResult {
	r.Code = code
	c, known := table[code]
	switch {
	case status == "PROCESSING" || (known && c.Outcome == OutcomeProcessing):
		r.Status, r.Outcome = ChargeProcessing, OutcomeProcessing
	case known && c.Outcome == OutcomeSuccess && status == "SUCCESS":
		r.Status, r.Outcome = ChargeSucceeded, OutcomeSuccess
	case known && c.Outcome == OutcomeUnavailable:
		// A bank's system error may hide a debit: settle by query.
		r.Status, r.Outcome = ChargeUnknown, OutcomeProcessing
		r.Cause = fmt.Errorf("bank answered %s, a system error", code)
	case known && (c.Outcome == OutcomeRetryableDecline || c.Outcome == OutcomeHardDecline) && (status == "" || status == "FAILED"):
		r.Status, r.Outcome, r.Reason = ChargeFailed, c.Outcome, c.Reason
		if r.Reason == "" {
			r.Reason = "declined"
		}
	case known && c.Outcome == OutcomeElementsMismatch && (status == "" || status == "FAILED"):
		// A debit refused for the card's elements (DESIGN.md, "Charging"):
		// no retry can succeed.
		r.Status, r.Outcome, r.Reason = ChargeFailed, OutcomeHardDecline, ReasonElementsMismatch
	default:
		r.Status, r.Outcome = ChargeUnknown, OutcomeProcessing
		r.Cause = fmt.Errorf("unreadable result: code %q status %q", code, status)
	}
	return r
}

// ValidateRefund refuses a refund that must not reach a bank.
func ValidateRefund(req RefundRequest) error {
	switch {
	case !validNumber(req.RefundNo):
		return errors.New("refund: refund number must be 1–64 printable ASCII characters without spaces")
	case !validNumber(req.OrderNo):
		return errors.New("refund: order number must be 1–64 printable ASCII characters without spaces")
	case req.Amount <= 0:
		return errors.New("refund: amount must be positive fen")
	case req.Currency != "CNY":
		return fmt.Errorf("refund: currency %q not supported", req.Currency)
	}
	return nil
}

// validNumber is a bank order or refund number: 1–64 printable ASCII
// characters, no spaces (docs/banksim.md).
func validNumber(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// UnknownRefund is a refund whose answer never arrived or could not be
// trusted: the bank may have credited the card. Settle it with QueryRefund
// on the same refund number, never with a second refund.
func UnknownRefund(req RefundRequest, cause error) RefundResult {
	return RefundResult{RefundNo: req.RefundNo, OrderNo: req.OrderNo, Amount: req.Amount, Status: ChargeUnknown,
		Outcome: OutcomeProcessing, Cause: cause}
}

// ClassifyRefund is Classify for a refund: the same table, the same
// reading of code and status word, and the same rule that what it cannot
// read with certainty is unknown, never success.
func ClassifyRefund(r RefundResult, table map[string]CodeClass, code, status string) RefundResult {
	c := Classify(ChargeResult{}, table, code, status)
	r.Status, r.Outcome, r.Code, r.Reason, r.Cause = c.Status, c.Outcome, c.Code, c.Reason, c.Cause
	return r
}
