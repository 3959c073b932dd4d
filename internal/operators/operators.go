package operators

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Role is what an operator may do in the console. Roles are ordered:
// viewer < operator < admin, and each may do what the ones below it may.
type Role string

// Roles, mirrored by the CHECK on operators.role.
const (
	// RoleViewer reads pages (every view of card or member data audited).
	RoleViewer Role = "viewer"
	// RoleOperator also moves money: refund, cancel, release an agreement,
	// redeliver a webhook.
	RoleOperator Role = "operator"
	// RoleAdmin also manages merchants (create, disable, rotate secret).
	RoleAdmin Role = "admin"
)

// ErrInvalidRole: a role other than viewer, operator or admin.
var ErrInvalidRole = errors.New("role must be viewer, operator or admin")

// ParseRole returns the role named s. Error: ErrInvalidRole.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleOperator, RoleAdmin:
		return r, nil
	default:
		return "", fmt.Errorf("%w, not %q", ErrInvalidRole, s)
	}
}

// rank orders the roles; an unknown role ranks below every known one.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	default:
		return 0
	}
}

// AtLeast reports whether r may do what min may (viewer < operator <
// admin). An unknown role is at least nothing, and nothing is at least an
// unknown role.
func (r Role) AtLeast(min Role) bool {
	return r.rank() > 0 && min.rank() > 0 && r.rank() >= min.rank()
}

// Operator is a member of the institution's staff who uses the console.
type Operator struct {
	ID       string // "op_…"
	Name     string // unique; what the operator logs in with
	Role     Role
	Disabled bool
	// CreatedAt is when the operator was created; LastLoginAt when it last
	// logged in (zero if never); LockedUntil until when failed logins lock
	// it (zero or past when not locked).
	CreatedAt, LastLoginAt, LockedUntil time.Time
}

// Actor is the operator as audit rows name it: "operator:op_…".
func (o Operator) Actor() string { return "operator:" + o.ID }

// Enrolment is what Create and Reset return: the operator with its new
// password and TOTP URI (otpauth://), shown once and stored nowhere in
// clear (the password only as a slow hash, the TOTP secret encrypted).
type Enrolment struct {
	Operator Operator
	Password string
	TOTPURI  string
}

// Session is a logged-in operator's console session. The cookie holds its
// token (Login's second result); the database only the token's SHA-256.
type Session struct {
	ID       string // "ops_…"
	Operator Operator
	// CSRFToken is the session's anti-forgery token, which every form
	// carries; check it with CheckCSRF.
	CSRFToken string
	// CreatedAt is the login; LastSeenAt the last request before this one;
	// ExpiresAt when the session ends unless used again (the earlier of the
	// idle and the absolute timeout).
	CreatedAt, LastSeenAt, ExpiresAt time.Time
}

// CheckCSRF reports, in constant time, whether token is the session's
// CSRF token. An empty token never matches.
func (s Session) CheckCSRF(token string) bool {
	return token != "" && s.CSRFToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRFToken)) == 1
}

// Errors returned by Store.
var (
	// ErrBadLogin: an unknown name, a wrong password or a wrong, replayed
	// or stale TOTP code, or a disabled operator; deliberately one error.
	ErrBadLogin = errors.New("operator login failed")
	// ErrLocked: too many failed logins; refused even with the right
	// credentials until the lockout ends.
	ErrLocked = errors.New("operator is locked after too many failed logins")
	// ErrNoSession: the session token is unknown, the session ended or
	// timed out, or its operator is disabled.
	ErrNoSession = errors.New("no such operator session")
	// ErrNotFound: no operator with that id or name.
	ErrNotFound = errors.New("operator not found")
	// ErrExists: an operator with that name exists.
	ErrExists = errors.New("an operator with that name exists")
	// ErrInvalidName: a name that is not 1 to 64 letters, digits, '.', '_',
	// '-' or '@'.
	ErrInvalidName = errors.New("operator name must be 1 to 64 letters, digits, '.', '_', '-' or '@'")
)

// Sealer encrypts TOTP secrets under the data key, in the HSM;
// *vaultkeys.Vault is one.
type Sealer interface {
	Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	// Decrypt audits every call (vault.detokenize).
	Decrypt(ctx context.Context, ct, aad []byte, a sensitive.Access) ([]byte, error)
}

