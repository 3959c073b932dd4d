package mandate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// Refunds (DESIGN.md "Refunds") return money from a succeeded charge to
// the card it came from: partial, several per charge, never more in all
// than the charge (the database keeps that sum). Each has its own bank
// refund number, written before the bank is called; an answer lost or
// still processing leaves the refund pending, settled by querying that
// number, never by a second refund; the bank's statement settles the rest.
//
// This file creates, reads and lists refunds and takes a bank's callback;
// refund_workers.go sends them and settles the answers.

// RefundStatus is a refund's state: pending → succeeded | failed.
type RefundStatus string

// Refund statuses (the refunds table's CHECK, migration 024).
const (
	RefundPending   RefundStatus = "pending"
	RefundSucceeded RefundStatus = "succeeded"
	RefundFailed    RefundStatus = "failed"
)

// refundStatuses is the closed set of RefundStatus.
var refundStatuses = []RefundStatus{RefundPending, RefundSucceeded, RefundFailed}

// RefundWindow is how old a charge can be and still be refunded: the
// banks' 180 days.
const RefundWindow = 180 * 24 * time.Hour

// MaxRefundReasonLength is the most characters a refund's reason has.
const MaxRefundReasonLength = 200

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
	FinishedAt    time.Time // zero while pending; the bank's finish time when it gave one
	// BankCode and RefundNo name the refund at its bank (operators,
	// settlement files).
	BankCode string
	RefundNo string
}

// RefundInput is what a merchant asks to refund.
type RefundInput struct {
	Amount int64  // fen, > 0
	Reason string // optional, at most 200 characters
}

func (in RefundInput) check() error {
	if in.Amount <= 0 {
		return &FieldError{Field: "amount", Message: "must be positive fen"}
	}
	return checkText("reason", in.Reason, 0, MaxRefundReasonLength)
}

// RefundFilter narrows the refund list; a zero field does not narrow.
type RefundFilter struct {
	Status   RefundStatus
	ChargeID string
	// CreatedGTE and CreatedLT bound created_at: [CreatedGTE, CreatedLT).
	CreatedGTE, CreatedLT time.Time
}

func (f RefundFilter) check() error {
	if f.Status != "" && !slices.Contains(refundStatuses, f.Status) {
		return &FieldError{Field: "status", Message: "must be a refund status"}
	}
	return checkID("charge_id", "chg", f.ChargeID)
}

// newRefundNo is a bank refund number: "QR" and 24 base32 characters,
// never equal to an order number ("QP…"), with which it shares the bank's
// namespace.
func newRefundNo() string { return "QR" + strings.ToUpper(strings.TrimPrefix(ids.New("o"), "o_")) }

// CreateRefund refunds part or all of a succeeded charge of the merchant.
// The refund is pending when it returns; a worker sends it to the bank.
// In one transaction it raises the charge's held refund sum (the
// database refuses a sum above the charge's amount, however many refunds
// race), writes the refund with its new refund number and the River job
// that will send it (refundJob), and audits it.
//
// Errors: ErrNotFound, *FieldError, ErrChargeNotRefundable,
// ErrRefundExceedsCharge.
func (s *Service) CreateRefund(ctx context.Context, merchantID, chargeID string, in RefundInput) (Refund, error) {
	if err := in.check(); err != nil {
		return Refund{}, err
	}
	if !ids.Valid("chg", chargeID) {
		return Refund{}, ErrNotFound
	}
	now := s.now()
	var r refundRow
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockRefundedDebit(ctx, tx, chargeID); err != nil {
			return err
		}
		src, err := refundableCharge(ctx, tx, merchantID, chargeID)
		if err != nil {
			return err
		}
		if src.status != ChargeSucceeded || src.orderNo == "" || now.Sub(src.debitedAt) > RefundWindow {
			return ErrChargeNotRefundable
		}
		if err := holdRefundAmount(ctx, tx, chargeID, in.Amount); err != nil {
			return err
		}
		r = refundRow{Refund: Refund{ID: ids.New("rfd"), MerchantID: merchantID, ChargeID: chargeID,
			MandateID: src.mandateID, Amount: in.Amount, Currency: src.currency, Reason: in.Reason,
			Status: RefundPending, CreatedAt: now, BankCode: src.bankCode, RefundNo: newRefundNo()},
			CardID: src.cardID, OrderNo: src.orderNo}
		if r.JobID, err = s.refundJob(ctx, tx, r, now); err != nil {
			return err
		}
		if err := insertRefund(ctx, tx, r); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, merchantID, "refund.create", r.ID, audit.OutcomeOK, map[string]any{
			"charge": chargeID, "amount": in.Amount, "refund_no": r.RefundNo, "bank": r.BankCode})
	})
	if err != nil {
		return Refund{}, fmt.Errorf("refund charge %s: %w", chargeID, err)
	}
	return r.Refund, nil
}

