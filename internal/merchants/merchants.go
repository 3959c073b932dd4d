// Package merchants holds the merchants that call the API and their client
// credentials (table merchants): creation, client authentication with a
// per-source lockout (PCI DSS 8.3.4's ten tries), lookup, and what an
// operator does to a merchant (admin.go: disable, enable, rotate the
// secret).
//
// # Credentials
//
// A merchant authenticates as an OAuth client: client_id "qpc_…" (public,
// random) and a client secret of 32 random bytes, base64url. The secret is
// shown once, at creation, and stored only as a bcrypt hash. Since the secret
// is random rather than chosen by a person, bcrypt's cost is defence in depth
// more than the protection itself: the default cost 10 (about 50–80 ms of one
// core per login) keeps the token endpoint cheap, and a login is needed only
// every 15 minutes per client.
//
// # Lockout, per client and source address
//
// Failed token requests are counted per client id and source address
// (internal/limits, shared by every serve instance): Config.TokenFailures,
// by default 10 in any 15 minutes. At the cap, that source's requests for
// that client are refused before any database read, bcrypt comparison or
// audit row, until the oldest failure leaves the window; the client's other
// sources are not affected, so a stranger who knows a client id cannot lock
// the merchant out. Each attempt reserves its try before bcrypt (so
// concurrent guesses cannot exceed the cap) and a right secret gives it
// back. Every attempt that is checked writes an audit row (action
// auth.login) with its outcome and source; never the secret.
//
// # Requests-per-second ceiling
//
// A merchant may have a ceiling on its API requests per second
// (Merchant.RPSCeiling, NULL in the database when it has none), given at
// creation or with SetRPSCeiling and audited either way. This package only
// stores it; the API enforces it per serve instance (api/ratelimit.go).
package merchants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/limits"
)

// Scopes a merchant can hold.
const (
	ScopeBind     = "bind"     // members, bindings, cards
	ScopeWithhold = "withhold" // mandates and charges
)

// AllScopes lists every scope, in canonical order.
var AllScopes = []string{ScopeBind, ScopeWithhold}

// DefaultTokenFailures is Config.TokenFailures' default (DESIGN.md "Abuse
// limits"; PCI DSS 8.3.4: at most 10 tries).
var DefaultTokenFailures = limits.Rule{Cap: 10, Window: 15 * time.Minute}

// DefaultSourceFailures is Config.SourceFailures' default: failed logins
// from one source across every client id.
var DefaultSourceFailures = limits.Rule{Cap: 100, Window: 15 * time.Minute}

// What the limiter counts: failed logins per client and source, and per
// source across clients.
const (
	KindTokenFailures       limits.Kind = "token_failures"
	KindTokenSourceFailures limits.Kind = "token_source_failures"
)

// Prefixes of merchant ids and client ids (internal/ids).
const (
	IDPrefix       = "mch"
	ClientIDPrefix = "qpc"
)

// secretBytes is the client secret's entropy; base64url makes it 43 characters.
const secretBytes = 32

// maxSecretLen is the longest secret compared: bcrypt reads at most 72 bytes.
const maxSecretLen = 72

// Errors returned by Store.
var (
	ErrNotFound = errors.New("merchant not found")
	// ErrInvalidClient: unknown client id or wrong secret; deliberately the
	// same error for both.
	ErrInvalidClient = errors.New("invalid client credentials")
	// ErrThrottled: too many failed logins for the client from this
	// source; the error is a *ThrottledError saying for how long.
	ErrThrottled = errors.New("too many failed logins for this client from this source")
	// ErrInvalidScopes: scopes are empty or name an unknown scope.
	ErrInvalidScopes = errors.New("scopes must be a non-empty subset of bind, withhold")
	// ErrInvalidName: the name is empty, longer than 200 characters or not UTF-8.
	ErrInvalidName = errors.New("merchant name must be 1 to 200 characters")
	// ErrInvalidRPSCeiling: a ceiling below 0 or above MaxRPSCeiling.
	ErrInvalidRPSCeiling = fmt.Errorf("requests-per-second ceiling must be 0 (none) to %d", MaxRPSCeiling)
)

// MaxRPSCeiling is the highest requests-per-second ceiling a merchant can
// be given (the database's CHECK says the same); above it a ceiling would
// protect nothing.
const MaxRPSCeiling = 100_000

