package mandate

import (
	"context"
	"errors"
	"time"

	"github.com/quickpay/quickpay/bankadapters"
)

// Refunds (DESIGN.md "Refunds") return money from a succeeded charge to
// the card it came from: partial, several per charge, never more in all
// than the charge (the database keeps that sum). Each has its own bank
// refund number, written before the bank is called; an answer lost or
// still processing leaves the refund pending, settled by querying that
// number, never by a second refund; the bank's statement settles the rest.

// RefundStatus is a refund's state: pending → succeeded | failed.
type RefundStatus string

// Refund statuses (the refunds table's CHECK, migration 024).
const (
	RefundPending   RefundStatus = "pending"
	RefundSucceeded RefundStatus = "succeeded"
	RefundFailed    RefundStatus = "failed"
)

// RefundWindow is how old a charge can be and still be refunded: the
// banks' 180 days.
const RefundWindow = 180 * 24 * time.Hour

// Refund errors.
var (
	// ErrChargeNotRefundable: the charge is not succeeded, or older than
	// RefundWindow.
	ErrChargeNotRefundable = errors.New("charge not refundable")
	// ErrRefundExceedsCharge: the amount plus the charge's refunds not
	// failed is more than the charge's amount.
	ErrRefundExceedsCharge = errors.New("refund exceeds charge")
)

// Refund is one return of money from a charge.
type Refund struct {
	ID            string
	MerchantID    string
	ChargeID      string
	MandateID     string
	Amount        int64
	Currency      string
	Reason        string
	Status        RefundStatus
	FailureCode   string // a bankadapters Reason, for a failed refund
	BankReference string // the bank's transaction number
	CreatedAt     time.Time
	FinishedAt    time.Time // zero while pending
}

// RefundInput is what a merchant asks to refund.
type RefundInput struct {
	Amount int64  // fen, > 0
	Reason string // optional, at most 200 characters
}

// RefundFilter narrows the refund list; a zero field does not narrow.
type RefundFilter struct {
	Status   RefundStatus
	ChargeID string
	// CreatedGTE and CreatedLT bound created_at: [CreatedGTE, CreatedLT).
	CreatedGTE, CreatedLT time.Time
}

// CreateRefund refunds part or all of a succeeded charge of the merchant.
// The refund is pending when it returns; a worker sends it to the bank.
// Errors: ErrNotFound, *FieldError, ErrChargeNotRefundable,
// ErrRefundExceedsCharge.
func (s *Service) CreateRefund(ctx context.Context, merchantID, chargeID string, in RefundInput) (Refund, error) {
	return Refund{}, errors.New("create refund: not implemented")
}

// GetRefund returns one refund of the merchant. Errors: ErrNotFound.
func (s *Service) GetRefund(ctx context.Context, merchantID, id string) (Refund, error) {
	return Refund{}, errors.New("get refund: not implemented")
}

// Refunds lists the merchant's refunds, newest first. Errors: *FieldError,
// ErrNotFound (a cursor that names no refund of the merchant).
func (s *Service) Refunds(ctx context.Context, merchantID string, f RefundFilter, p Page) ([]Refund, bool, error) {
	return nil, false, errors.New("refunds: not implemented")
}

// ChargeRefunds lists one charge's refunds, newest first. Errors:
// ErrNotFound (the charge is not the merchant's), *FieldError.
func (s *Service) ChargeRefunds(ctx context.Context, merchantID, chargeID string, p Page) ([]Refund, bool, error) {
	return nil, false, errors.New("charge refunds: not implemented")
}

// ApplyRefundResult settles a pending refund from a bank's answer that
// arrived on its own (an async bank's callback). Idempotent. Errors:
// ErrNotFound (no refund of that number at that bank).
func (s *Service) ApplyRefundResult(ctx context.Context, bankCode string, r bankadapters.RefundResult) error {
	return errors.New("apply refund result: not implemented")
}
