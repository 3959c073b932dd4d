package operators

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/bcrypt"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Why a login failed, in its audit row.
const (
	reasonUnknown  = "unknown_operator"
	reasonDisabled = "disabled"
	reasonLocked   = "locked"
	reasonPassword = "wrong_password"
	reasonCode     = "wrong_code"
	reasonReplayed = "replayed_code"
	// reasonChanged: the operator was reset or disabled while its login
	// was being checked.
	reasonChanged = "changed_during_login"
)

// tokenBytes is the entropy of a session token and of a CSRF token.
const tokenBytes = 32

// attempt is one login from its reservation to its outcome: the operator
// row as read, the try it reserved, and the verbs that end it (fail,
// succeed). Its audit rows name the source, never the password or code.
type attempt struct {
	s      *Store
	now    time.Time
	source string

	op       Operator
	hash     []byte
	secretCT []byte
	lastStep int64
	// failures is the count after this try's reservation; lockStamp the
	// locked_until this try set by reaching the cap (zero if it did not).
	failures  int
	lockStamp time.Time
}

// Login checks an operator's name, password and current TOTP code, from
// source (an IP address, recorded on the session and in the audit row),
// and starts a session. It returns the session and its token, which only
// the cookie holds. A code is accepted once: its time step must be later
// than the last one accepted. Every attempt is audited (operator.login,
// with its outcome). Errors: ErrBadLogin, ErrLocked (also with the right
// credentials; the Session then holds only the Operator, whose
// LockedUntil says until when).
//
// Each try is counted as a failure before the password is compared (so
// concurrent guesses cannot exceed Config.MaxFailures) and given back only
// by the right credentials, or when the check itself fails (the HSM or the
// database). The try that reaches the cap locks the operator for
// Config.Lockout, unless it is right. When a lockout has passed, the count
// starts again from zero.
//
// Both the password and the code are checked on every try of a known,
// active, unlocked operator, so neither the answer nor its time says which
// was wrong; the audit row does. An unknown name costs one bcrypt
// comparison like a known one.
func (s *Store) Login(ctx context.Context, name, password, code, source string) (Session, string, error) {
	// The try runs to its end (its count, its audit row) whatever the
	// caller does: one who hangs up must not get its try back.
	ctx = context.WithoutCancel(ctx)
	a := &attempt{s: s, now: s.now(), source: source}
	name, err := normalizeName(name)
	if err == nil {
		err = a.reserve(ctx, name)
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidName):
		// The name never goes into the audit trail: a person who typed
		// the password into the name field must not leave it there.
		dummy, err := s.dummyHash()
		if err != nil {
			return Session{}, "", err
		}
		_ = bcrypt.CompareHashAndPassword(dummy, []byte(password))
		return Session{}, "", a.fail(ctx, reasonUnknown)
	case errors.Is(err, errDisabled):
		_ = bcrypt.CompareHashAndPassword(a.hash, []byte(password))
		return Session{}, "", a.fail(ctx, reasonDisabled)
	case errors.Is(err, ErrLocked):
		// Audited by reserve. The operator (its LockedUntil) comes back so
		// that the login page can say when to try again.
		return Session{Operator: a.op}, "", err
	case err != nil:
		return Session{}, "", err
	}

	passwordOK := bcrypt.CompareHashAndPassword(a.hash, []byte(password)) == nil && len(password) <= maxPasswordLen
	step, codeOK, err := a.matchCode(ctx, code)
	if err != nil {
		return Session{}, "", errors.Join(err, a.giveBack(ctx))
	}
	switch {
	case !passwordOK:
		return Session{}, "", a.fail(ctx, reasonPassword)
	case !codeOK:
		return Session{}, "", a.fail(ctx, reasonCode)
	case step <= a.lastStep:
		return Session{}, "", a.fail(ctx, reasonReplayed)
	}
	return a.succeed(ctx, step)
}

var errDisabled = errors.New("operator is disabled")

