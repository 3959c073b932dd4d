package mandate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Cards is what mandates need of bound cards.
type Cards interface {
	// CardPhone returns the card and the phone reserved at its bank, read
	// on q: the caller's transaction if it holds one (so no second
	// connection is needed), else the pool.
	CardPhone(ctx context.Context, q binding.Querier, merchantID, cardID string, who sensitive.Access) (binding.Card, string, error)
	// Agreements returns cards with their bank agreement numbers, each
	// decryption audited for (actor, reason).
	Agreements(ctx context.Context, refs []binding.CardRef, actor, reason string) (map[binding.CardRef]binding.CardAgreement, error)
	// Revoke marks a card whose agreement ended at the bank; its mandates
	// are cancelled in the same transaction (CardEnded).
	Revoke(ctx context.Context, merchantID, cardID, reason string) (binding.Card, error)
	// EndAgreement acts on a bank's notice that an agreement ended: the
	// card holding it is revoked as Revoke does; the notice is recorded.
	EndAgreement(ctx context.Context, n binding.AgreementNotice) (binding.AgreementEnd, error)
	// CardsForCharging returns each card's bank and the card rows of its
	// number, by card id, in the claiming transaction tx, after locking
	// each card number for tx: the per-card failure cap is read and
	// raised under that lock. One round trip.
	CardsForCharging(ctx context.Context, tx pgx.Tx, cardIDs []string) (map[string]binding.ChargingCard, error)
}

// Hasher makes keyed hashes in the HSM (the vault's fingerprints).
type Hasher interface {
	Fingerprint(ctx context.Context, domain string, value []byte) ([]byte, error)
	Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error)
}

// Banks reaches a card's bank.
type Banks interface {
	Bank(code string) (bankadapters.Bank, bool)
}

// SMS sends quickpay's own texts through the carrier.
type SMS interface {
	Send(ctx context.Context, to, text string) error
}

// PhoneLimit counts a text to a phone against the abuse limits shared with
// the banks' codes (binding.Service.TakeSMS), before it is sent, on q: the
// caller's transaction if it holds one (the count then commits with it,
// and no second connection is needed), else the pool. It returns the
// error the API answers (429 rate_limited) when the phone's texts are used
// up.
type PhoneLimit interface {
	TakeSMS(ctx context.Context, q binding.Querier, phone string) error
}

// Jobs enqueues River jobs in the caller's transaction.
type Jobs interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyFastTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) (int, error)
}

// EmitFunc writes events, in order, in the transaction of the change they
// report (webhooks.Service.EmitAll).
type EmitFunc func(ctx context.Context, tx pgx.Tx, events []webhooks.Pending) error

// Config wires a Service.
type Config struct {
	Pool   *pgxpool.Pool // Required.
	Cards  Cards         // Required.
	Hasher Hasher        // Required.
	// Banks are the channels; each bank's calls are bounded by the
	// bankadapters.WithLimit around it (channels.Open), shared with binding.
	Banks Banks // Required.
	SMS   SMS   // Required.
	Jobs  Jobs  // Required: enqueues charge and query jobs.

	// PhoneLimit meters consent codes per phone. Optional: without it
	// texts are not limited.
	PhoneLimit PhoneLimit
	// OTPMetrics counts consent codes sent and checked. Optional.
	OTPMetrics *binding.OTPMetrics

	// Emit writes mandate and charge events. Optional.
	Emit EmitFunc
	// Payees names the merchant in the consent SMS. Defaults to the
	// merchants table in Pool.
	Payees Payees
	// Clock defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// QueryBackoff are the waits before each status query of an attempt
	// whose outcome is unknown. Defaults to 1, 2, 4, 8, 16, 32 s, then 1,
	// 2, 5, 10, 30 and 60 min; after the last, the daily statement
	// (Reconcile) settles it.
	QueryBackoff []time.Duration
	// NotifyURL is where a bank posts a charge's result asynchronously
	// (the API's /callbacks/banks/{code}); given the bank code. Optional
	// for banks that answer synchronously.
	NotifyURL func(bankCode string) string
	// Queue is the River queue of charge and query jobs. Defaults to
	// "charges".
	Queue string
	// ClaimBatch is how many due charges one transaction claims. Defaults
	// to 500.
	ClaimBatch int
	// JobBatch is the most attempts one charge job sends (concurrently,
	// within the bank's limits) and settles in one transaction. Defaults
	// to 20.
	JobBatch int
	// RefundBatch is the most refunds one refund job sends (concurrently,
	// within the bank's limits) and settles in one transaction: a refund
	// joins a job of its bank that has not started while it has fewer.
	// Defaults to JobBatch.
	RefundBatch int
}

