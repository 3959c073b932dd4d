// Package webhooks is the event outbox and its delivery to merchants
// (DESIGN.md "Webhooks").
//
// # Events
//
// Domain code calls Service.Emit inside the transaction of the change the
// event reports. Emit writes the event (table events, id evt_…) and, if the
// merchant's endpoint subscribes to the type, enqueues a River delivery job
// in that same transaction: a rolled-back change leaves neither event nor
// job, a committed one always has both. EmitAll does the same for many
// events at once, with one delivery job per merchant for up to
// MaxDeliverBatch of its events (a month-end run emits 100,000
// charge.succeeded events; one job each would be most of its writes).
//
// Merchants read their events oldest first with ListFeed (GET
// /v1/events?after=evt_…&type=…), narrowed in the query to the types the
// reader may see and asked for, and one by one with GetEvent (GET
// /v1/events/{id}); ListEvents reads every event (feed.go). Events are
// ordered by a sequence, and a reader never skips an event whose
// transaction was still open when it read: Emit holds a shared
// per-merchant advisory lock until its transaction ends, and a feed read
// takes that lock exclusively around its read, so every event it does not
// see is numbered after every event it does.
//
// # Delivery
//
// DeliverWorker POSTs each event of its job, one request per event, as the
// JSON {id, type, created_at, data} to the merchant's endpoint as
// configured at delivery time, with
//
//	Quickpay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// where secret is the whole whsec_… string (see Sign and Verify). Every
// attempt is recorded in webhook_deliveries, numbered by the job's attempt.
// Any answer but 2xx, a transport error or the 10 s timeout fails the
// event's attempt and River retries the job with exponential backoff (by
// default 30 s doubling, capped at 6 h) for MaxAttempts attempts, which
// spans at least RetryWindow (3 days). A retry sends only the job's events
// that have no 2xx answer recorded. A transport error or timeout ends the
// attempt (the endpoint is down: the job's later events wait for the
// retry); an answer other than 2xx does not, so one event the receiver
// refuses holds back no other. A run of a job is bounded
// (WorkerConfig.JobTimeout, below River's rescue of stuck jobs); a run out
// of time leaves its remaining events to the next run, at once. Delivery
// is at least once: a receiver may see an event twice and dedupes on its
// id.
//
// The default HTTP client sends only https and refuses loopback, private,
// link-local, NAT64, 6to4 and other non-public addresses at dial time (so
// a merchant's URL cannot reach quickpay's own network, whatever its DNS
// says), and does not follow redirects; SetEndpoint refuses such URLs
// already when they are set (address.go). WorkerConfig and Config
// AllowPrivateNetworks lift the first two for dev.
//
// # Endpoint secrets
//
// Each SetEndpoint makes a new random signing secret, shown once, stored
// only as vaultkeys ciphertext bound to the merchant (AAD
// "webhook_endpoint|"+merchant id); the worker decrypts it for each attempt
// through the audited Decrypt path.
package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/quickpay/quickpay/internal/errs"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Event types (DESIGN.md "Webhooks").
const (
	EventBindingBound         = "binding.bound"
	EventBindingFailed        = "binding.failed"
	EventCardUnbound          = "card.unbound"
	EventCardRevoked          = "card.revoked"
	EventMandateActivated     = "mandate.activated"
	EventMandateCancelled     = "mandate.cancelled"
	EventMandatePaused        = "mandate.paused"    // beyond DESIGN.md: docs/decisions.md
	EventMandateResumed       = "mandate.resumed"   // beyond DESIGN.md
	EventMandateCompleted     = "mandate.completed" // beyond DESIGN.md
	EventChargePreDebitNotice = "charge.pre_debit_notice"
	EventChargeSucceeded      = "charge.succeeded"
	EventChargeFailed         = "charge.failed"
	EventChargeRetryScheduled = "charge.retry_scheduled"
	EventRefundSucceeded      = "refund.succeeded"
	EventRefundFailed         = "refund.failed"
	// EventBindingSessionCompleted: a hosted binding session completed
	// (its data: the session as GET /v1/binding_sessions/{id} shows it).
	EventBindingSessionCompleted = "binding_session.completed"
)

