package mandate

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// A bank answer that reports success for another amount than the one
// sent is not booked: not as a success with quickpay's amount (the
// member may have paid something else), nor with the bank's (the mandate
// allowed what was sent). The attempt ends amount_mismatch, keeping the
// bank's figure; its charge is held (no event, no retry, no refund, no
// settlement row); an audit row charge.amount_mismatch and the counter
// quickpay_charge_amount_mismatches_total tell operators, who settle it
// with the bank. Whatever the source — the charge answer, a callback, a
// query, the statement — the first such answer decides; a later one for
// a settled attempt changes nothing and is logged.

// mismatchMetrics counts held answers; Service.Describe and Collect
// expose it.
type mismatchMetrics struct {
	held *prometheus.CounterVec
}

func newMismatchMetrics() *mismatchMetrics {
	return &mismatchMetrics{held: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quickpay_charge_amount_mismatches_total",
		Help: "Bank answers reporting success for another amount than the one sent; their charges are held for operators.",
	}, []string{"bank"})}
}

// Describe implements prometheus.Collector: the service's own metrics.
func (s *Service) Describe(ch chan<- *prometheus.Desc) { s.metrics.held.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) { s.metrics.held.Collect(ch) }

var _ prometheus.Collector = (*Service)(nil)

// mismatched reports whether a success answer names another amount than
// the attempt's. An answer that names none (a synchronous charge answer
// usually does not) is taken to be for the amount sent.
func mismatched(x *sending) bool { return x.r.Amount != 0 && x.r.Amount != x.a.Amount }

// holdMismatched applies success answers that name another amount: each
// open attempt becomes amount_mismatch and its charge held, in tx.
func (s *Service) holdMismatched(ctx context.Context, tx pgx.Tx, list []*sending) error {
	now := s.now()
	for _, x := range list {
		day := bankDay(now)
		if !x.r.FinishedAt.IsZero() {
			day = bankDay(x.r.FinishedAt)
		}
		chargeID, ok, err := holdAttempt(ctx, tx, x.a.OrderNo, x.r.Amount, x.r.Code, x.r.BankTxnNo, now, day)
		if err != nil {
			return err
		}
		if !ok {
			cur, err := getAttempt(ctx, tx, x.a.MerchantID, x.a.OrderNo, false)
			if err != nil {
				return err
			}
			if cur.Status != AttemptAmountMismatch {
				s.log.Error("bank answer names another amount for a settled attempt", "order_no", x.a.OrderNo,
					"bank", x.a.BankCode, "settled", cur.Status, "ours", x.a.Amount, "bank_amount", x.r.Amount, "source", x.source)
			}
			continue
		}
		if err := holdCharge(ctx, tx, chargeID, x.r.BankTxnNo, now); err != nil {
			return err
		}
		if err := s.auditTx(ctx, tx, x.a.MerchantID, "charge.amount_mismatch", chargeID, "held", map[string]any{
			"order_no": x.a.OrderNo, "bank": x.a.BankCode, "amount": x.a.Amount, "bank_amount": x.r.Amount,
			"bank_txn_no": x.r.BankTxnNo, "source": x.source}); err != nil {
			return err
		}
		s.metrics.held.WithLabelValues(x.a.BankCode).Inc()
		s.log.Error("bank reported success for another amount; charge held for operators", "order_no", x.a.OrderNo,
			"charge", chargeID, "bank", x.a.BankCode, "ours", x.a.Amount, "bank_amount", x.r.Amount, "source", x.source)
	}
	return nil
}
