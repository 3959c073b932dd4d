package operators

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Prefixes of operator and session ids (internal/ids).
const (
	IDPrefix        = "op"
	SessionIDPrefix = "ops"
)

// Statuses of operators.status.
const (
	statusActive   = "active"
	statusDisabled = "disabled"
)

// TOTP parameters (RFC 6238 defaults, what every authenticator app reads
// from the URI): SHA-1, 6 digits, 30-second steps, a 160-bit secret, and
// one step of skew either way.
const (
	totpPeriod     = 30
	totpDigits     = otp.DigitsSix
	totpAlgorithm  = otp.AlgorithmSHA1
	totpSecretSize = 20
	totpSkew       = 1
)

// passwordLength is the generated password's length: 24 characters of a
// 56-character alphabet, about 139 bits.
const passwordLength = 24

// passwordAlphabet leaves out characters a person misreads (0/O, 1/l/I).
const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// maxPasswordLen is the longest password compared: bcrypt reads at most 72
// bytes, so a longer one is refused rather than half-checked.
const maxPasswordLen = 72

// Store keeps operators and their sessions in Postgres. It is safe for
// concurrent use.
type Store struct {
	cfg Config

	// dummy is a password hash at the store's cost that no password
	// matches: an unknown name is compared against it, so that it costs
	// what a known one does. Made on the first login, since the CLI never
	// logs in.
	dummyOnce sync.Once
	dummy     []byte
	dummyErr  error
}

