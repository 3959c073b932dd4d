package webhooks

import (
	"context"
	"fmt"

	"github.com/quickpay/quickpay/internal/ids"
)

// ListEventsWithPrefixes is ListEvents narrowed to the events whose type's
// prefix (the part before its first dot: "charge" in "charge.succeeded")
// is one of prefixes; no prefixes, no events. The narrowing happens in the
// query, so a page is full whenever enough such events follow, whatever
// other events lie between them, and has_more counts only such events.
// after must name one of the events shown.
//
// Errors: ErrNotFound when after is not one of this merchant's events that
// prefixes show.
func (s *Service) ListEventsWithPrefixes(ctx context.Context, merchantID string, prefixes []string, after string, limit int) ([]Event, bool, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	if after != "" && !ids.Valid("evt", after) {
		return nil, false, fmt.Errorf("list events after %q: %w", after, ErrNotFound)
	}
	if prefixes == nil {
		prefixes = []string{}
	}
	evs, err := listFeed(ctx, s.cfg.Pool, merchantID, feedFilter{prefixes: prefixes}, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list events: %w", err)
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}
