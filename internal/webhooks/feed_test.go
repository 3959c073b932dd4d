package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// bindTypes and withholdTypes split the event types as the API's scopes do.
var (
	bindTypes     = []string{webhooks.EventBindingBound, webhooks.EventBindingFailed, webhooks.EventCardUnbound}
	withholdTypes = []string{
		webhooks.EventMandateActivated, webhooks.EventMandateCancelled, webhooks.EventMandatePaused,
		webhooks.EventMandateResumed, webhooks.EventMandateCompleted, webhooks.EventChargePreDebitNotice,
		webhooks.EventChargeSucceeded, webhooks.EventChargeFailed, webhooks.EventChargeRetryScheduled,
	}
)

// feedWorld is a merchant whose events interleave both scopes' types, and
// another merchant's events among them.
type feedWorld struct {
	e            *env
	m, other     string
	all          []webhooks.Event // m's, in order
	otherEvents  []webhooks.Event
	bound, chgOK []string // ids of m's binding.bound and charge.succeeded events
}

func newFeedWorld(t *testing.T) *feedWorld {
	t.Helper()
	w := &feedWorld{e: newEnv(t, false, nil)}
	w.m, w.other = newMerchant(t, w.e.pool), newMerchant(t, w.e.pool)
	emit := func(typ string, n int) {
		for range n {
			ev := w.e.emit(t, w.m, typ, map[string]int{"n": len(w.all)})
			w.all = append(w.all, ev)
			switch typ {
			case webhooks.EventBindingBound:
				w.bound = append(w.bound, ev.ID)
			case webhooks.EventChargeSucceeded:
				w.chgOK = append(w.chgOK, ev.ID)
			}
			w.otherEvents = append(w.otherEvents, w.e.emit(t, w.other, typ, map[string]int{"n": -1}))
		}
	}
	emit(webhooks.EventBindingBound, 2)
	emit(webhooks.EventChargeSucceeded, 4)
	emit(webhooks.EventChargeFailed, 1)
	emit(webhooks.EventBindingBound, 1)
	emit(webhooks.EventCardUnbound, 1)
	emit(webhooks.EventChargeSucceeded, 2)
	emit(webhooks.EventBindingBound, 1)
	return w
}

// of returns the ids of m's events whose type is one of types, in order.
func (w *feedWorld) of(types ...string) []string {
	var out []string
	for _, ev := range w.all {
		if slices.Contains(types, ev.Type) {
			out = append(out, ev.ID)
		}
	}
	return out
}

// walk pages through m's feed f, limit at a time, checking that every page
// with more to follow is full, and returns the ids seen.
func (w *feedWorld) walk(t *testing.T, f webhooks.Feed) []string {
	t.Helper()
	var seen []string
	for range 50 {
		evs, more, err := w.e.svc.ListFeed(context.Background(), w.m, f)
		if err != nil {
			t.Fatalf("ListFeed after %q: %v", f.After, err)
		}
		seen = append(seen, eventIDs(evs)...)
		if more && len(evs) != f.Limit {
			t.Errorf("a page of %d with more holds %d events", f.Limit, len(evs))
		}
		if !more {
			return seen
		}
		f.After = evs[len(evs)-1].ID
	}
	t.Fatal("the feed did not end")
	return nil
}

