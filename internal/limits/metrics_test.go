package limits_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
)

func TestRefusalsCountedByLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	l := limiterOn(t, pool)
	reg := prometheus.NewRegistry()
	if err := l.Observe(reg); err != nil {
		t.Fatal(err)
	}
	refusals := func(limit string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				if f.GetName() == "quickpay_abuse_limit_refusals_total" && m.GetLabel()[0].GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	card, phone, id := []byte("metrics-card"), []byte("metrics-phone"), []byte("metrics-id")
	one := limits.Rule{Cap: 1, Window: time.Hour}
	many := limits.Rule{Cap: 100, Window: time.Hour}
	apply := func(at time.Time) error {
		return l.Take(ctx, at, limits.Check{Kind: "m_apply_card", Key: card, Rule: one, Take: true},
			limits.Check{Kind: "m_sms_phone", Key: phone, Rule: many, Take: true},
			limits.Check{Kind: "m_mismatch_id", Key: id, Rule: one})
	}
	if err := apply(t0); err != nil {
		t.Fatal(err)
	}
	if got := refusals("m_apply_card"); got != 0 {
		t.Fatalf("a take that passed counted %v refusals", got)
	}
	if err := apply(t0.Add(time.Minute)); !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("second apply within the hour: %v, want limited", err)
	}
	if got := refusals("m_apply_card"); got != 1 {
		t.Errorf("m_apply_card refusals = %v, want 1", got)
	}
	if got := refusals("m_sms_phone"); got != 0 {
		t.Errorf("m_sms_phone, with room, counted %v refusals", got)
	}

	// A check-only rule at its cap, refused inside a caller's transaction.
	if err := l.Record(ctx, t0, time.Hour, "m_mismatch_id", id); err != nil {
		t.Fatal(err)
	}
	err := db.InTx(ctx, pool, func(tx pgx.Tx) error {
		return l.TakeIn(ctx, tx, t0.Add(2*time.Minute), limits.Check{Kind: "m_sms_phone", Key: phone, Rule: many, Take: true},
			limits.Check{Kind: "m_mismatch_id", Key: id, Rule: one})
	})
	if !errors.Is(err, limits.ErrLimited) {
		t.Fatalf("take with the ID number at its mismatch cap: %v, want limited", err)
	}
	if got := refusals("m_mismatch_id"); got != 1 {
		t.Errorf("m_mismatch_id refusals = %v, want 1", got)
	}
	if got := refusals("m_apply_card"); got != 1 {
		t.Errorf("m_apply_card refusals = %v after a refusal of another limit, want 1", got)
	}
}
