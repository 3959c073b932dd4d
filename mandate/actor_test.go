package mandate_test

import (
	"context"
	"testing"

	"github.com/quickpay/quickpay/mandate"
)

// TestCancelByOperator: a cancel made under an operator's name (the
// console) says so in the mandate's status_reason and names the operator
// in its audit row; the merchant's own cancel says "merchant".
func TestCancelByOperator(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, actor, reason string
	}{
		{"by the merchant", "", "merchant"},
		{"by an operator", "operator:op_cancel", "operator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := w.bindCard(t, "ICBC", 1_000_000)
			m := w.mandate(t, c, w.monthly(10, 4_200))
			cctx := ctx
			if tc.actor != "" {
				cctx = mandate.WithActor(ctx, tc.actor)
			}
			got, err := w.svc.Cancel(cctx, c.Merchant, m.ID)
			if err != nil || got.Status != mandate.StatusCancelled || got.StatusReason != tc.reason {
				t.Fatalf("cancel = %s (%s), %v; want cancelled (%s)", got.Status, got.StatusReason, err, tc.reason)
			}
			var actor string
			if err := w.Pool.QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'mandate.cancel' AND subject = $1`,
				m.ID).Scan(&actor); err != nil {
				t.Fatal(err)
			}
			want := tc.actor
			if want == "" {
				want = "api:" + c.Merchant
			}
			if actor != want {
				t.Errorf("audit actor = %q, want %q", actor, want)
			}
		})
	}
}