// ThrottledError refuses a source that failed too often.
// errors.Is(err, ErrThrottled) holds for it.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v; retry after %s", ErrThrottled, e.RetryAfter)
}

// Unwrap makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// Limiter is what the store needs of internal/limits.
type Limiter interface {
	Take(ctx context.Context, now time.Time, checks ...limits.Check) error
	Release(ctx context.Context, at time.Time, keys ...limits.Key) error
}

var _ Limiter = (*limits.Limiter)(nil)

// Merchant is a platform that calls the API.
type Merchant struct {
	ID        string
	Name      string
	Scopes    []string // canonical order, see AllScopes
	ClientID  string
	CreatedAt time.Time
	// RPSCeiling is the most API requests per second the merchant may make
	// to one serve instance; 0 means no ceiling.
	RPSCeiling int
	// DisabledAt is when an operator disabled the merchant (Disable); zero
	// while it is enabled. A disabled merchant gets no token and its live
	// tokens are refused.
	DisabledAt time.Time
}

// Disabled reports whether the merchant is disabled.
func (m Merchant) Disabled() bool { return !m.DisabledAt.IsZero() }

// HasScope reports whether m holds scope.
func (m Merchant) HasScope(scope string) bool { return slices.Contains(m.Scopes, scope) }

// Config configures a Store.
type Config struct {
	Pool *pgxpool.Pool // Required.
	// Clock gives the time of lockouts and creation. Defaults to clock.System.
	Clock clock.Clock
	// BcryptCost is the cost of new secret hashes. Defaults to 10
	// (bcrypt.DefaultCost); values below 10 are raised to 10.
	BcryptCost int
	// Limiter counts failed logins per client and source. Defaults to
	// limits.New(Pool).
	Limiter Limiter
	// TokenFailures is how many failed logins one source may make for one
	// client. Defaults to DefaultTokenFailures.
	TokenFailures limits.Rule
	// SourceFailures is how many failed logins one source may make across
	// every client id (each unknown id would otherwise start a count of its
	// own, and every try costs a bcrypt comparison and an audit row).
	// Defaults to DefaultSourceFailures.
	SourceFailures limits.Rule
}

// Store keeps merchants in Postgres. It is safe for concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	clock clock.Clock
	cost  int
	// dummy is a hash of a random secret at the store's cost: unknown
	// clients are compared against it, so they cost what a known one does.
	dummy          []byte
	limiter        Limiter
	failures       limits.Rule
	sourceFailures limits.Rule
}

// NewStore returns a Store. It computes one bcrypt hash.
func NewStore(cfg Config) (*Store, error) {
	if cfg.Pool == nil {
		return nil, errors.New("merchants: Config needs Pool")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Limiter == nil {
		l, err := limits.New(cfg.Pool)
		if err != nil {
			return nil, err
		}
		cfg.Limiter = l
	}
	if cfg.TokenFailures == (limits.Rule{}) {
		cfg.TokenFailures = DefaultTokenFailures
	}
	if cfg.SourceFailures == (limits.Rule{}) {
		cfg.SourceFailures = DefaultSourceFailures
	}
	for name, r := range map[string]limits.Rule{"token failures": cfg.TokenFailures, "source failures": cfg.SourceFailures} {
		if !r.Valid() {
			return nil, fmt.Errorf("merchants: %s: want a cap ≥ 1 and a window ≥ 1s, got %d in %s", name, r.Cap, r.Window)
		}
	}
	cost := max(cfg.BcryptCost, bcrypt.DefaultCost)
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte(secret), cost)
	if err != nil {
		return nil, fmt.Errorf("merchants: dummy hash: %w", err)
	}
	return &Store{pool: cfg.Pool, clock: cfg.Clock, cost: cost, dummy: dummy, limiter: cfg.Limiter,
		failures: cfg.TokenFailures, sourceFailures: cfg.SourceFailures}, nil
}

type actorKey struct{}

// WithActor returns ctx naming who acts, for the audit rows Create writes
// ("cli:alice"). Without it the actor is "system".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorFrom(ctx context.Context) string {
	if a, _ := ctx.Value(actorKey{}).(string); a != "" {
		return a
	}
	return "system"
}