// dummyHash returns the hash unknown names are compared against, making it
// on first use. It hashes random bytes no password can equal.
func (s *Store) dummyHash() ([]byte, error) {
	s.dummyOnce.Do(func() {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		s.dummy, s.dummyErr = bcrypt.GenerateFromPassword(b, s.cfg.BcryptCost)
	})
	if s.dummyErr != nil {
		return nil, fmt.Errorf("operator login: dummy hash: %w", s.dummyErr)
	}
	return s.dummy, nil
}

// reserve reads the operator named name, refuses it when disabled or
// locked, and otherwise counts this try as a failure, locking the operator
// if the count reaches the cap. Errors: ErrNotFound, errDisabled (a.hash
// set, for a comparison of equal cost), ErrLocked (audited here).
func (a *attempt) reserve(ctx context.Context, name string) error {
	s := a.s
	var locked bool
	err := db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var (
			hash     string
			failures int
			lockedU  *time.Time
		)
		op, err := scanOperator(tx.QueryRow(ctx, `SELECT `+operatorColumns+`,
				password_hash, totp_secret_ct, last_totp_step, failed_logins, locked_until
			FROM operators WHERE name = $1 FOR UPDATE`, name),
			&hash, &a.secretCT, &a.lastStep, &failures, &lockedU)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		a.op, a.hash = op, []byte(hash)
		if op.Disabled {
			return errDisabled
		}
		if lockedU != nil && lockedU.After(a.now) {
			locked = true
			a.failures = failures
			return nil
		}
		if lockedU != nil {
			failures = 0 // the lockout passed: the count starts again
		}
		a.failures = failures + 1
		var until *time.Time
		if a.failures >= s.cfg.MaxFailures {
			a.lockStamp = a.now.Add(s.cfg.Lockout)
			until = &a.lockStamp
		}
		_, err = tx.Exec(ctx, `UPDATE operators SET failed_logins = $2, locked_until = $3 WHERE id = $1`,
			op.ID, a.failures, until)
		return err
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, errDisabled) {
		return err
	}
	if err != nil {
		return fmt.Errorf("operator login: %w", err)
	}
	if locked {
		if err := a.audit(ctx, audit.OutcomeFailed, reasonLocked, nil); err != nil {
			return err
		}
		return ErrLocked
	}
	return nil
}

// matchCode reports whether code is the operator's TOTP code for the
// current step or one either side, and for which step. The secret is
// decrypted (an audited vault.detokenize) even for a code of the wrong
// shape, so the time taken does not tell a malformed code from a wrong one.
func (a *attempt) matchCode(ctx context.Context, code string) (step int64, ok bool, err error) {
	secret, err := a.s.cfg.Sealer.Decrypt(ctx, a.secretCT, totpAAD(a.op.ID), sensitive.Access{
		Actor: a.op.Actor(), Subject: a.op.ID, Reason: "operator login",
	})
	if err != nil {
		return 0, false, fmt.Errorf("operator login: open totp secret of %s: %w", a.op.ID, err)
	}
	defer clear(secret)
	now := a.now.Unix() / totpPeriod
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: totpDigits, Algorithm: totpAlgorithm}
	for st := now - totpSkew; st <= now+totpSkew; st++ {
		want, err := totp.GenerateCodeCustom(string(secret), time.Unix(st*totpPeriod, 0), opts)
		if err != nil {
			return 0, false, fmt.Errorf("operator login: totp of %s: %w", a.op.ID, err)
		}
		// Every step is compared, so the time taken does not say which
		// matched; the latest match wins.
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			step, ok = st, true
		}
	}
	return step, ok, nil
}

// fail audits a failed try and returns ErrBadLogin. The try stays counted.
func (a *attempt) fail(ctx context.Context, reason string) error {
	details := map[string]any{}
	if a.failures > 0 {
		details["failed_logins"] = a.failures
	}
	if !a.lockStamp.IsZero() {
		details["locked_until"] = a.lockStamp
	}
	if err := a.audit(ctx, audit.OutcomeFailed, reason, details); err != nil {
		return err
	}
	return ErrBadLogin
}