func TestListFeed(t *testing.T) {
	t.Parallel()
	w := newFeedWorld(t)
	everything := webhooks.EventTypes()
	for _, tc := range []struct {
		name           string
		visible, types []string
		limit          int
		want           []string
	}{
		{"every type visible, none asked", everything, nil, 3, w.of(everything...)},
		{"one scope's types visible", bindTypes, nil, 2, w.of(bindTypes...)},
		{"the other scope's", withholdTypes, nil, 2, w.of(withholdTypes...)},
		{"one type", everything, []string{webhooks.EventChargeSucceeded}, 2, w.chgOK},
		{"one type, page of one", everything, []string{webhooks.EventBindingBound}, 1, w.bound},
		{"two types", everything, []string{webhooks.EventBindingBound, webhooks.EventChargeFailed}, 2,
			w.of(webhooks.EventBindingBound, webhooks.EventChargeFailed)},
		{"a type repeated counts once", everything,
			[]string{webhooks.EventCardUnbound, webhooks.EventCardUnbound}, 1, w.of(webhooks.EventCardUnbound)},
		{"a type within the visible ones", bindTypes, []string{webhooks.EventCardUnbound}, 3,
			w.of(webhooks.EventCardUnbound)},
		{"a type outside the visible ones shows nothing", bindTypes, []string{webhooks.EventChargeSucceeded}, 3, nil},
		{"of two types, only the visible one", bindTypes,
			[]string{webhooks.EventChargeSucceeded, webhooks.EventBindingBound}, 2, w.bound},
		{"a known type the merchant has none of", everything, []string{webhooks.EventMandatePaused}, 2, nil},
		{"nothing visible", nil, nil, 5, nil},
		{"nothing visible, a type asked", []string{}, []string{webhooks.EventBindingBound}, 5, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := w.walk(t, webhooks.Feed{Visible: tc.visible, Types: tc.types, Limit: tc.limit})
			if !slices.Equal(got, tc.want) {
				t.Errorf("walked %v, want %v", got, tc.want)
			}
		})
	}
	if len(w.bound) != 4 || len(w.chgOK) != 6 {
		t.Fatalf("the world holds %d binding.bound and %d charge.succeeded, want 4 and 6", len(w.bound), len(w.chgOK))
	}

	ctx := context.Background()
	t.Run("a page holds the event itself", func(t *testing.T) {
		evs, more, err := w.e.svc.ListFeed(ctx, w.m, webhooks.Feed{Visible: everything,
			Types: []string{webhooks.EventCardUnbound}})
		i := slices.IndexFunc(w.all, func(ev webhooks.Event) bool { return ev.Type == webhooks.EventCardUnbound })
		want := w.all[i]
		if err != nil || more || len(evs) != 1 || evs[0].ID != want.ID || evs[0].MerchantID != w.m ||
			evs[0].Type != want.Type || string(evs[0].Data) != fmt.Sprintf(`{"n": %d}`, i) ||
			!evs[0].CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("page = %+v more=%v (%v), want exactly %+v", evs, more, err, want)
		}
	})
	t.Run("after any visible event, even of another type", func(t *testing.T) {
		// The second charge.succeeded's position, read for binding.bound.
		after := w.chgOK[1]
		evs, more, err := w.e.svc.ListFeed(ctx, w.m, webhooks.Feed{Visible: everything,
			Types: []string{webhooks.EventBindingBound}, After: after})
		if got := eventIDs(evs); err != nil || more || !slices.Equal(got, w.bound[2:]) {
			t.Errorf("after %s: %v more=%v (%v), want %v", after, got, more, err, w.bound[2:])
		}
	})
	t.Run("has_more counts only the types asked for", func(t *testing.T) {
		// The last binding.bound is the merchant's last event; the last
		// charge.succeeded is followed only by it.
		evs, more, err := w.e.svc.ListFeed(ctx, w.m, webhooks.Feed{Visible: everything,
			Types: []string{webhooks.EventChargeSucceeded}, After: w.chgOK[3], Limit: 2})
		if got := eventIDs(evs); err != nil || more || !slices.Equal(got, w.chgOK[4:]) {
			t.Errorf("last page = %v more=%v (%v), want %v and no more", got, more, err, w.chgOK[4:])
		}
	})
	t.Run("unknown types are refused, naming type", func(t *testing.T) {
		for _, types := range [][]string{
			{"charge.refunded"}, {""}, {webhooks.EventChargeSucceeded, "charge.succeeded "}, {"CHARGE.SUCCEEDED"},
		} {
			_, _, err := w.e.svc.ListFeed(ctx, w.m, webhooks.Feed{Visible: everything, Types: types})
			var fe *webhooks.FieldError
			if !errors.As(err, &fe) || fe.Field != "type" || !errors.Is(err, webhooks.ErrInvalid) {
				t.Errorf("types %q: %v, want a FieldError naming type", types, err)
			}
		}
	})
	t.Run("after must be a visible event of the merchant", func(t *testing.T) {
		for name, f := range map[string]webhooks.Feed{
			"an event of a type not visible": {Visible: withholdTypes, After: w.bound[0]},
			"not visible, though of the types asked": {Visible: withholdTypes,
				Types: []string{webhooks.EventBindingBound}, After: w.bound[0]},
			"another merchant's event": {Visible: everything, After: w.otherEvents[0].ID},
			"an unknown event id":      {Visible: everything, After: ids.New("evt")},
			"not an event id":          {Visible: everything, After: "chg_whatever"},
		} {
			if evs, _, err := w.e.svc.ListFeed(ctx, w.m, f); !errors.Is(err, webhooks.ErrNotFound) {
				t.Errorf("%s: %v (%v), want ErrNotFound", name, eventIDs(evs), err)
			}
		}
	})
	t.Run("the other merchant sees only its own", func(t *testing.T) {
		evs, _, err := w.e.svc.ListFeed(ctx, w.other, webhooks.Feed{Visible: everything,
			Types: []string{webhooks.EventBindingBound}, Limit: webhooks.MaxListLimit})
		var want []string
		for _, ev := range w.otherEvents {
			if ev.Type == webhooks.EventBindingBound {
				want = append(want, ev.ID)
			}
		}
		if got := eventIDs(evs); err != nil || !slices.Equal(got, want) {
			t.Errorf("other merchant's binding.bound = %v (%v), want %v", got, err, want)
		}
	})
}