// NormalizeScopes checks that scopes is a non-empty subset of AllScopes and
// returns it deduplicated in canonical order. Error: ErrInvalidScopes.
func NormalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, ErrInvalidScopes
	}
	for _, s := range scopes {
		if !slices.Contains(AllScopes, s) {
			return nil, fmt.Errorf("%w: unknown scope %q", ErrInvalidScopes, s)
		}
	}
	var out []string
	for _, s := range AllScopes {
		if slices.Contains(scopes, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// NewMerchant is what CreateWith makes a merchant of.
type NewMerchant struct {
	Name   string   // Required: 1 to 200 characters.
	Scopes []string // Required: a non-empty subset of AllScopes.
	// RPSCeiling is the requests-per-second ceiling; 0 (the default) is none.
	RPSCeiling int
}

// Create is CreateWith for a merchant without a requests-per-second
// ceiling.
func (s *Store) Create(ctx context.Context, name string, scopes []string) (Merchant, string, error) {
	return s.CreateWith(ctx, NewMerchant{Name: name, Scopes: scopes})
}

// CreateWith makes a merchant with new client credentials and returns the
// client secret, which exists nowhere else afterwards: only its bcrypt hash
// is stored. The audit row (merchant.create) is written in the same
// transaction. Errors: ErrInvalidName, ErrInvalidScopes,
// ErrInvalidRPSCeiling.
func (s *Store) CreateWith(ctx context.Context, nm NewMerchant) (Merchant, string, error) {
	name := strings.TrimSpace(nm.Name)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > 200 {
		return Merchant{}, "", ErrInvalidName
	}
	scopes, err := NormalizeScopes(nm.Scopes)
	if err != nil {
		return Merchant{}, "", err
	}
	if !validRPSCeiling(nm.RPSCeiling) {
		return Merchant{}, "", ErrInvalidRPSCeiling
	}
	secret, err := newSecret()
	if err != nil {
		return Merchant{}, "", err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return Merchant{}, "", fmt.Errorf("hash client secret: %w", err)
	}
	m := Merchant{
		ID: ids.New(IDPrefix), Name: name, Scopes: scopes, ClientID: ids.New(ClientIDPrefix),
		CreatedAt: s.clock.Now().UTC().Truncate(time.Microsecond), RPSCeiling: nm.RPSCeiling,
	}
	details := map[string]any{"client_id": m.ClientID, "scopes": m.Scopes}
	if m.RPSCeiling > 0 {
		details["rps_ceiling"] = m.RPSCeiling
	}
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash, created_at, rps_ceiling)
			 VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			m.ID, m.Name, m.Scopes, m.ClientID, string(hash), m.CreatedAt, rpsColumn(m.RPSCeiling)); err != nil {
			return fmt.Errorf("insert merchant: %w", err)
		}
		return audit.Write(ctx, tx, audit.Entry{
			MerchantID: m.ID, Actor: actorFrom(ctx), Action: "merchant.create", Subject: m.ID,
			Details: details,
		})
	})
	if err != nil {
		return Merchant{}, "", fmt.Errorf("create merchant: %w", err)
	}
	return m, secret, nil
}

func newSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("client secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

const merchantColumns = `id, name, scopes, client_id, created_at, coalesce(rps_ceiling, 0), disabled_at`

// scanMerchant scans merchantColumns and then extra.
func scanMerchant(row pgx.Row, extra ...any) (Merchant, error) {
	var (
		m        Merchant
		disabled *time.Time
	)
	err := row.Scan(append([]any{&m.ID, &m.Name, &m.Scopes, &m.ClientID, &m.CreatedAt, &m.RPSCeiling, &disabled}, extra...)...)
	if disabled != nil {
		m.DisabledAt = *disabled
	}
	return m, err
}

// Get returns the merchant with id. Error: ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Merchant, error) {
	if !ids.Valid(IDPrefix, id) {
		return Merchant{}, ErrNotFound
	}
	m, err := scanMerchant(s.pool.QueryRow(ctx, `SELECT `+merchantColumns+` FROM merchants WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Merchant{}, ErrNotFound
	}
	if err != nil {
		return Merchant{}, fmt.Errorf("get merchant %s: %w", id, err)
	}
	return m, nil
}

// Login outcomes in the auth.login audit rows.
const (
	outcomeOK     = audit.OutcomeOK
	outcomeFailed = audit.OutcomeFailed
)

// Authenticate is AuthenticateFrom for callers on this host (the CLI, dev
// set-up): their failures are counted under the empty source.
func (s *Store) Authenticate(ctx context.Context, clientID, secret string) (Merchant, error) {
	return s.AuthenticateFrom(ctx, clientID, "", secret)
}

// AuthenticateFrom checks a client's credentials presented from source (an
// IP address). An unknown client costs one bcrypt comparison like a known
// one and returns the same error as a wrong secret. Every attempt checked
// is audited (auth.login); one refused for its source's failures is not,
// and costs one statement. Errors: ErrInvalidClient, ErrThrottled (as
// *ThrottledError, also when the secret is right).
func (s *Store) AuthenticateFrom(ctx context.Context, clientID, source, secret string) (Merchant, error) {
	now := s.clock.Now().UTC().Truncate(time.Microsecond)
	pair, from := sourceKeys(clientID, source)
	err := s.limiter.Take(ctx, now,
		limits.Check{Kind: KindTokenFailures, Key: pair, Rule: s.failures, Take: true},
		limits.Check{Kind: KindTokenSourceFailures, Key: from, Rule: s.sourceFailures, Take: true})
	if le := (*limits.LimitedError)(nil); errors.As(err, &le) {
		return Merchant{}, &ThrottledError{RetryAfter: le.RetryAfter}
	} else if err != nil {
		return Merchant{}, fmt.Errorf("authenticate client: %w", err)
	}
	// The check runs to its end (bcrypt, audit row) whatever the caller
	// does: a caller who hangs up must not get its try back.
	m, err := s.check(context.WithoutCancel(ctx), clientID, source, secret)
	if err != nil {
		// A wrong secret keeps its tries, and so does any other failure.
		return Merchant{}, err
	}
	// Only the right secret gives them back.
	ctx = context.WithoutCancel(ctx)
	if err := s.limiter.Release(ctx, now, limits.Key{Kind: KindTokenFailures, Key: pair},
		limits.Key{Kind: KindTokenSourceFailures, Key: from}); err != nil {
		return Merchant{}, fmt.Errorf("authenticate client: %w", err)
	}
	return m, nil
}

// sourceKeys are the limiter's keys of a client and source, and of the
// source alone: digests, so that neither is stored in clear beside the
// other. An IPv6 source counts by its /64, the block one subscriber gets:
// counted address by address, one subscriber would have 2^64 sources.
func sourceKeys(clientID, source string) (pair, from []byte) {
	if a, err := netip.ParseAddr(source); err == nil && a.Unmap().Is6() {
		source = netip.PrefixFrom(a.Unmap(), 64).Masked().String()
	}
	p := sha256.Sum256([]byte("token|" + clientID + "|" + source))
	f := sha256.Sum256([]byte("token-source|" + source))
	return p[:], f[:]
}

// check compares the secret and audits the attempt.
func (s *Store) check(ctx context.Context, clientID, source, secret string) (Merchant, error) {
	var hash string
	from := map[string]any{}
	if source != "" {
		from["source"] = source
	}
	m, err := scanMerchant(s.pool.QueryRow(ctx,
		`SELECT `+merchantColumns+`, client_secret_hash FROM merchants WHERE client_id = $1`, clientID), &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(secret))
		// The client id goes into the audit trail only if it looks like
		// one: a caller who swapped id and secret must not leave the secret
		// there.
		subject := ""
		if ids.Valid(ClientIDPrefix, clientID) {
			subject = clientID
		}
		from["reason"] = "unknown_client"
		if err := s.auditLogin(ctx, s.pool, "", subject, outcomeFailed, from); err != nil {
			return Merchant{}, err
		}
		return Merchant{}, ErrInvalidClient
	}
	if err != nil {
		return Merchant{}, fmt.Errorf("authenticate client: %w", err)
	}
	// bcrypt compares its hashes in constant time. It ignores input past 72
	// bytes, so longer inputs are refused rather than half-checked (issued
	// secrets are 43 bytes).
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)) != nil || len(secret) > maxSecretLen {
		from["reason"] = "wrong_secret"
		if err := s.auditLogin(ctx, s.pool, m.ID, m.ClientID, outcomeFailed, from); err != nil {
			return Merchant{}, err
		}
		return Merchant{}, ErrInvalidClient
	}
	// A disabled merchant is answered as a wrong secret is, after the same
	// comparison; only the audit row says why.
	if m.Disabled() {
		from["reason"] = "disabled"
		if err := s.auditLogin(ctx, s.pool, m.ID, m.ClientID, outcomeFailed, from); err != nil {
			return Merchant{}, err
		}
		return Merchant{}, ErrInvalidClient
	}
	if err := s.auditLogin(ctx, s.pool, m.ID, m.ClientID, outcomeOK, from); err != nil {
		return Merchant{}, fmt.Errorf("authenticate client: %w", err)
	}
	return m, nil
}

func (s *Store) auditLogin(ctx context.Context, x audit.Execer, merchantID, clientID, outcome string, details map[string]any) error {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	actor := "api:unknown"
	if clientID != "" {
		actor = "api:" + clientID
	}
	return audit.Write(ctx, x, audit.Entry{
		MerchantID: merchantID, Actor: actor, Action: "auth.login", Subject: clientID, Details: d,
	})
}

// ErrInvalidRetryDays: retry days must be 1–10 increasing days, each 1–30.
var ErrInvalidRetryDays = errors.New("retry days: want 1–10 increasing whole days, each 1–30")

// SetRetryDays sets the days after a charge date on which the merchant's
// charges declined for a retryable reason are tried again (default
// 1, 3, 5). Audited (merchant.retry_days). Errors: ErrInvalidRetryDays,
// ErrNotFound.
func (s *Store) SetRetryDays(ctx context.Context, id string, days []int) error {
	if len(days) == 0 || len(days) > 10 {
		return ErrInvalidRetryDays
	}
	for i, d := range days {
		if d < 1 || d > 30 || (i > 0 && d <= days[i-1]) {
			return ErrInvalidRetryDays
		}
	}
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE merchants SET retry_days = $2 WHERE id = $1`, id, days)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return audit.Write(ctx, tx, audit.Entry{MerchantID: id, Actor: actorFrom(ctx), Action: "merchant.retry_days",
			Subject: id, Details: map[string]any{"retry_days": days}})
	})
}