var _ Sealer = (*vaultkeys.Vault)(nil)

// Defaults of Config.
const (
	DefaultIdleTimeout     = 15 * time.Minute
	DefaultAbsoluteTimeout = 8 * time.Hour
	DefaultMaxFailures     = 10 // PCI DSS 8.3.4
	DefaultLockout         = 30 * time.Minute
	DefaultIssuer          = "quickpay"
)

// Config configures a Store.
type Config struct {
	Pool   *pgxpool.Pool // Required.
	Sealer Sealer        // Required.
	// Clock gives the time of logins, sessions and lockouts. Defaults to
	// clock.System.
	Clock clock.Clock
	// IdleTimeout ends a session not used for this long. Defaults to 15m.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after its login, however
	// busy. Defaults to 8h.
	AbsoluteTimeout time.Duration
	// MaxFailures is how many failed logins in a row lock an operator.
	// Defaults to 10.
	MaxFailures int
	// Lockout is how long a locked operator stays locked. Defaults to 30m.
	Lockout time.Duration
	// Issuer is the TOTP issuer authenticator apps show. Defaults to
	// "quickpay".
	Issuer string
	// BcryptCost is the cost of password hashes. Defaults to, and may not
	// be below, 12.
	BcryptCost int
}

// Store keeps operators and their sessions in Postgres. It is safe for
// concurrent use.
type Store struct {
	cfg Config
	// dummy is a password hash at the store's cost that no password
	// matches: an unknown name is compared against it, so it costs what a
	// known one does.
	dummy []byte
}

var errUnimplemented = errors.New("operators: not implemented yet")

// NewStore returns a Store. It computes one bcrypt hash.
func NewStore(cfg Config) (*Store, error) {
	return nil, errUnimplemented
}

// Create makes an operator with a new password and TOTP secret, and
// returns them once. actor is who creates it ("cli:alice",
// "operator:op_…"); audited (operator.create). Errors: ErrInvalidName,
// ErrInvalidRole, ErrExists.
func (s *Store) Create(ctx context.Context, name string, role Role, actor string) (Enrolment, error) {
	return Enrolment{}, errUnimplemented
}

// List returns every operator, by name.
func (s *Store) List(ctx context.Context) ([]Operator, error) {
	return nil, errUnimplemented
}

// Get returns the operator with id. Error: ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Operator, error) {
	return Operator{}, errUnimplemented
}

// Disable disables the operator named name and ends its sessions; it can
// no longer log in. Disabling a disabled operator is not an error.
// Audited (operator.disable). Error: ErrNotFound.
func (s *Store) Disable(ctx context.Context, name, actor string) error {
	return errUnimplemented
}

// Reset gives the operator named name a new password and TOTP secret,
// returned once, unlocks it and ends its sessions; the old password and
// codes stop working. A disabled operator stays disabled. Audited
// (operator.reset). Error: ErrNotFound.
func (s *Store) Reset(ctx context.Context, name, actor string) (Enrolment, error) {
	return Enrolment{}, errUnimplemented
}

// Login checks an operator's name, password and current TOTP code, from
// source (an IP address, recorded on the session and in the audit row),
// and starts a session. It returns the session and its token, which only
// the cookie holds. A code is accepted once: its time step must be later
// than the last one accepted. Every attempt is audited (operator.login,
// with its outcome). Errors: ErrBadLogin, ErrLocked (also with the right
// credentials).
func (s *Store) Login(ctx context.Context, name, password, code, source string) (Session, string, error) {
	return Session{}, "", errUnimplemented
}

// Session returns the session whose token is token and records that it was
// used now (last_seen_at). Error: ErrNoSession when the token is unknown,
// the session ended or passed its idle or absolute timeout, or its
// operator is disabled.
func (s *Store) Session(ctx context.Context, token string) (Session, error) {
	return Session{}, errUnimplemented
}

// Logout ends the session whose token is token. Audited (operator.logout).
// Error: ErrNoSession when there is no live session with that token.
func (s *Store) Logout(ctx context.Context, token string) error {
	return errUnimplemented
}