// EventTypes returns every event type, in documentation order.
func EventTypes() []string {
	return []string{
		EventBindingBound, EventBindingFailed, EventCardUnbound, EventCardRevoked,
		EventMandateActivated, EventMandateCancelled, EventMandatePaused, EventMandateResumed, EventMandateCompleted,
		EventChargePreDebitNotice, EventChargeSucceeded, EventChargeFailed, EventChargeRetryScheduled,
		EventRefundSucceeded, EventRefundFailed, EventBindingSessionCompleted,
	}
}

// ValidEventType reports whether t is one of EventTypes.
func ValidEventType(t string) bool { return slices.Contains(EventTypes(), t) }

// Errors.
var (
	// ErrNotFound: no such event for this merchant, or none the reader may
	// see (GetEvent's id, a feed's after).
	ErrNotFound = errors.New("webhooks: not found")
	// ErrInvalid: a *FieldError about SetEndpoint's input.
	ErrInvalid = errs.ErrInvalid
)

// FieldError names the input field SetEndpoint refused. It matches
// ErrInvalid. Its message never repeats the value.
type FieldError = errs.FieldError

// Event is one row of the outbox; its JSON is the webhook payload and the
// GET /v1/events item.
type Event struct {
	ID         string          `json:"id"`
	MerchantID string          `json:"-"`
	Type       string          `json:"type"`
	CreatedAt  time.Time       `json:"created_at"`
	Data       json.RawMessage `json:"data"`
}

// Sealer encrypts and decrypts with AAD; *vaultkeys.Vault is one.
type Sealer interface {
	Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Decrypt(ctx context.Context, ct, aad []byte, a vaultkeys.Access) ([]byte, error)
}

var _ Sealer = (*vaultkeys.Vault)(nil)

// JobInserter enqueues River jobs in a transaction; *river.Client is one.
type JobInserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyFastTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) (int, error)
}

// Config configures a Service.
type Config struct {
	Pool  *pgxpool.Pool // Required.
	Vault Sealer        // Required: encrypts endpoint secrets.
	// Jobs enqueues deliveries in Emit's transaction. Required.
	Jobs JobInserter
	// Queue is the River queue deliveries go to; the workers' client must
	// serve it. Defaults to Queue ("webhooks").
	Queue string
	// Clock dates events. Defaults to clock.System{}.
	Clock clock.Clock
	// AllowPrivateNetworks lets SetEndpoint accept http URLs and URLs that
	// point at loopback, private or reserved addresses: for dev stacks and
	// tests, never production (see WorkerConfig.AllowPrivateNetworks).
	AllowPrivateNetworks bool
	// Resolver looks up an endpoint's host name when it is set. Defaults
	// to net.DefaultResolver.
	Resolver Resolver
}

// Service emits events and manages endpoints.
type Service struct {
	cfg Config
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Vault == nil || cfg.Jobs == nil {
		return nil, errors.New("webhooks: Config needs Pool, Vault and Jobs")
	}
	if cfg.Queue == "" {
		cfg.Queue = Queue
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	return &Service{cfg: cfg}, nil
}

// Emit records an event in tx and, if merchantID's endpoint subscribes to
// eventType, enqueues its delivery in tx. data must marshal to a JSON
// object. An unknown event type or unmarshalable data is an error (a
// programming error, not an input one).
func (s *Service) Emit(ctx context.Context, tx pgx.Tx, merchantID, eventType string, data any) (Event, error) {
	evs, err := s.emit(ctx, tx, []Pending{{MerchantID: merchantID, Type: eventType, Data: data}})
	if err != nil {
		return Event{}, err
	}
	return evs[0], nil
}

// Pending is an event to emit: its merchant, type and data.
type Pending struct {
	MerchantID string
	Type       string
	Data       any
}

// EmitAll records events in tx, in order, and enqueues the deliveries of
// those their merchants' endpoints subscribe to, in a fixed number of
// statements however many there are. Errors as Emit's, for the whole
// batch (the caller's transaction must not commit).
func (s *Service) EmitAll(ctx context.Context, tx pgx.Tx, pending []Pending) error {
	_, err := s.emit(ctx, tx, pending)
	return err
}

func (s *Service) emit(ctx context.Context, tx pgx.Tx, pending []Pending) ([]Event, error) {
	var b pgx.Batch
	evs, deliver, err := s.queue(&b, pending)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("emit %s: %w", batchName(evs), err)
	}
	return evs, deliver(ctx, tx)
}