func validRPSCeiling(n int) bool { return n >= 0 && n <= MaxRPSCeiling }

// rpsColumn is the rps_ceiling value of a ceiling: NULL for none.
func rpsColumn(n int) *int32 {
	if n == 0 {
		return nil
	}
	v := int32(n)
	return &v
}

// SetRPSCeiling gives the merchant a requests-per-second ceiling, or takes
// it away with 0. Serve instances apply it once their cached value expires
// (api.DefaultCeilingTTL). Audited (merchant.rps_ceiling, with the old and
// new values). Errors: ErrInvalidRPSCeiling, ErrNotFound.
func (s *Store) SetRPSCeiling(ctx context.Context, id string, rps int) error {
	if !validRPSCeiling(rps) {
		return ErrInvalidRPSCeiling
	}
	if !ids.Valid(IDPrefix, id) {
		return ErrNotFound
	}
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var old int
		err := tx.QueryRow(ctx, `
			WITH before AS (SELECT id, rps_ceiling FROM merchants WHERE id = $1 FOR UPDATE)
			UPDATE merchants m SET rps_ceiling = $2 FROM before WHERE m.id = before.id
			RETURNING coalesce(before.rps_ceiling, 0)`, id, rpsColumn(rps)).Scan(&old)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{MerchantID: id, Actor: actorFrom(ctx), Action: "merchant.rps_ceiling",
			Subject: id, Details: map[string]any{"rps_ceiling": rps, "previous": old}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("set rps ceiling of %s: %w", id, err)
	}
	return err
}

// RPSCeiling returns the merchant's requests-per-second ceiling, 0 for none:
// one indexed read, for the API's cache. Error: ErrNotFound.
func (s *Store) RPSCeiling(ctx context.Context, id string) (int, error) {
	if !ids.Valid(IDPrefix, id) {
		return 0, ErrNotFound
	}
	var n int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(rps_ceiling, 0) FROM merchants WHERE id = $1`, id).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("rps ceiling of %s: %w", id, err)
	}
	return n, nil
}
