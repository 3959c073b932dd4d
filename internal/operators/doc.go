// Package operators keeps the institution's staff who use the operator
// console (DESIGN.md "Operator console"): their roles, passwords (a slow
// hash), TOTP secrets (encrypted under the data key), failed-login lockout
// and cookie sessions with idle and absolute timeouts.
//
// # Credentials
//
// An operator is created (quickpay operators create, or Store.Create) with
// a generated password of 24 characters (about 139 bits from crypto/rand)
// and a TOTP secret (RFC 6238: SHA-1, 6 digits, 30-second steps, 160
// bits). Both are shown once, in the Enrolment; the password is stored as
// a bcrypt hash at cost 12, the secret sealed in the HSM under the data
// key with the operator id as AAD (EncryptedColumn registers it for
// re-encryption after a rotation). Reset replaces both, unlocks the
// operator and ends its sessions. Names are lowercase logins, unique.
//
// # Login
//
// A login needs the name, the password and the current code (one step of
// skew either way). A code is accepted once: its step must be later than
// the last step accepted (operators.last_totp_step), so a code seen over a
// shoulder or replayed from a proxy log is refused. Opening the secret is
// an audited vault.detokenize; every login attempt is an audited
// operator.login with its outcome, reason and source, never the password,
// code or an unknown name (which may be a password typed in the wrong
// field).
//
// # Lockout
//
// Config.MaxFailures (10) failures in a row, wrong password or wrong code
// alike, lock the operator for Config.Lockout (30 minutes; PCI DSS
// 8.3.4). Each try is counted before the password is compared, in a
// transaction holding the operator's row, so concurrent guesses get
// exactly MaxFailures checks; the try that reaches the cap sets the lock,
// which it lifts itself only if it is right. A right login sets the count
// to zero; a check that fails for the HSM or database gives its try back.
// Locked operators get ErrLocked even with the right credentials, and
// without a password comparison. When a lockout has passed, the count
// starts again from zero. Unknown names cost one bcrypt comparison (against
// a dummy hash) and get ErrBadLogin like a wrong password.
//
// # Sessions
//
// A session's token is 32 random bytes (base64url), held only by the
// cookie; operator_sessions holds its SHA-256, so a copy of the table lets
// no one in. Store.Session is one UPDATE … RETURNING: it finds the session
// by the token's hash, refuses it when ended, idle for Config.IdleTimeout
// (15 minutes), older than Config.AbsoluteTimeout (8 hours) or when its
// operator is disabled, and records the use. Logout, Disable and Reset end
// sessions (ended_at). Each session has its own CSRF token, compared in
// constant time by Session.CheckCSRF.
//
// # Time
//
// Every time (codes' steps, lockouts, timeouts) comes from Config.Clock,
// never from the database's now(), so tests move a fake clock.
package operators