// Queue is EmitAll for a caller with statements of its own to send (the
// change the events report, its audit rows): it queues the statements that
// record pending on b, which the caller sends in its transaction, in one
// round trip with its own. Once b is sent, deliver (in the same
// transaction) enqueues the deliveries. Errors as Emit's.
func (s *Service) Queue(b *pgx.Batch, pending []Pending) (deliver func(context.Context, pgx.Tx) error, err error) {
	_, deliver, err = s.queue(b, pending)
	return deliver, err
}

func (s *Service) queue(b *pgx.Batch, pending []Pending) ([]Event, func(context.Context, pgx.Tx) error, error) {
	if len(pending) == 0 {
		return nil, func(context.Context, pgx.Tx) error { return nil }, nil
	}
	evs := make([]Event, len(pending))
	now := s.cfg.Clock.Now().UTC().Truncate(time.Microsecond)
	for i, p := range pending {
		if !ValidEventType(p.Type) {
			return nil, nil, fmt.Errorf("emit: unknown event type %q", p.Type)
		}
		raw, err := json.Marshal(p.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("emit %s: marshal data: %w", p.Type, err)
		}
		if len(raw) == 0 || raw[0] != '{' {
			return nil, nil, fmt.Errorf("emit %s: data must be a JSON object", p.Type)
		}
		evs[i] = Event{ID: ids.New("evt"), MerchantID: p.MerchantID, Type: p.Type, CreatedAt: now, Data: raw}
	}
	subscribed := queueEvents(b, evs)
	deliver := func(ctx context.Context, tx pgx.Tx) error {
		var jobs []river.InsertManyParams
		for _, a := range deliveryBatches(evs, subscribed) {
			jobs = append(jobs, river.InsertManyParams{Args: a, InsertOpts: &river.InsertOpts{Queue: s.cfg.Queue}})
		}
		if len(jobs) > 0 {
			if _, err := s.cfg.Jobs.InsertManyFastTx(ctx, tx, jobs); err != nil {
				return fmt.Errorf("emit %s: enqueue delivery: %w", batchName(evs), err)
			}
		}
		return nil
	}
	return evs, deliver, nil
}

// deliveryBatches groups the subscribed events of evs into delivery jobs:
// one per merchant, in the events' order, of at most MaxDeliverBatch each.
func deliveryBatches(evs []Event, subscribed []bool) []DeliverArgs {
	var out []DeliverArgs
	open := map[string]int{} // merchant → index in out of its batch being filled
	for i, ev := range evs {
		if !subscribed[i] {
			continue
		}
		j, ok := open[ev.MerchantID]
		if !ok || len(out[j].EventIDs) == MaxDeliverBatch {
			j = len(out)
			open[ev.MerchantID] = j
			out = append(out, DeliverArgs{MerchantID: ev.MerchantID})
		}
		out[j].EventIDs = append(out[j].EventIDs, ev.ID)
	}
	return out
}

// batchName names an emitted batch in errors: its type, or its size.
func batchName(evs []Event) string {
	if len(evs) == 1 {
		return evs[0].Type
	}
	return fmt.Sprintf("%d events", len(evs))
}

