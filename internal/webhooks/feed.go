package webhooks

import (
	"context"
	"fmt"
	"slices"

	"github.com/quickpay/quickpay/internal/ids"
)

// Feed is one read of a merchant's events feed as a reader may see it
// (GET /v1/events): which types it may see at all, which of them it asks
// for, where it resumes and how many it takes.
type Feed struct {
	// Visible are the event types the reader may see (the API: its
	// token's scopes). The page holds events of these types only, and
	// After must name one of them. None: no events.
	Visible []string
	// Types, when any, narrow the page to these types. Each must be one of
	// EventTypes; a type outside Visible adds no event (the reader is told
	// nothing about it). Repeats count once.
	Types []string
	// After names the event to resume after ("" for the first). It need
	// not be of Types: a reader may narrow a feed from any point of it.
	After string
	// Limit bounds the page (≤ 0: DefaultListLimit; capped at
	// MaxListLimit).
	Limit int
}

// ListFeed returns merchantID's events that f shows, oldest first, and
// whether more follow. The narrowing happens in the query, so a page is
// full whenever enough such events follow, whatever other events lie
// between them, and has_more counts only such events; a read narrowed to
// some types walks only their events (index (merchant_id, type, seq)), not
// the merchant's others.
//
// Errors: a *FieldError (ErrInvalid) naming "type" when a type is not one
// of EventTypes; ErrNotFound when f.After is not one of this merchant's
// events of f.Visible.
func (s *Service) ListFeed(ctx context.Context, merchantID string, f Feed) ([]Event, bool, error) {
	for _, t := range f.Types {
		if !ValidEventType(t) {
			return nil, false, &FieldError{Field: "type", Message: "type must be a known event type"}
		}
	}
	shown := make([]string, 0, len(f.Visible)) // never nil, which could read as "all"
	for _, t := range EventTypes() {
		if slices.Contains(f.Visible, t) && (len(f.Types) == 0 || slices.Contains(f.Types, t)) {
			shown = append(shown, t)
		}
	}
	visible := append([]string{}, f.Visible...)
	return s.list(ctx, merchantID, feedFilter{visible: visible, shown: shown}, f.After, f.Limit)
}

// ListEvents returns merchantID's events oldest first, after the event
// named by after ("" for the first), at most limit of them (≤ 0: 100;
// capped at 500), and whether more follow. It shows every event, of any
// type: it is ListFeed for a reader that may see everything.
//
// Errors: ErrNotFound when after is not one of this merchant's events.
func (s *Service) ListEvents(ctx context.Context, merchantID, after string, limit int) ([]Event, bool, error) {
	return s.list(ctx, merchantID, feedFilter{all: true}, after, limit)
}

func (s *Service) list(ctx context.Context, merchantID string, f feedFilter, after string, limit int) ([]Event, bool, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	if after != "" && !ids.Valid("evt", after) {
		return nil, false, fmt.Errorf("list events after %q: %w", after, ErrNotFound)
	}
	evs, err := listFeed(ctx, s.cfg.Pool, merchantID, f, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list events: %w", err)
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}

// GetEvent returns merchantID's event id if its type is one of visible
// (GET /v1/events/{id}; see Feed.Visible).
//
// Errors: ErrNotFound when id is not an event of merchantID, or its type is
// not one of visible.
func (s *Service) GetEvent(ctx context.Context, merchantID, id string, visible []string) (Event, error) {
	if !ids.Valid("evt", id) {
		return Event{}, fmt.Errorf("get event %q: %w", id, ErrNotFound)
	}
	ev, err := getEvent(ctx, s.cfg.Pool, merchantID, id, append([]string{}, visible...))
	if err != nil {
		return Event{}, fmt.Errorf("get event %s: %w", id, err)
	}
	return ev, nil
}
