package core

import (
	"errors"
	"strconv"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// The type field of query answers, statement entries and callbacks
// (docs/banksim.md). A debit's may be absent.
const (
	typeDebit               = "debit"
	typeRefund              = "refund"
	typeAgreementTerminated = "agreement_terminated"
)

// The refusals of a callback. They are fixed: a callback is the outside
// world's text, and none of it goes into an error or a log.
var (
	ErrCallbackMerchant  = errors.New("callback for another merchant number")
	ErrCallbackSignature = errors.New("callback signature does not verify")
	ErrCallbackStale     = bankadapters.ErrStaleCallback
	ErrCallbackType      = errors.New("callback of an unknown type")
	ErrCallbackCharge    = errors.New("callback body is not a charge result")
	ErrCallbackRefund    = errors.New("callback body is not a refund result")
	ErrCallbackAgreement = errors.New("callback body is not an agreement notice")
)

// CallbackErrors are every error ParseCallback returns besides the
// dialect's own "not in the encoding" one (for the fuzz tests).
var CallbackErrors = []error{ErrCallbackMerchant, ErrCallbackSignature, ErrCallbackStale, ErrCallbackType,
	ErrCallbackCharge, ErrCallbackRefund, ErrCallbackAgreement}

// Fresh refuses a callback whose timestamp (Unix seconds) is more than
// bankadapters.CallbackWindow from now, either way. Within the window a
// repeat is harmless, as every notice is applied idempotently (a settled
// order settles the same way again, a revoked card stays revoked).
func Fresh(timestamp string, now time.Time) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrCallbackStale
	}
	if d := now.Sub(time.Unix(ts, 0)); d > bankadapters.CallbackWindow || d < -bankadapters.CallbackWindow {
		return ErrCallbackStale
	}
	return nil
}

// Notice reads a verified callback's fields as the notice its type says:
// a debit's result (type absent or debit), a refund's (its number under
// order_no, the debit under refund_of) or an agreement the cardholder
// ended. Anything else is an error.
func (a *Adapter) Notice(f map[string]string) (bankadapters.Notice, error) {
	switch f["type"] {
	case "", typeDebit:
		if f["order_no"] == "" {
			return bankadapters.Notice{}, ErrCallbackCharge
		}
		return bankadapters.Notice{Kind: bankadapters.NoticeCharge,
			Charge: a.Result(f["order_no"], 0, f["result_code"], f)}, nil
	case typeRefund:
		if f["order_no"] == "" {
			return bankadapters.Notice{}, ErrCallbackRefund
		}
		return bankadapters.Notice{Kind: bankadapters.NoticeRefund,
			Refund: a.RefundResult(f["order_no"], 0, f["result_code"], f)}, nil
	case typeAgreementTerminated:
		at, err := time.Parse(time.RFC3339, f["at"])
		if f["agreement_no"] == "" || err != nil {
			return bankadapters.Notice{}, ErrCallbackAgreement
		}
		return bankadapters.Notice{Kind: bankadapters.NoticeAgreementTerminated, AgreementNo: f["agreement_no"], At: at}, nil
	default:
		return bankadapters.Notice{}, ErrCallbackType
	}
}