// Endpoint is a merchant's webhook endpoint as set.
type Endpoint struct {
	URL string `json:"url"`
	// Events are the subscribed types, sorted; every type when the merchant
	// named none.
	Events []string `json:"events"`
	// Secret is the signing secret, returned only by SetEndpoint.
	Secret string `json:"secret,omitempty"`
}

// MaxURLLength bounds an endpoint URL.
const MaxURLLength = 2048

// SetEndpoint sets merchantID's endpoint to rawURL, subscribed to events
// (nil: every type, including types added later), with a new signing
// secret, which it returns (it is not shown again).
//
// Errors: a *FieldError (ErrInvalid) naming "url" (not an absolute http or
// https URL, credentials in it, too long; unless Config.AllowPrivateNetworks,
// not https, or an address literal or a host name that resolves to a
// loopback, private or reserved address) or "events" (empty list, unknown
// type); or a vault or database error.
func (s *Service) SetEndpoint(ctx context.Context, merchantID, rawURL string, events []string) (Endpoint, error) {
	u, err := validURL(rawURL)
	if err != nil {
		return Endpoint{}, err
	}
	if err := checkTarget(ctx, s.cfg.Resolver, u, s.cfg.AllowPrivateNetworks); err != nil {
		return Endpoint{}, err
	}
	subs, err := normalizeEvents(events)
	if err != nil {
		return Endpoint{}, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Endpoint{}, fmt.Errorf("set webhook endpoint: %w", err)
	}
	secret := SecretPrefix + hex.EncodeToString(b)
	ct, err := s.cfg.Vault.Encrypt(ctx, []byte(secret), secretAAD(merchantID))
	if err != nil {
		return Endpoint{}, fmt.Errorf("set webhook endpoint: %w", err)
	}
	if err := upsertEndpoint(ctx, s.cfg.Pool, merchantID, rawURL, subs, ct, s.cfg.Clock.Now()); err != nil {
		return Endpoint{}, fmt.Errorf("set webhook endpoint: %w", err)
	}
	ep := Endpoint{URL: rawURL, Events: subs, Secret: secret}
	if subs == nil {
		ep.Events = slices.Sorted(slices.Values(EventTypes()))
	}
	return ep, nil
}

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// secretAAD binds an endpoint secret's ciphertext to its merchant.
func secretAAD(merchantID string) []byte { return []byte("webhook_endpoint|" + merchantID) }

// EncryptedColumn registers webhook_endpoints.secret_ct for re-encryption
// after a data key rotation (vaultkeys.Config.Columns).
func EncryptedColumn() vaultkeys.Column {
	return vaultkeys.Column{
		Table: "webhook_endpoints", Key: "merchant_id", Ciphertext: "secret_ct",
		AAD: func(_, merchantID string) []byte { return secretAAD(merchantID) },
	}
}

func validURL(raw string) (*url.URL, error) {
	fe := func(msg string) error { return &FieldError{Field: "url", Message: msg} }
	if raw == "" {
		return nil, fe("url is required")
	}
	if len(raw) > MaxURLLength {
		return nil, fe(fmt.Sprintf("url is longer than %d characters", MaxURLLength))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return nil, fe("url must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, fe("url must not contain credentials")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return nil, fe("url must not contain a fragment")
	}
	return u, nil
}

// normalizeEvents checks the types and returns them sorted without
// duplicates; nil stays nil (every type).
func normalizeEvents(events []string) ([]string, error) {
	if events == nil {
		return nil, nil
	}
	if len(events) == 0 {
		return nil, &FieldError{Field: "events", Message: "name at least one event type, or omit events for every type"}
	}
	out := make([]string, 0, len(events))
	for i, t := range events {
		if !ValidEventType(t) {
			return nil, &FieldError{Field: "events", Message: fmt.Sprintf("events[%d] is not a known event type", i)}
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Limits of a feed page (ListFeed, ListEvents).
const (
	DefaultListLimit = 100
	MaxListLimit     = 500
)
