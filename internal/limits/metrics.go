package limits

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts refusals:
//
//	quickpay_abuse_limit_refusals_total{limit}
//
// limit is the Kind whose rule refused ("bind_apply_card", "sms_phone",
// …), or "unattributed" when no rule is at its cap by the time the refusal
// is looked at (a concurrent take or an instant that left its window).
type metrics struct {
	refusals *prometheus.CounterVec
}

// unattributed labels a refusal whose rule could not be found again.
const unattributed = "unattributed"

// Observe registers the refusal counter on reg and counts every refusal
// from now on. Call it before the Limiter is used. A refusal costs one
// more read then (which rule refused: limits_take answers only how long);
// takes that pass cost nothing more.
func (l *Limiter) Observe(reg prometheus.Registerer) error {
	m := &metrics{refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quickpay_abuse_limit_refusals_total",
		Help: "Requests an abuse limit refused before any bank or carrier call, by the limit's kind.",
	}, []string{"limit"})}
	if err := reg.Register(m.refusals); err != nil {
		return err
	}
	l.metrics = m
	return nil
}

// atCapSQL names the kinds among the checks ($2–$5) whose rule is at its
// cap at $1: the instants within the window are at least the cap, which
// is when limits_take and limits_take_fresh refuse.
const atCapSQL = `SELECT coalesce(array_agg(DISTINCT c.k), '{}') FROM unnest($2::text[], $3::bytea[], $4::int[], $5::interval[]) AS c(k, ky, cap, win)
	JOIN limit_events e ON e.kind = c.k AND e.key = c.ky
	WHERE (SELECT count(*) FROM unnest(e.times) AS t WHERE t > $1::timestamptz - c.win) >= c.cap`

// countRefusal counts a refusal of checks at now under the kinds at their
// caps. It reads on q, as the take did.
func (l *Limiter) countRefusal(ctx context.Context, q Querier, now time.Time, checks []Check) {
	if l.metrics == nil {
		return
	}
	c := columnsOf(checks)
	var found []string
	err := q.QueryRow(ctx, atCapSQL, now, c.kinds, c.keys, c.caps, c.wins).Scan(&found)
	if err != nil || len(found) == 0 {
		l.metrics.refusals.WithLabelValues(unattributed).Inc()
		return
	}
	for _, k := range found {
		l.metrics.refusals.WithLabelValues(k).Inc()
	}
}
