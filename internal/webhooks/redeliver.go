package webhooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
)

// ErrNoEndpoint: the merchant has no webhook endpoint, or its endpoint
// does not subscribe to the event's type, so there is nowhere to deliver.
var ErrNoEndpoint = errors.New("webhooks: no endpoint subscribed to the event")

// Redeliver enqueues a new delivery of merchantID's event eventID to the
// merchant's endpoint as it is now: the usual delivery job (DeliverArgs)
// for that one event, which records its attempts in webhook_deliveries,
// retries on the usual schedule, and signs with the endpoint's current
// secret. The job carries the last delivery recorded for the event when it
// was enqueued (AfterDelivery), so an event answered 2xx before is sent
// again, and a 2xx answer to this delivery ends its retries. The job and
// the audit entry webhook.redeliver (actor: the operator) are written in
// one transaction.
//
// It returns ErrNotFound for another merchant's or an unknown event and
// ErrNoEndpoint when the merchant has no endpoint that takes the event.
func (s *Service) Redeliver(ctx context.Context, merchantID, eventID, actor string) error {
	if !ids.Valid("evt", eventID) {
		return ErrNotFound
	}
	err := db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var eventType string
		var last int64
		err := tx.QueryRow(ctx, `SELECT e.type,
			       coalesce((SELECT max(d.id) FROM webhook_deliveries d WHERE d.event_id = e.id), 0)
			  FROM events e WHERE e.merchant_id = $1 AND e.id = $2`, merchantID, eventID).Scan(&eventType, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var ep endpointRow
		err = tx.QueryRow(ctx, `SELECT events FROM webhook_endpoints WHERE merchant_id = $1`, merchantID).Scan(&ep.events)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoEndpoint
		}
		if err != nil {
			return err
		}
		if !ep.subscribes(eventType) {
			return fmt.Errorf("%w: the endpoint does not take %s", ErrNoEndpoint, eventType)
		}
		args := DeliverArgs{MerchantID: merchantID, EventIDs: []string{eventID}, AfterDelivery: last}
		if _, err := s.cfg.Jobs.InsertTx(ctx, tx, args, &river.InsertOpts{Queue: s.cfg.Queue}); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		return audit.Write(ctx, tx, audit.Entry{MerchantID: merchantID, Actor: actor, Action: "webhook.redeliver",
			Subject: eventID, Details: map[string]any{"outcome": audit.OutcomeOK, "after_delivery": last}})
	})
	if err != nil {
		return fmt.Errorf("redeliver %s: %w", eventID, err)
	}
	return nil
}