// NewStore returns a Store.
func NewStore(cfg Config) (*Store, error) {
	if cfg.Pool == nil || cfg.Sealer == nil {
		return nil, errors.New("operators: Config needs Pool and Sealer")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AbsoluteTimeout == 0 {
		cfg.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if cfg.MaxFailures == 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.Lockout == 0 {
		cfg.Lockout = DefaultLockout
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = DefaultBcryptCost
	}
	switch {
	case cfg.IdleTimeout < time.Second || cfg.AbsoluteTimeout < cfg.IdleTimeout:
		return nil, fmt.Errorf("operators: want 1s ≤ idle timeout (%s) ≤ absolute timeout (%s)", cfg.IdleTimeout, cfg.AbsoluteTimeout)
	case cfg.MaxFailures < 1 || cfg.Lockout < time.Second:
		return nil, fmt.Errorf("operators: want at least 1 failure (%d) and a lockout of at least 1s (%s)", cfg.MaxFailures, cfg.Lockout)
	case cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost:
		return nil, fmt.Errorf("operators: bcrypt cost %d is outside %d..%d", cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	return &Store{cfg: cfg}, nil
}

// EncryptedColumn registers operators.totp_secret_ct for re-encryption
// after a data key rotation (vaultkeys.Config.Columns). Operators belong
// to no merchant: the id stands in for the merchant column.
func EncryptedColumn() vaultkeys.Column {
	return vaultkeys.Column{
		Table: "operators", Key: "id", Merchant: "id", Ciphertext: "totp_secret_ct",
		AAD: func(id, _ string) []byte { return totpAAD(id) },
	}
}

// totpAAD binds a TOTP secret's ciphertext to its operator.
func totpAAD(operatorID string) []byte { return []byte("operator_totp|" + operatorID) }

// normalizeName lowercases name and checks it. Error: ErrInvalidName.
func normalizeName(name string) (string, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || len(name) > 64 {
		return "", ErrInvalidName
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return "", ErrInvalidName
		}
	}
	return name, nil
}

// now is the store's time as Postgres keeps it.
func (s *Store) now() time.Time { return s.cfg.Clock.Now().UTC().Truncate(time.Microsecond) }

// credentials are a new password and TOTP secret: the clear values, shown
// once, and what is stored of them.
type credentials struct {
	password, uri string
	hash          []byte
	secretCT      []byte
}

// newCredentials makes a password and a TOTP secret for the operator id
// named name, the secret sealed in the HSM.
func (s *Store) newCredentials(ctx context.Context, id, name string) (credentials, error) {
	password, err := newPassword()
	if err != nil {
		return credentials{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cfg.BcryptCost)
	if err != nil {
		return credentials{}, fmt.Errorf("hash password: %w", err)
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: s.cfg.Issuer, AccountName: name, Period: totpPeriod, SecretSize: totpSecretSize,
		Digits: totpDigits, Algorithm: totpAlgorithm, Rand: rand.Reader,
	})
	if err != nil {
		return credentials{}, fmt.Errorf("totp secret: %w", err)
	}
	ct, err := s.cfg.Sealer.Encrypt(ctx, []byte(key.Secret()), totpAAD(id))
	if err != nil {
		return credentials{}, fmt.Errorf("seal totp secret: %w", err)
	}
	return credentials{password: password, uri: key.URL(), hash: hash, secretCT: ct}, nil
}

func newPassword() (string, error) {
	b := make([]byte, passwordLength)
	for i := range b {
		// Rejection sampling: a byte above the largest multiple of the
		// alphabet's size would favour its first characters.
		for {
			var c [1]byte
			if _, err := rand.Read(c[:]); err != nil {
				return "", fmt.Errorf("password: %w", err)
			}
			if int(c[0]) < 256-256%len(passwordAlphabet) {
				b[i] = passwordAlphabet[int(c[0])%len(passwordAlphabet)]
				break
			}
		}
	}
	return string(b), nil
}

// Create makes an operator with a new password and TOTP secret, and
// returns them once. actor is who creates it ("cli:alice",
// "operator:op_…"); audited (operator.create). Errors: ErrInvalidName,
// ErrInvalidRole, ErrExists.
func (s *Store) Create(ctx context.Context, name string, role Role, actor string) (Enrolment, error) {
	name, err := normalizeName(name)
	if err != nil {
		return Enrolment{}, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return Enrolment{}, err
	}
	op := Operator{ID: ids.New(IDPrefix), Name: name, Role: role, CreatedAt: s.now()}
	cred, err := s.newCredentials(ctx, op.ID, name)
	if err != nil {
		return Enrolment{}, fmt.Errorf("create operator: %w", err)
	}
	err = db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO operators (id, name, role, status, password_hash, totp_secret_ct, created_at)
			VALUES ($1, $2, $3, 'active', $4, $5, $6)`,
			op.ID, op.Name, string(op.Role), string(cred.hash), cred.secretCT, op.CreatedAt); err != nil {
			if db.IsUniqueViolation(err, "operators_name_key") {
				return ErrExists
			}
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{Actor: actor, Action: "operator.create", Subject: op.ID,
			Details: map[string]any{"name": op.Name, "role": op.Role}})
	})
	if errors.Is(err, ErrExists) {
		return Enrolment{}, err
	}
	if err != nil {
		return Enrolment{}, fmt.Errorf("create operator: %w", err)
	}
	return Enrolment{Operator: op, Password: cred.password, TOTPURI: cred.uri}, nil
}

const operatorColumns = `id, name, role, status, created_at, last_login_at, locked_until`

func scanOperator(row pgx.Row, extra ...any) (Operator, error) {
	var (
		o                  Operator
		role, status       string
		lastLogin, lockedU *time.Time
	)
	if err := row.Scan(append([]any{&o.ID, &o.Name, &role, &status, &o.CreatedAt, &lastLogin, &lockedU}, extra...)...); err != nil {
		return Operator{}, err
	}
	r, err := ParseRole(role)
	if err != nil {
		return Operator{}, fmt.Errorf("operator %s: %w", o.ID, err)
	}
	o.Role = r
	switch status {
	case statusActive:
	case statusDisabled:
		o.Disabled = true
	default:
		return Operator{}, fmt.Errorf("operator %s: unknown status %q", o.ID, status)
	}
	if lastLogin != nil {
		o.LastLoginAt = *lastLogin
	}
	if lockedU != nil {
		o.LockedUntil = *lockedU
	}
	return o, nil
}

// List returns every operator, by name.
func (s *Store) List(ctx context.Context) ([]Operator, error) {
	rows, err := s.cfg.Pool.Query(ctx, `SELECT `+operatorColumns+` FROM operators ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Operator, error) { return scanOperator(r) })
	if err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	return out, nil
}

// Get returns the operator with id. Error: ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Operator, error) {
	if !ids.Valid(IDPrefix, id) {
		return Operator{}, ErrNotFound
	}
	o, err := scanOperator(s.cfg.Pool.QueryRow(ctx, `SELECT `+operatorColumns+` FROM operators WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Operator{}, ErrNotFound
	}
	if err != nil {
		return Operator{}, fmt.Errorf("get operator %s: %w", id, err)
	}
	return o, nil
}

// byName returns the operator named name. Error: ErrNotFound.
func (s *Store) byName(ctx context.Context, name string) (Operator, error) {
	name, err := normalizeName(name)
	if err != nil {
		return Operator{}, ErrNotFound
	}
	o, err := scanOperator(s.cfg.Pool.QueryRow(ctx, `SELECT `+operatorColumns+` FROM operators WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Operator{}, ErrNotFound
	}
	if err != nil {
		return Operator{}, fmt.Errorf("get operator: %w", err)
	}
	return o, nil
}

// endSessions ends the operator's live sessions and says how many.
func endSessions(ctx context.Context, tx pgx.Tx, operatorID string, now time.Time) (int64, error) {
	tag, err := tx.Exec(ctx, `UPDATE operator_sessions SET ended_at = $2 WHERE operator_id = $1 AND ended_at IS NULL`,
		operatorID, now)
	if err != nil {
		return 0, fmt.Errorf("end sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Disable disables the operator named name and ends its sessions; it can
// no longer log in. Disabling a disabled operator is not an error.
// Audited (operator.disable). Error: ErrNotFound.
func (s *Store) Disable(ctx context.Context, name, actor string) error {
	o, err := s.byName(ctx, name)
	if err != nil {
		return err
	}
	now := s.now()
	err = db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var was string
		err := tx.QueryRow(ctx, `
			WITH before AS (SELECT id, status FROM operators WHERE id = $1 FOR UPDATE)
			UPDATE operators o SET status = 'disabled' FROM before WHERE o.id = before.id
			RETURNING before.status`, o.ID).Scan(&was)
		if err != nil {
			return err
		}
		ended, err := endSessions(ctx, tx, o.ID, now)
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{Actor: actor, Action: "operator.disable", Subject: o.ID,
			Details: map[string]any{"name": o.Name, "previous": was, "sessions_ended": ended}})
	})
	if err != nil {
		return fmt.Errorf("disable operator %s: %w", o.ID, err)
	}
	return nil
}

// Reset gives the operator named name a new password and TOTP secret,
// returned once, unlocks it and ends its sessions; the old password and
// codes stop working. A disabled operator stays disabled. Audited
// (operator.reset). Error: ErrNotFound.
func (s *Store) Reset(ctx context.Context, name, actor string) (Enrolment, error) {
	o, err := s.byName(ctx, name)
	if err != nil {
		return Enrolment{}, err
	}
	cred, err := s.newCredentials(ctx, o.ID, o.Name)
	if err != nil {
		return Enrolment{}, fmt.Errorf("reset operator %s: %w", o.ID, err)
	}
	now := s.now()
	err = db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var wasLocked bool
		err := tx.QueryRow(ctx, `
			WITH before AS (SELECT id, locked_until FROM operators WHERE id = $1 FOR UPDATE)
			UPDATE operators o SET password_hash = $2, totp_secret_ct = $3, last_totp_step = 0,
				failed_logins = 0, locked_until = NULL
			FROM before WHERE o.id = before.id
			RETURNING coalesce(before.locked_until > $4, false)`,
			o.ID, string(cred.hash), cred.secretCT, now).Scan(&wasLocked)
		if err != nil {
			return err
		}
		ended, err := endSessions(ctx, tx, o.ID, now)
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{Actor: actor, Action: "operator.reset", Subject: o.ID,
			Details: map[string]any{"name": o.Name, "unlocked": wasLocked, "sessions_ended": ended}})
	})
	if err != nil {
		return Enrolment{}, fmt.Errorf("reset operator %s: %w", o.ID, err)
	}
	o.LockedUntil = time.Time{}
	return Enrolment{Operator: o, Password: cred.password, TOTPURI: cred.uri}, nil
}