// Queue is the default River queue of the charge workers.
const Queue = "charges"

// DefaultQueryBackoff is Config.QueryBackoff's default.
var DefaultQueryBackoff = []time.Duration{
	1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
	1 * time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, 60 * time.Minute,
}

// Service is the mandate domain.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	metrics *mismatchMetrics
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Cards == nil || cfg.Hasher == nil || cfg.Banks == nil || cfg.SMS == nil || cfg.Jobs == nil {
		return nil, errors.New("mandate: Config needs Pool, Cards, Hasher, Banks, SMS and Jobs")
	}
	if cfg.Emit == nil {
		cfg.Emit = func(context.Context, pgx.Tx, []webhooks.Pending) error { return nil }
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Payees == nil {
		cfg.Payees = merchantNames{cfg.Pool}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.QueryBackoff) == 0 {
		cfg.QueryBackoff = DefaultQueryBackoff
	}
	if cfg.NotifyURL == nil {
		cfg.NotifyURL = func(string) string { return "" }
	}
	if cfg.Queue == "" {
		cfg.Queue = Queue
	}
	if cfg.ClaimBatch <= 0 {
		cfg.ClaimBatch = 500
	}
	if cfg.JobBatch <= 0 {
		cfg.JobBatch = 20
	}
	if cfg.RefundBatch <= 0 {
		cfg.RefundBatch = cfg.JobBatch
	}
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, metrics: newMismatchMetrics()}, nil
}

// now is the clock at Postgres' precision.
func (s *Service) now() time.Time { return s.cfg.Clock.Now().UTC().Truncate(time.Microsecond) }

func actor(merchantID string) string { return "api:" + merchantID }

type actorKey struct{}

// WithActor returns ctx naming who acts when it is not the merchant
// through the API: an operator ("operator:op_…") refunding or cancelling
// from the console. The audit rows written under it name that actor, and
// a mandate cancelled under an operator's name says so (status_reason
// "operator").
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// actorOf is who acts under ctx on merchantID's behalf: WithActor's, or
// the merchant through the API.
func actorOf(ctx context.Context, merchantID string) string {
	if a, _ := ctx.Value(actorKey{}).(string); a != "" {
		return a
	}
	return actor(merchantID)
}

// byOperator reports whether an operator acts under ctx.
func byOperator(ctx context.Context) bool {
	a, _ := ctx.Value(actorKey{}).(string)
	return strings.HasPrefix(a, "operator:")
}

// recordTimeout bounds the writes that record what the outside world was
// asked, which the caller cannot cancel.
const recordTimeout = 15 * time.Second

func (s *Service) auditTx(ctx context.Context, q audit.Execer, merchantID, action, subject, outcome string, details map[string]any) error {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	who := actorOf(ctx, merchantID)
	if strings.HasPrefix(action, "charge.") || strings.HasPrefix(action, "scheduler.") {
		who = "worker:charges"
	}
	return audit.Write(ctx, q, audit.Entry{MerchantID: merchantID, Actor: who, Action: action, Subject: subject, Details: d})
}

// emit writes one event in tx.
func (s *Service) emit(ctx context.Context, tx pgx.Tx, merchantID, eventType string, data any) error {
	return s.cfg.Emit(ctx, tx, []webhooks.Pending{{MerchantID: merchantID, Type: eventType, Data: data}})
}

// Payees names the merchant a member pays, as the consent SMS shows it.
type Payees interface {
	// PayeeName returns the merchant's display name.
	PayeeName(ctx context.Context, merchantID string) (string, error)
}

// merchantNames is Config.Payees' default: the merchants table (the name
// an operator gave with `quickpay merchants create --name`).
type merchantNames struct{ pool *pgxpool.Pool }

func (p merchantNames) PayeeName(ctx context.Context, merchantID string) (string, error) {
	name, err := merchantName(ctx, p.pool, merchantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("payee %s: no such merchant", merchantID)
	}
	if err != nil {
		return "", fmt.Errorf("payee %s: %w", merchantID, err)
	}
	return name, nil
}
