package webhooks_test

import (
	"context"
	"errors"
	"testing"

	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// TestRedeliver: an operator's redelivery of an event is a second delivery
// job of the event, to the endpoint as it is now, recorded as the first
// was; other merchants' events and merchants without an endpoint are
// refused.
func TestRedeliver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, true, nil)
	const operator = "operator:op_redeliver"
	audited := func(t *testing.T, eventID string) []string {
		t.Helper()
		return testenv.Strings(t, e.pool, `SELECT actor FROM audit_log WHERE action = 'webhook.redeliver' AND subject = $1 ORDER BY id`, eventID)
	}
	completed := func(eventID string, n int) func() bool {
		return func() bool {
			js := jobs(t, e.pool, eventID)
			done := 0
			for _, j := range js {
				if j.State == rivertype.JobStateCompleted {
					done++
				}
			}
			return len(js) == n && done == n
		}
	}

	t.Run("a delivered event is delivered again to the endpoint as it is now", func(t *testing.T) {
		m := newMerchant(t, e.pool)
		first := newReceiver(t, always(200))
		e.setEndpoint(t, m, first.url, nil)
		ev := e.emit(t, m, webhooks.EventChargeSucceeded, map[string]any{"charge_id": "chg_1"})
		eventually(t, "the first delivery", completed(ev.ID, 1))

		// The merchant moved its endpoint since; the second delivery
		// fails once, then is answered: both attempts are recorded.
		now := newReceiver(t, func(n int) int {
			if n == 1 {
				return 503
			}
			return 200
		})
		secret := e.setEndpoint(t, m, now.url, []string{webhooks.EventChargeSucceeded})
		if err := e.svc.Redeliver(ctx, m, ev.ID, operator); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the redelivery", completed(ev.ID, 2))

		if n := len(first.requests()); n != 1 {
			t.Errorf("the old endpoint got %d requests, want 1", n)
		}
		got := now.requests()
		if len(got) != 2 {
			t.Fatalf("the endpoint got %d requests, want 2 (a 503, then a 200)", len(got))
		}
		for _, r := range got {
			if id := bodyID(r.body); id != ev.ID {
				t.Errorf("redelivered body names %q, want %s", id, ev.ID)
			}
			independentVerify(t, secret, r.header.Get(webhooks.SignatureHeader), r.body)
		}
		ds := deliveries(t, e.pool, ev.ID)
		if len(ds) != 3 || ds[0].URL != first.url || *ds[0].StatusCode != 200 ||
			ds[1].URL != now.url || ds[1].StatusCode == nil || *ds[1].StatusCode != 503 ||
			ds[2].URL != now.url || ds[2].StatusCode == nil || *ds[2].StatusCode != 200 {
			t.Errorf("deliveries = %+v, want 200 at the old URL, then 503 and 200 at the new", ds)
		}
		if a := audited(t, ev.ID); len(a) != 1 || a[0] != operator {
			t.Errorf("audit actors = %q, want [%s]", a, operator)
		}
	})

	t.Run("another merchant's event is not found", func(t *testing.T) {
		m, other := newMerchant(t, e.pool), newMerchant(t, e.pool)
		e.setEndpoint(t, m, newReceiver(t, always(200)).url, nil)
		e.setEndpoint(t, other, newReceiver(t, always(200)).url, nil)
		ev := e.emit(t, m, webhooks.EventChargeFailed, map[string]any{"charge_id": "chg_2"})
		eventually(t, "the first delivery", completed(ev.ID, 1))
		for _, id := range []string{ev.ID, "evt_nosuchevent", "not-an-id"} {
			if err := e.svc.Redeliver(ctx, other, id, operator); !errors.Is(err, webhooks.ErrNotFound) {
				t.Errorf("Redeliver(%s) = %v, want ErrNotFound", id, err)
			}
		}
		if js := jobs(t, e.pool, ev.ID); len(js) != 1 {
			t.Errorf("%d delivery jobs, want the first only", len(js))
		}
		if a := audited(t, ev.ID); len(a) != 0 {
			t.Errorf("audit actors = %q, want none", a)
		}
	})

	t.Run("no endpoint that takes the event", func(t *testing.T) {
		m := newMerchant(t, e.pool)
		ev := e.emit(t, m, webhooks.EventCardUnbound, map[string]any{"card_id": "card_1"})
		if err := e.svc.Redeliver(ctx, m, ev.ID, operator); !errors.Is(err, webhooks.ErrNoEndpoint) {
			t.Errorf("no endpoint: err = %v, want ErrNoEndpoint", err)
		}
		e.setEndpoint(t, m, newReceiver(t, always(200)).url, []string{webhooks.EventChargeSucceeded})
		if err := e.svc.Redeliver(ctx, m, ev.ID, operator); !errors.Is(err, webhooks.ErrNoEndpoint) {
			t.Errorf("endpoint without the type: err = %v, want ErrNoEndpoint", err)
		}
		if js := jobs(t, e.pool, ev.ID); len(js) != 0 {
			t.Errorf("%d delivery jobs, want none", len(js))
		}
		if a := audited(t, ev.ID); len(a) != 0 {
			t.Errorf("audit actors = %q, want none", a)
		}
	})
}