// TestListFeedLimits: a typed page defaults to DefaultListLimit and is
// capped at MaxListLimit, as the whole feed is.
func TestListFeedLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil)
	m := newMerchant(t, e.pool)
	emitMany(t, e, m, webhooks.EventChargeSucceeded, webhooks.MaxListLimit+1)
	e.emit(t, m, webhooks.EventCardUnbound, map[string]int{})
	for limit, want := range map[int]int{0: webhooks.DefaultListLimit, 10_000: webhooks.MaxListLimit, 7: 7} {
		evs, more, err := e.svc.ListFeed(context.Background(), m, webhooks.Feed{Visible: webhooks.EventTypes(),
			Types: []string{webhooks.EventChargeSucceeded, webhooks.EventChargeFailed}, Limit: limit})
		if err != nil || len(evs) != want || !more {
			t.Errorf("limit %d: %d events, more=%v (%v), want %d and more", limit, len(evs), more, err, want)
		}
	}
}

func TestGetEvent(t *testing.T) {
	t.Parallel()
	w := newFeedWorld(t)
	ctx := context.Background()
	want := w.all[2]
	got, err := w.e.svc.GetEvent(ctx, w.m, want.ID, withholdTypes)
	if err != nil || got.ID != want.ID || got.MerchantID != w.m || got.Type != want.Type ||
		string(got.Data) != `{"n": 2}` || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("GetEvent = %+v (%v), want %+v", got, err, want)
	}
	for name, tc := range map[string]struct {
		id      string
		visible []string
	}{
		"another merchant's event":  {w.otherEvents[2].ID, webhooks.EventTypes()},
		"an event of a type hidden": {w.bound[0], withholdTypes},
		"nothing visible":           {want.ID, nil},
		"an unknown event id":       {ids.New("evt"), webhooks.EventTypes()},
		"not an event id":           {"chg_whatever", webhooks.EventTypes()},
		"empty":                     {"", webhooks.EventTypes()},
	} {
		if ev, err := w.e.svc.GetEvent(ctx, w.m, tc.id, tc.visible); !errors.Is(err, webhooks.ErrNotFound) {
			t.Errorf("%s: %+v (%v), want ErrNotFound", name, ev, err)
		}
	}
}

// emitMany emits n events of typ for merchant in one transaction.
func emitMany(t *testing.T, e *env, merchant, typ string, n int) {
	t.Helper()
	ctx := context.Background()
	err := db.InTx(ctx, e.pool, func(tx pgx.Tx) error {
		for i := range n {
			if _, err := e.svc.Emit(ctx, tx, merchant, typ, map[string]int{"i": i}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
