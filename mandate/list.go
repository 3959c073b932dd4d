package mandate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/quickpay/quickpay/internal/ids"
)

// Lists (DESIGN.md "Lists"): resource lists are newest first, ordered by
// (created_at, id), and a page goes on after the row its StartingAfter
// names: keyset pagination, so a cursor is stable while rows are added
// (new rows sort before it) and a deep page costs what the first does.

// Page sizes of the lists.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
)

// Page asks for one page of a list.
type Page struct {
	// Limit is the page's size, 1 to MaxListLimit. Defaults (0) to
	// DefaultListLimit.
	Limit int
	// StartingAfter is the id of the last row of the previous page; ""
	// for the first page.
	StartingAfter string
}

// ChargeFilter narrows the charge list; a zero field does not narrow.
type ChargeFilter struct {
	Status    ChargeStatus
	MandateID string
	MemberID  string // the member of the charge's mandate
	CardID    string
	// CreatedGTE and CreatedLT bound created_at: [CreatedGTE, CreatedLT).
	CreatedGTE, CreatedLT time.Time
}

// MandateFilter narrows the mandate list; a zero field does not narrow.
type MandateFilter struct {
	// Status is the status the API shows (a pending mandate whose consent
	// code ran out shows, and filters, as expired).
	Status   MandateStatus
	CardID   string
	MemberID string
}

// chargeStatuses is the closed set of ChargeStatus (the charges table's
// CHECK, migration 015).
var chargeStatuses = []ChargeStatus{ChargeScheduled, ChargeProcessing, ChargeSucceeded, ChargeFailed,
	ChargeUnknown, ChargeRetryScheduled, ChargeHeld}

// mandateStatuses is the closed set of MandateStatus (migration 005).
var mandateStatuses = []MandateStatus{StatusPendingConfirmation, StatusActive, StatusPaused, StatusCancelled,
	StatusExpired, StatusCompleted}

// check refuses a limit out of range and fills in the default.
func (p *Page) check() error {
	if p.Limit == 0 {
		p.Limit = DefaultListLimit
	}
	if p.Limit < 1 || p.Limit > MaxListLimit {
		return &FieldError{Field: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d", MaxListLimit)}
	}
	return nil
}

// checkID refuses a filter id that is not shaped like one of prefix's. An
// id of the right shape that names nothing lists nothing.
func checkID(field, prefix, id string) error {
	if id != "" && !ids.Valid(prefix, id) {
		return &FieldError{Field: field, Message: "must be a " + prefix + "_ id"}
	}
	return nil
}

func (f ChargeFilter) check() error {
	if f.Status != "" && !slices.Contains(chargeStatuses, f.Status) {
		return &FieldError{Field: "status", Message: "must be a charge status"}
	}
	for _, c := range []struct{ field, prefix, id string }{
		{"mandate_id", "mdt", f.MandateID}, {"member_id", "mem", f.MemberID}, {"card_id", "card", f.CardID},
	} {
		if err := checkID(c.field, c.prefix, c.id); err != nil {
			return err
		}
	}
	return nil
}

func (f MandateFilter) check() error {
	if f.Status != "" && !slices.Contains(mandateStatuses, f.Status) {
		return &FieldError{Field: "status", Message: "must be a mandate status"}
	}
	if err := checkID("card_id", "card", f.CardID); err != nil {
		return err
	}
	return checkID("member_id", "mem", f.MemberID)
}

// page cuts rows read with one more than the limit to the page, and says
// whether more follow.
func page[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}

// Charges returns a page of the merchant's charges, newest first, each
// with its attempts, and whether more follow.
//
// Errors: *FieldError (limit, status, mandate_id, member_id, card_id);
// ErrNotFound when p.StartingAfter is not one of the merchant's charges.
func (s *Service) Charges(ctx context.Context, merchantID string, f ChargeFilter, p Page) ([]Charge, bool, error) {
	after, err := s.start(ctx, merchantID, "chg", &p, f)
	if err != nil {
		return nil, false, err
	}
	cs, err := listChargePage(ctx, s.pool, merchantID, f, after, p.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list charges: %w", err)
	}
	cs, more := page(cs, p.Limit)
	return cs, more, nil
}

// MandateCharges is Charges of one mandate.
//
// Errors: ErrNotFound when the mandate is not the merchant's or
// p.StartingAfter is not one of the merchant's charges; *FieldError
// (limit).
func (s *Service) MandateCharges(ctx context.Context, merchantID, mandateID string, p Page) ([]Charge, bool, error) {
	if _, err := s.Get(ctx, merchantID, mandateID); err != nil {
		return nil, false, err
	}
	return s.Charges(ctx, merchantID, ChargeFilter{MandateID: mandateID}, p)
}

// List returns a page of the merchant's mandates, newest first, and
// whether more follow.
//
// Errors: *FieldError (limit, status, card_id, member_id); ErrNotFound
// when p.StartingAfter is not one of the merchant's mandates.
func (s *Service) List(ctx context.Context, merchantID string, f MandateFilter, p Page) ([]Mandate, bool, error) {
	after, err := s.start(ctx, merchantID, "mdt", &p, f)
	if err != nil {
		return nil, false, err
	}
	ms, err := listMandatePage(ctx, s.pool, merchantID, f, s.now(), after, p.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list mandates: %w", err)
	}
	for i := range ms {
		ms[i] = s.view(ms[i])
	}
	ms, more := page(ms, p.Limit)
	return ms, more, nil
}

// start checks a list's page and filter and returns the position of the
// row the page starts after.
func (s *Service) start(ctx context.Context, merchantID, prefix string, p *Page, f interface{ check() error }) (cursor, error) {
	if err := p.check(); err != nil {
		return cursor{}, err
	}
	if err := f.check(); err != nil {
		return cursor{}, err
	}
	return s.cursor(ctx, merchantID, prefix, p.StartingAfter)
}

// cursor is the position of the row a page starts after: a charge
// (prefix "chg"), mandate ("mdt") or refund ("rfd") of the merchant; none
// for "".
func (s *Service) cursor(ctx context.Context, merchantID, prefix, id string) (cursor, error) {
	if id == "" {
		return cursor{}, nil
	}
	if !ids.Valid(prefix, id) {
		return cursor{}, fmt.Errorf("list after %q: %w", id, ErrNotFound)
	}
	c, err := rowCursor(ctx, s.pool, prefix, merchantID, id)
	if err != nil {
		return cursor{}, fmt.Errorf("list after %q: %w", id, err)
	}
	return c, nil
}