// refundJob returns the River job that will send r: the job of an open
// batch at r's bank with room (Config.RefundBatch), or a new job, whose
// batch r opens, enqueued in tx.
func (s *Service) refundJob(ctx context.Context, tx pgx.Tx, r refundRow, now time.Time) (int64, error) {
	job, ok, err := joinRefundJob(ctx, tx, r.BankCode, s.cfg.RefundBatch)
	if err != nil || ok {
		return job, err
	}
	res, err := s.cfg.Jobs.InsertTx(ctx, tx, RefundArgs{IDs: []string{r.ID}}, &river.InsertOpts{Queue: s.cfg.Queue})
	if err != nil {
		return 0, err
	}
	return res.Job.ID, openRefundJob(ctx, tx, res.Job.ID, r.BankCode, now)
}

// GetRefund returns one refund of the merchant. Errors: ErrNotFound.
func (s *Service) GetRefund(ctx context.Context, merchantID, id string) (Refund, error) {
	if !ids.Valid("rfd", id) {
		return Refund{}, ErrNotFound
	}
	r, err := getRefund(ctx, s.pool, merchantID, id)
	if err != nil {
		return Refund{}, fmt.Errorf("get refund %s: %w", id, err)
	}
	return r.Refund, nil
}

// Refunds lists the merchant's refunds, newest first. Errors: *FieldError
// (limit, status, charge_id), ErrNotFound (a cursor that names no refund
// of the merchant).
func (s *Service) Refunds(ctx context.Context, merchantID string, f RefundFilter, p Page) ([]Refund, bool, error) {
	after, err := s.start(ctx, merchantID, "rfd", &p, f)
	if err != nil {
		return nil, false, err
	}
	rs, err := listRefundPage(ctx, s.pool, merchantID, f, after, p.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list refunds: %w", err)
	}
	rs, more := page(rs, p.Limit)
	return rs, more, nil
}

// ChargeRefunds lists one charge's refunds, newest first. Errors:
// ErrNotFound (the charge is not the merchant's, or a cursor that names
// no refund of the merchant), *FieldError (limit).
func (s *Service) ChargeRefunds(ctx context.Context, merchantID, chargeID string, p Page) ([]Refund, bool, error) {
	if !ids.Valid("chg", chargeID) {
		return nil, false, ErrNotFound
	}
	if _, err := getChargeRow(ctx, s.pool, merchantID, chargeID); err != nil {
		return nil, false, fmt.Errorf("refunds of charge %s: %w", chargeID, err)
	}
	return s.Refunds(ctx, merchantID, RefundFilter{ChargeID: chargeID}, p)
}

// ApplyRefundResult settles a pending refund from a bank's answer that
// arrived on its own (an async bank's callback): idempotent, and in any
// order relative to queries and the statement. Errors: ErrNotFound (no
// refund of that number at that bank).
func (s *Service) ApplyRefundResult(ctx context.Context, bankCode string, r bankadapters.RefundResult) error {
	rf, err := getBankRefund(ctx, s.pool, bankCode, r.RefundNo)
	if err != nil {
		return fmt.Errorf("refund %s at %s: %w", r.RefundNo, bankCode, err)
	}
	return s.settleRefunds(ctx, []*refunding{{row: rf, r: r, source: "callback"}})
}

// RefundEvent is the data of a refund.* event: the refund as the API
// shows it (api/openapi.yaml, Event.data).
type RefundEvent struct {
	ID            string       `json:"id"`
	ChargeID      string       `json:"charge_id"`
	MandateID     string       `json:"mandate_id"`
	Amount        int64        `json:"amount"`
	Currency      string       `json:"currency"`
	Reason        *string      `json:"reason"`
	Status        RefundStatus `json:"status"`
	FailureCode   *string      `json:"failure_code"`
	BankReference *string      `json:"bank_reference"`
	CreatedAt     time.Time    `json:"created_at"`
	FinishedAt    *time.Time   `json:"finished_at"`
}

func refundEvent(r Refund) RefundEvent {
	e := RefundEvent{ID: r.ID, ChargeID: r.ChargeID, MandateID: r.MandateID, Amount: r.Amount, Currency: r.Currency,
		Reason: nullable(r.Reason), Status: r.Status, FailureCode: nullable(r.FailureCode),
		BankReference: nullable(r.BankReference), CreatedAt: r.CreatedAt.UTC()}
	if !r.FinishedAt.IsZero() {
		f := r.FinishedAt.UTC()
		e.FinishedAt = &f
	}
	return e
}
