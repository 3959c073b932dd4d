package operators

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
//
// An Enrolment prints (every fmt verb), logs (slog) and marshals to JSON as
// its operator only: the password and URI are read by their fields, where
// they are shown.
type Enrolment struct {
	Operator Operator
	Password string
	TOTPURI  string
}

// enrolmentShown is what an Enrolment prints, logs and marshals as.
type enrolmentShown struct {
	OperatorID string `json:"operator_id"`
	Name       string `json:"name"`
	Role       Role   `json:"role"`
}

func (e Enrolment) shown() enrolmentShown {
	return enrolmentShown{OperatorID: e.Operator.ID, Name: e.Operator.Name, Role: e.Operator.Role}
}

// Format prints the operator, never the password or URI.
func (e Enrolment) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "%+v", e.shown()) }

// LogValue logs the operator, never the password or URI.
func (e Enrolment) LogValue() slog.Value {
	return slog.GroupValue(slog.String("operator_id", e.Operator.ID), slog.String("name", e.Operator.Name),
		slog.String("role", string(e.Operator.Role)))
}

// MarshalJSON marshals the operator, never the password or URI.
func (e Enrolment) MarshalJSON() ([]byte, error) { return json.Marshal(e.shown()) }

// Session is a logged-in operator's console session. The cookie holds its
// token (Login's second result); the database only the token's SHA-256.
type Session struct {
	ID       string // "ops_…"
	Operator Operator
	// CSRFToken is the session's anti-forgery token, which every form
	// carries; check it with CheckCSRF.
	CSRFToken string
	// CreatedAt is the login; LastSeenAt its latest use (for Store.Session,
	// this one); ExpiresAt when it ends unless used again (the earlier of
	// the idle and the absolute timeout).
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
	DefaultBcryptCost      = 12
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
	// BcryptCost is the cost of password hashes. Defaults to 12
	// (DefaultBcryptCost, about a quarter of a second of one core); cmd
	// never sets it. Tests set bcrypt.MinCost, since under the race
	// detector on a shared machine one comparison at 12 takes seconds.
	BcryptCost int
}