// giveBack returns a reserved try when the check itself failed (the HSM or
// the database), so an outage does not lock operators out. It lifts the
// lock only if this try set it.
func (a *attempt) giveBack(ctx context.Context) error {
	_, err := a.s.cfg.Pool.Exec(ctx, `
		UPDATE operators SET failed_logins = greatest(failed_logins - 1, 0),
			locked_until = CASE WHEN locked_until = $2 THEN NULL ELSE locked_until END
		WHERE id = $1`, a.op.ID, nullTime(a.lockStamp))
	if err != nil {
		return fmt.Errorf("operator login: give back the try: %w", err)
	}
	return nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// succeed starts the session of a try whose password and code were right,
// if the operator is still as the try read it: active, with the same
// password, unlocked (or locked by this very try) and with no later code
// accepted meanwhile. It resets the failure count.
func (a *attempt) succeed(ctx context.Context, step int64) (Session, string, error) {
	token, tokenHash, err := newToken()
	if err != nil {
		return Session{}, "", err
	}
	csrf, _, err := newToken()
	if err != nil {
		return Session{}, "", err
	}
	sess := Session{ID: ids.New(SessionIDPrefix), CSRFToken: csrf, CreatedAt: a.now, LastSeenAt: a.now,
		ExpiresAt: a.s.expiry(a.now, a.now)}
	var refused string
	err = db.InTx(ctx, a.s.cfg.Pool, func(tx pgx.Tx) error {
		var (
			hash     string
			status   string
			lastStep int64
			lockedU  *time.Time
		)
		err := tx.QueryRow(ctx, `SELECT password_hash, status, last_totp_step, locked_until
			FROM operators WHERE id = $1 FOR UPDATE`, a.op.ID).Scan(&hash, &status, &lastStep, &lockedU)
		if err != nil {
			return err
		}
		switch {
		case status != statusActive || subtle.ConstantTimeCompare([]byte(hash), a.hash) != 1:
			refused = reasonChanged
			return nil
		case step <= lastStep:
			refused = reasonReplayed
			return nil
		case lockedU != nil && lockedU.After(a.now) && !lockedU.Equal(a.lockStamp):
			refused = reasonLocked
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE operators SET failed_logins = 0, locked_until = NULL,
				last_totp_step = $2, last_login_at = $3 WHERE id = $1`, a.op.ID, step, a.now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO operator_sessions (id, operator_id, token_hash, csrf_token, created_at, last_seen_at, source)
			VALUES ($1, $2, $3, $4, $5, $5, NULLIF($6, ''))`,
			sess.ID, a.op.ID, tokenHash, csrf, a.now, a.source); err != nil {
			return err
		}
		return a.audit(audit.WithExecer(ctx, tx), audit.OutcomeOK, "", map[string]any{"session_id": sess.ID})
	})
	if err != nil {
		return Session{}, "", fmt.Errorf("operator login: %w", err)
	}
	if refused != "" {
		return Session{}, "", a.fail(ctx, refused)
	}
	a.op.LastLoginAt, a.op.LockedUntil = a.now, time.Time{}
	sess.Operator = a.op
	return sess, token, nil
}

// audit writes the try's operator.login row.
func (a *attempt) audit(ctx context.Context, outcome, reason string, details map[string]any) error {
	d := map[string]any{"outcome": outcome}
	for k, v := range details {
		d[k] = v
	}
	if reason != "" {
		d["reason"] = reason
	}
	if a.source != "" {
		d["source"] = a.source
	}
	actor, subject := "operator:unknown", ""
	if a.op.ID != "" {
		actor, subject = a.op.Actor(), a.op.ID
	}
	return audit.Write(ctx, audit.ExecerFrom(ctx, a.s.cfg.Pool), audit.Entry{
		Actor: actor, Action: "operator.login", Subject: subject, Details: d,
	})
}

// newToken returns a random token (base64url of tokenBytes bytes) and its
// SHA-256.
func newToken() (string, []byte, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("session token: %w", err)
	}
	t := base64.RawURLEncoding.EncodeToString(b)
	return t, hashToken(t), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// tokenLen is the length of a token newToken makes.
var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// expiry is when a session created at created and last seen at seen ends
// unless used again.
func (s *Store) expiry(created, seen time.Time) time.Time {
	idle, abs := seen.Add(s.cfg.IdleTimeout), created.Add(s.cfg.AbsoluteTimeout)
	if idle.Before(abs) {
		return idle
	}
	return abs
}

// Session returns the session whose token is token and records that it was
// used now (last_seen_at). Error: ErrNoSession when the token is unknown,
// the session ended or passed its idle or absolute timeout, or its
// operator is disabled.
func (s *Store) Session(ctx context.Context, token string) (Session, error) {
	if len(token) != tokenLen {
		return Session{}, ErrNoSession
	}
	now := s.now()
	return s.sessionFrom(s.cfg.Pool.QueryRow(ctx, `
		UPDATE operator_sessions ss SET last_seen_at = $2
		FROM operators o
		WHERE ss.token_hash = $1 AND ss.ended_at IS NULL AND o.id = ss.operator_id AND o.status = 'active'
			AND ss.last_seen_at > $3 AND ss.created_at > $4
		RETURNING o.id, o.name, o.role, o.status, o.created_at, o.last_login_at, o.locked_until,
			ss.id, ss.csrf_token, ss.created_at, ss.last_seen_at`,
		hashToken(token), now, now.Add(-s.cfg.IdleTimeout), now.Add(-s.cfg.AbsoluteTimeout)))
}

// PeekSession is Session without recording the use: for requests that
// are no sign of a person at work (a page's own polling, such as River's
// UI refreshing its lists every few seconds), which must not keep an idle
// session alive. Error: ErrNoSession, as Session.
func (s *Store) PeekSession(ctx context.Context, token string) (Session, error) {
	if len(token) != tokenLen {
		return Session{}, ErrNoSession
	}
	now := s.now()
	return s.sessionFrom(s.cfg.Pool.QueryRow(ctx, `
		SELECT o.id, o.name, o.role, o.status, o.created_at, o.last_login_at, o.locked_until,
			ss.id, ss.csrf_token, ss.created_at, ss.last_seen_at
		FROM operator_sessions ss JOIN operators o ON o.id = ss.operator_id
		WHERE ss.token_hash = $1 AND ss.ended_at IS NULL AND o.status = 'active'
			AND ss.last_seen_at > $2 AND ss.created_at > $3`,
		hashToken(token), now.Add(-s.cfg.IdleTimeout), now.Add(-s.cfg.AbsoluteTimeout)))
}

// sessionFrom reads a session: its operator's columns, then the session's
// id, CSRF token, creation and last use. Error: ErrNoSession for no row.
func (s *Store) sessionFrom(row pgx.Row) (Session, error) {
	var sess Session
	op, err := scanOperator(row, &sess.ID, &sess.CSRFToken, &sess.CreatedAt, &sess.LastSeenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("operator session: %w", err)
	}
	sess.Operator, sess.ExpiresAt = op, s.expiry(sess.CreatedAt, sess.LastSeenAt)
	return sess, nil
}

// Logout ends the session whose token is token. Audited (operator.logout).
// Error: ErrNoSession when no session that has not ended has that token.
func (s *Store) Logout(ctx context.Context, token string) error {
	if len(token) != tokenLen {
		return ErrNoSession
	}
	now := s.now()
	err := db.InTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var id, operatorID string
		err := tx.QueryRow(ctx, `UPDATE operator_sessions SET ended_at = $2
			WHERE token_hash = $1 AND ended_at IS NULL RETURNING id, operator_id`,
			hashToken(token), now).Scan(&id, &operatorID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoSession
		}
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{Actor: "operator:" + operatorID, Action: "operator.logout",
			Subject: operatorID, Details: map[string]any{"session_id": id}})
	})
	if errors.Is(err, ErrNoSession) {
		return err
	}
	if err != nil {
		return fmt.Errorf("operator logout: %w", err)
	}
	return nil
}
