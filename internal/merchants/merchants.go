// Package merchants holds the merchants that call the API and their client
// credentials (table merchants): creation, client authentication with the
// PCI DSS 8.3.4 lockout, and lookup.
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
// # Lockout
//
// MaxFailedLogins wrong secrets in a row lock the client for LockDuration,
// even against the right secret. The counter and the lock are changed by
// single UPDATE statements whose WHERE clause re-checks the lock, so
// concurrent attempts can neither lose a failure nor slip past a lock
// (Postgres re-evaluates the row after waiting for a concurrent update). The
// bcrypt comparison itself runs outside any transaction, holding no lock.
// When a lock has expired, the next failure counts as the first of a new run.
// Every attempt writes an audit row (action auth.login) with its outcome;
// never the secret.
package merchants

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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
)

// Scopes a merchant can hold.
const (
	ScopeBind     = "bind"     // members, bindings, cards
	ScopeWithhold = "withhold" // mandates and charges
)

// AllScopes lists every scope, in canonical order.
var AllScopes = []string{ScopeBind, ScopeWithhold}

// Lockout policy (PCI DSS 8.3.4: at most 10 attempts, locked at least 30 minutes).
const (
	MaxFailedLogins = 10
	LockDuration    = 30 * time.Minute
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
	// ErrClientLocked: too many failed logins; the error is a *LockedError
	// saying until when.
	ErrClientLocked = errors.New("client locked after repeated failed logins")
	// ErrInvalidScopes: scopes are empty or name an unknown scope.
	ErrInvalidScopes = errors.New("scopes must be a non-empty subset of bind, withhold")
	// ErrInvalidName: the name is empty, longer than 200 characters or not UTF-8.
	ErrInvalidName = errors.New("merchant name must be 1 to 200 characters")
)

// LockedError is the error of a locked client. errors.Is(err, ErrClientLocked)
// holds for it.
type LockedError struct {
	Until time.Time
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%v until %s", ErrClientLocked, e.Until.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrClientLocked) true.
func (e *LockedError) Unwrap() error { return ErrClientLocked }

// Merchant is a platform that calls the API.
type Merchant struct {
	ID        string
	Name      string
	Scopes    []string // canonical order, see AllScopes
	ClientID  string
	CreatedAt time.Time
}

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
}

// Store keeps merchants in Postgres. It is safe for concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	clock clock.Clock
	cost  int
	// dummy is a hash of a random secret at the store's cost: unknown
	// clients are compared against it, so they cost what a known one does.
	dummy []byte
}

// NewStore returns a Store. It computes one bcrypt hash.
func NewStore(cfg Config) (*Store, error) {
	if cfg.Pool == nil {
		return nil, errors.New("merchants: Config needs Pool")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
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
	return &Store{pool: cfg.Pool, clock: cfg.Clock, cost: cost, dummy: dummy}, nil
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

// Create makes a merchant with new client credentials and returns the client
// secret, which exists nowhere else afterwards: only its bcrypt hash is
// stored. The audit row (merchant.create) is written in the same
// transaction. Errors: ErrInvalidName, ErrInvalidScopes.
func (s *Store) Create(ctx context.Context, name string, scopes []string) (Merchant, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > 200 {
		return Merchant{}, "", ErrInvalidName
	}
	scopes, err := NormalizeScopes(scopes)
	if err != nil {
		return Merchant{}, "", err
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
		CreatedAt: s.clock.Now().UTC().Truncate(time.Microsecond),
	}
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`INSERT INTO merchants (id, name, scopes, client_id, client_secret_hash, created_at)
			 VALUES ($1, $2, $3, $4, $5, $6)`,
			m.ID, m.Name, m.Scopes, m.ClientID, string(hash), m.CreatedAt); err != nil {
			return fmt.Errorf("insert merchant: %w", err)
		}
		return audit.Write(ctx, tx, audit.Entry{
			MerchantID: m.ID, Actor: actorFrom(ctx), Action: "merchant.create", Subject: m.ID,
			Details: map[string]any{"client_id": m.ClientID, "scopes": m.Scopes},
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

const merchantColumns = `id, name, scopes, client_id, created_at`

// Get returns the merchant with id. Error: ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Merchant, error) {
	if !ids.Valid(IDPrefix, id) {
		return Merchant{}, ErrNotFound
	}
	var m Merchant
	err := s.pool.QueryRow(ctx, `SELECT `+merchantColumns+` FROM merchants WHERE id = $1`, id).
		Scan(&m.ID, &m.Name, &m.Scopes, &m.ClientID, &m.CreatedAt)
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
	outcomeLocked = "locked"
)

// Authenticate checks a client's credentials. An unknown client costs one
// bcrypt comparison like a known one and returns the same error as a wrong
// secret. Every attempt is audited (auth.login). Errors: ErrInvalidClient,
// ErrClientLocked (as *LockedError, also when the secret is right).
func (s *Store) Authenticate(ctx context.Context, clientID, secret string) (Merchant, error) {
	var (
		m      Merchant
		hash   string
		locked *time.Time
	)
	err := s.pool.QueryRow(ctx,
		`SELECT `+merchantColumns+`, client_secret_hash, locked_until FROM merchants WHERE client_id = $1`,
		clientID).Scan(&m.ID, &m.Name, &m.Scopes, &m.ClientID, &m.CreatedAt, &hash, &locked)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(secret))
		// The client id goes into the audit trail only if it looks like
		// one: a caller who swapped id and secret must not leave the secret
		// there.
		subject := ""
		if ids.Valid(ClientIDPrefix, clientID) {
			subject = clientID
		}
		if err := s.auditLogin(ctx, s.pool, "", subject, outcomeFailed, map[string]any{"reason": "unknown_client"}); err != nil {
			return Merchant{}, err
		}
		return Merchant{}, ErrInvalidClient
	}
	if err != nil {
		return Merchant{}, fmt.Errorf("authenticate client: %w", err)
	}

	now := s.clock.Now()
	if locked != nil && now.Before(*locked) {
		// No comparison: a locked client learns nothing about its secret.
		return Merchant{}, s.refuseLocked(ctx, m, *locked)
	}

	// bcrypt compares its hashes in constant time. It ignores input past 72
	// bytes, so longer inputs are refused rather than half-checked (issued
	// secrets are 43 bytes).
	ok := bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)) == nil && len(secret) <= maxSecretLen
	if !ok {
		return Merchant{}, s.loginFailed(ctx, m, now)
	}
	if err := s.loginOK(ctx, m, now); err != nil {
		return Merchant{}, err
	}
	return m, nil
}

