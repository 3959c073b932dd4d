package client

import (
	"context"
	"fmt"
	"iter"
)

// The iterators below walk a whole list page by page, asking for the next
// page only when the loop reaches it. The params' filters and limit (the
// page size) apply to every page; their cursor (StartingAfter, or After for
// events) is where the walk starts. An error ends the walk as the last pair.

// Charges iterates GET /v1/charges, newest first.
func (c *Client) Charges(ctx context.Context, p ListChargesParams) iter.Seq2[Charge, error] {
	return pages(func(after *string) ([]Charge, bool, error) {
		p.StartingAfter = after
		r, err := c.ListChargesWithResponse(ctx, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Charge) string { return v.Id }, p.StartingAfter)
}

// MandateCharges iterates GET /v1/mandates/{id}/charges, newest first.
func (c *Client) MandateCharges(ctx context.Context, mandateID string, p ListMandateChargesParams) iter.Seq2[Charge, error] {
	return pages(func(after *string) ([]Charge, bool, error) {
		p.StartingAfter = after
		r, err := c.ListMandateChargesWithResponse(ctx, mandateID, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Charge) string { return v.Id }, p.StartingAfter)
}

// Mandates iterates GET /v1/mandates, newest first.
func (c *Client) Mandates(ctx context.Context, p ListMandatesParams) iter.Seq2[Mandate, error] {
	return pages(func(after *string) ([]Mandate, bool, error) {
		p.StartingAfter = after
		r, err := c.ListMandatesWithResponse(ctx, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Mandate) string { return v.Id }, p.StartingAfter)
}

// Refunds iterates GET /v1/refunds, newest first.
func (c *Client) Refunds(ctx context.Context, p ListRefundsParams) iter.Seq2[Refund, error] {
	return pages(func(after *string) ([]Refund, bool, error) {
		p.StartingAfter = after
		r, err := c.ListRefundsWithResponse(ctx, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Refund) string { return v.Id }, p.StartingAfter)
}

// ChargeRefunds iterates GET /v1/charges/{id}/refunds, newest first.
func (c *Client) ChargeRefunds(ctx context.Context, chargeID string, p ListChargeRefundsParams) iter.Seq2[Refund, error] {
	return pages(func(after *string) ([]Refund, bool, error) {
		p.StartingAfter = after
		r, err := c.ListChargeRefundsWithResponse(ctx, chargeID, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Refund) string { return v.Id }, p.StartingAfter)
}

// Events iterates the event feed GET /v1/events, oldest first, from
// p.After (the beginning when nil) to the newest event.
func (c *Client) Events(ctx context.Context, p ListEventsParams) iter.Seq2[Event, error] {
	return pages(func(after *string) ([]Event, bool, error) {
		p.After = after
		r, err := c.ListEventsWithResponse(ctx, &p)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, r.JSON200.HasMore, nil
	}, func(v Event) string { return v.Id }, p.After)
}

// MemberCards iterates GET /v1/members/{id}/cards (one page: a member's
// cards are few).
func (c *Client) MemberCards(ctx context.Context, memberID string) iter.Seq2[Card, error] {
	return pages(func(*string) ([]Card, bool, error) {
		r, err := c.ListMemberCardsWithResponse(ctx, memberID)
		if err != nil {
			return nil, false, err
		}
		if r.JSON200 == nil {
			return nil, false, noList(r.StatusCode())
		}
		return r.JSON200.Data, false, nil
	}, func(v Card) string { return v.Id }, nil)
}

// noList is the error of a 2xx answer that holds no list.
func noList(status int) error {
	return fmt.Errorf("client: answer %d without a list", status)
}

// pages walks a list from cursor start: fetch(after) answers the page after
// the cursor, and id names a row's cursor.
func pages[T any](fetch func(after *string) ([]T, bool, error), id func(T) string, start *string) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		after := start
		for {
			rows, more, err := fetch(after)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, row := range rows {
				if !yield(row, nil) {
					return
				}
			}
			if !more || len(rows) == 0 {
				return
			}
			last := id(rows[len(rows)-1])
			after = &last
		}
	}
}
