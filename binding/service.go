package binding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// Vault is what binding needs of the token vault.
type Vault interface {
	Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Decrypt(ctx context.Context, ct, aad []byte, who sensitive.Access) ([]byte, error)
	Fingerprint(ctx context.Context, domain string, value []byte) ([]byte, error)
	Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error)
}

// Banks routes cards and reaches their banks.
type Banks interface {
	Route(pan sensitive.PAN) (bankadapters.CardInfo, error)
	Bank(code string) (bankadapters.Bank, bool)
}

// EmitFunc queues the statements that write events on b, which the
// service sends in its transaction with the change the events report, in
// one round trip; after that it runs deliver in the same transaction
// (webhooks.Service.Queue).
type EmitFunc func(b *pgx.Batch, events []webhooks.Pending) (deliver func(context.Context, pgx.Tx) error, err error)

// CardEndedFunc is told, in the card's transaction, that a card is no
// longer active; status is a CardStatus's value.
type CardEndedFunc func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error

// Config wires a Service.
type Config struct {
	Pool  *pgxpool.Pool // Required.
	Vault Vault         // Required.
	// Banks reach the banks. Required. Per-bank concurrency and rate are
	// the adapters' (bankadapters.WithLimit): a call that queued past its
	// deadline there was never sent, and answers ErrBankUnavailable here.
	Banks Banks
	// Emit writes binding.bound, binding.failed and card.unbound. Optional.
	Emit EmitFunc
	// CardEnded runs in the transaction that unbinds or revokes a card,
	// with the card's new status: mandates on it are cancelled with it.
	// Optional.
	CardEnded CardEndedFunc
	// Clock defaults to the system clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Limiter meters binding's abuse limits across serve instances
	// (limits.go). Optional: without it nothing is limited.
	Limiter Limiter
	// Limits are the limits' rules. Defaults to DefaultLimits().
	Limits Limits
	// OTPMetrics counts codes sent and checked. Optional.
	OTPMetrics *OTPMetrics
}

// Service is the binding domain.
type Service struct {
	pool    *pgxpool.Pool
	vault   Vault
	banks   Banks
	emit    EmitFunc
	ended   CardEndedFunc
	clock   clock.Clock
	log     *slog.Logger
	limiter Limiter
	limits  Limits
	otp     *OTPMetrics
	// crashWindow, set only by tests (export_test.go), is asked right
	// after a bank call whose answer must be applied; true makes the call
	// stop there, as a process that died would, leaving its claim.
	crashWindow func(op string) bool
	// callTimeout bounds a call at the bank (callTimeout; a test shortens it).
	callTimeout time.Duration
}

// now is the clock at Postgres' precision, so answers show the times later
// reads return and comparisons with stored times are exact.
func (s *Service) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Vault == nil || cfg.Banks == nil {
		return nil, errors.New("binding: Config needs Pool, Vault and Banks")
	}
	if cfg.Emit == nil {
		cfg.Emit = func(*pgx.Batch, []webhooks.Pending) (func(context.Context, pgx.Tx) error, error) {
			return func(context.Context, pgx.Tx) error { return nil }, nil
		}
	}
	if cfg.CardEnded == nil {
		cfg.CardEnded = func(context.Context, pgx.Tx, string, string, string) error { return nil }
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	return &Service{pool: cfg.Pool, vault: cfg.Vault, banks: cfg.Banks, emit: cfg.Emit, ended: cfg.CardEnded,
		clock: cfg.Clock, log: cfg.Logger, limiter: cfg.Limiter, limits: cfg.Limits, otp: cfg.OTPMetrics,
		callTimeout: callTimeout}, nil
}

// errCrashed is what a call stopped at its crash window returns (tests).
var errCrashed = errors.New("binding: stopped at the crash window (test hook)")

// crashed reports whether the test hook stops op at its crash window.
func (s *Service) crashed(op string) bool { return s.crashWindow != nil && s.crashWindow(op) }

// bankError turns a bank's refusal of a binding into the domain's error.
func (s *Service) bankError(err error) error {
	var be *bankadapters.Error
	if !errors.As(err, &be) {
		return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
	}
	switch be.Outcome {
	case bankadapters.OutcomeElementsMismatch:
		return &ElementsMismatchError{Field: be.Field}
	case bankadapters.OutcomeAlreadyBound:
		// The platform's agreement for this card exists at the bank but no
		// card of this merchant holds it (another merchant's member bound
		// it through the platform's merchant number).
		return ErrCardBoundElsewhere
	case bankadapters.OutcomeHardDecline, bankadapters.OutcomeRetryableDecline:
		return ErrCardDeclined
	case bankadapters.OutcomeUnavailable, bankadapters.OutcomeProcessing, bankadapters.OutcomeOTPWrong,
		bankadapters.OutcomeOTPExpired, bankadapters.OutcomeOTPAttemptsExceeded, bankadapters.OutcomeSuccess:
		return fmt.Errorf("%w: %v", ErrBankUnavailable, err)
	default:
		return fmt.Errorf("binding: bank outcome %q not handled: %w", be.Outcome, err)
	}
}

// bankCode is the bank's own code of a refusal, for the audit trail.
func bankCode(err error) string {
	var be *bankadapters.Error
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}

// Event payloads: what a merchant may see, never card data beyond masked.
// Their fields are the API's resources' (api/openapi.yaml, Event.data).

// bindingEventData is a binding.* event's data.
type bindingEventData struct {
	BindingID   string        `json:"binding_id"`
	Status      Status        `json:"status"`
	MemberID    *string       `json:"member_id"`
	CardID      *string       `json:"card_id"`
	FailureCode *string       `json:"failure_code"`
	Card        eventCardInfo `json:"card"`
}

type eventCardInfo struct {
	BankCode  string `json:"bank_code"`
	MaskedPAN string `json:"masked_pan"`
	Last4     string `json:"last4"`
}

// cardEventData is a card.* event's data.
type cardEventData struct {
	CardID    string     `json:"card_id"`
	MemberID  string     `json:"member_id"`
	Status    CardStatus `json:"status"`
	BankCode  string     `json:"bank_code"`
	MaskedPAN string     `json:"masked_pan"`
	Last4     string     `json:"last4"`
}

func bindingEvent(b bindingRow, eventType string) webhooks.Pending {
	return webhooks.Pending{MerchantID: b.MerchantID, Type: eventType, Data: bindingEventData{
		BindingID: b.ID, Status: b.Status, MemberID: nullable(b.MemberID), CardID: nullable(b.CardID),
		FailureCode: nullable(b.FailureCode),
		Card:        eventCardInfo{BankCode: b.Card.BankCode, MaskedPAN: b.Card.MaskedPAN, Last4: b.Card.Last4}}}
}

func cardEvent(c Card, eventType string) webhooks.Pending {
	return webhooks.Pending{MerchantID: c.MerchantID, Type: eventType, Data: cardEventData{
		CardID: c.ID, MemberID: c.MemberID, Status: CardStatus(c.Status), BankCode: c.BankCode, MaskedPAN: c.MaskedPAN,
		Last4: c.Last4}}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