// loginOK resets the counter, unless a concurrent failure locked the client
// meanwhile.
func (s *Store) loginOK(ctx context.Context, m Merchant, now time.Time) error {
	var lockedErr error
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`UPDATE merchants SET failed_logins = 0, locked_until = NULL
			 WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2)`, m.ID, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			lockedErr = errLockedMeanwhile
			return nil
		}
		return s.auditLogin(ctx, tx, m.ID, m.ClientID, outcomeOK, nil)
	})
	if err != nil {
		return fmt.Errorf("authenticate client: %w", err)
	}
	if lockedErr != nil {
		return s.refuseLockedNow(ctx, m)
	}
	return nil
}

var errLockedMeanwhile = errors.New("locked meanwhile")

// loginFailed counts a failure and locks the client at MaxFailedLogins, in
// one statement. A lock that has expired starts a new run at 1.
func (s *Store) loginFailed(ctx context.Context, m Merchant, now time.Time) error {
	var (
		failures int
		until    *time.Time
		updated  bool
	)
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			UPDATE merchants SET
			    failed_logins = CASE WHEN locked_until IS NULL THEN failed_logins + 1 ELSE 1 END,
			    locked_until  = CASE WHEN (CASE WHEN locked_until IS NULL THEN failed_logins + 1 ELSE 1 END) >= $3
			                         THEN $4::timestamptz END
			WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2)
			RETURNING failed_logins, locked_until`,
			m.ID, now, MaxFailedLogins, now.Add(LockDuration)).Scan(&failures, &until)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // locked by a concurrent failure
		}
		if err != nil {
			return err
		}
		updated = true
		details := map[string]any{"reason": "wrong_secret", "failed_logins": failures}
		if until != nil {
			details["locked_until"] = until.UTC().Format(time.RFC3339)
		}
		return s.auditLogin(ctx, tx, m.ID, m.ClientID, outcomeFailed, details)
	})
	if err != nil {
		return fmt.Errorf("authenticate client: %w", err)
	}
	if !updated {
		return s.refuseLockedNow(ctx, m)
	}
	return ErrInvalidClient
}

// refuseLockedNow reads the lock a concurrent attempt set and refuses.
func (s *Store) refuseLockedNow(ctx context.Context, m Merchant) error {
	var until *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT locked_until FROM merchants WHERE id = $1`, m.ID).Scan(&until); err != nil {
		return fmt.Errorf("authenticate client: %w", err)
	}
	if until == nil {
		// Locked and unlocked again in between (an expired lock reset by a
		// success): refuse this attempt, and say so in the trail.
		if err := s.auditLogin(ctx, s.pool, m.ID, m.ClientID, outcomeFailed,
			map[string]any{"reason": "concurrent_lock"}); err != nil {
			return err
		}
		return ErrInvalidClient
	}
	return s.refuseLocked(ctx, m, *until)
}

func (s *Store) refuseLocked(ctx context.Context, m Merchant, until time.Time) error {
	if err := s.auditLogin(ctx, s.pool, m.ID, m.ClientID, outcomeLocked,
		map[string]any{"locked_until": until.UTC().Format(time.RFC3339)}); err != nil {
		return err
	}
	return &LockedError{Until: until}
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
