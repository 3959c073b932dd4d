// Package idempotency implements the API's Idempotency-Key contract
// (DESIGN.md "HTTP API v1"): a Postgres store of keys and saved answers, and
// the echo middleware that uses it. The middleware lives beside its store
// because the two are one mechanism; package api takes it as
// api.Config.Idempotency and never sees SQL.
//
// # The contract
//
// Every POST may carry Idempotency-Key (1–255 printable ASCII characters;
// anything else answers 400 validation_failed, field "Idempotency-Key").
// Keys are per merchant. A key names one request: its method, path and the
// exact bytes of its body, kept only as a keyed fingerprint (see "Request
// fingerprints"). Then:
//
//   - first use: the handler runs once and its answer (status, body,
//     Content-Type) is saved;
//   - same key, same request: the saved answer is replayed byte for byte with
//     the header Idempotent-Replayed: true, and the handler does not run;
//   - same key, different request: 422 idempotency_key_reused;
//   - same key while the first request still runs: the later request waits
//     up to Config.InFlightWait for the answer and replays it; if the first
//     is still running then, 409 idempotency_key_in_use.
//
// Requests without the header, and methods other than POST, pass through.
//
// # Exactly one execution
//
// A request claims its key before the handler runs, with
// INSERT … ON CONFLICT DO NOTHING of an in_flight row; whoever inserts the
// row runs the handler, everyone else reads the row. The handler's answer is
// buffered, saved (state done), and only then sent, so a client that has
// seen an answer always gets the same one back on a retry.
//
// # Answers that are not saved
//
// 5xx and 429 answers mean "nothing was done, try again": their claim is
// deleted, so a retry with the same key runs the handler again. Handlers
// must therefore answer 5xx only when they committed nothing (or when what
// they committed is itself safe to repeat, like a bank order number that is
// queried before any new debit). A panicking handler releases its claim the
// same way. Every other answer, 4xx included, is saved and replayed.
//
// # Sealed answers
//
// An answer a handler marks with api.SealAnswer holds a secret a GET would
// not show (a binding session's link): it is saved encrypted by
// Config.Sealer, bound to its merchant and key, and decrypted to replay.
// Without a Sealer it is not saved, as a 5xx is not.
//
// # Stale claims
//
// A process that dies while a handler runs leaves an in_flight row with no
// owner. A request with the same key and the same body takes such a row over
// once it is older than Config.StaleAfter (5 minutes by default, far beyond
// any request's deadline), and runs the handler again. Each claim is fenced
// by its created_at: a late owner whose row was taken over can neither save
// nor delete it.
//
// # Request fingerprints
//
// Bodies carry card numbers, CVV2, expiry dates, ID numbers and bank codes,
// and a row lives a day beside an answer that may show the masked card
// number: an unkeyed digest of the body would give a CVV2 and expiry away in
// about 10⁵ guesses, and a code in 10⁶. So the stored fingerprint is a MAC
// made in the HSM by Config.Hasher (the vault's fp key, in its own domain),
// over the merchant id, the key, the method, the path and the body, each
// preceded by its length: one merchant's fingerprint says nothing about
// another's, and no two requests share an encoding.
//
// The fingerprint records its key version. A request whose stored
// fingerprint is under an older version (an fp rotation happened since) is
// compared under that version's key, so a retry after a rotation still
// replays; one under a retired version matches nothing, and its key answers
// idempotency_key_reused until it expires. Rows written before fingerprints
// were keyed had theirs erased (migration 012): they too match nothing.
//
// # Retention
//
// Rows live Config.TTL (24 h by default, the documented minimum); an expired
// key is free to be used again at once, and DeleteExpired (or the River
// periodic job CleanupWorker) removes expired rows.
package idempotency

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/clock"
)

// Defaults of Config.
const (
	DefaultTTL          = 24 * time.Hour
	DefaultStaleAfter   = 5 * time.Minute
	DefaultInFlightWait = 3 * time.Second
)

// MaxKeyLength is the longest Idempotency-Key accepted.
const MaxKeyLength = 255

// Config configures a Store.
type Config struct {
	Pool *pgxpool.Pool // Required.
	// Hasher makes the keyed request fingerprints. Required: there is no
	// unkeyed fallback.
	Hasher Hasher
	// Clock dates claims, staleness and expiry. Defaults to clock.System{}.
	Clock clock.Clock
	// TTL is how long a key and its answer are kept. Defaults to 24h; less
	// than 24h is refused (the API promises at least that).
	TTL time.Duration
	// StaleAfter is the age at which an in_flight claim is presumed
	// abandoned (its process died) and may be taken over by the same
	// request. It must exceed the longest a handler can run. Defaults to 5m.
	StaleAfter time.Duration
	// InFlightWait is how long a request whose key is in flight waits for
	// the first request's answer before it answers 409. Defaults to 3s; a
	// negative value answers 409 at once.
	InFlightWait time.Duration
	// Logger reports answers that could not be saved. Defaults to slog.Default().
	Logger *slog.Logger
	// Sealer encrypts the answers handlers mark with SealAnswer (they hold a
	// secret a GET would not show) before they are saved, and decrypts them
	// to replay. Without one, such answers are not saved: a retry runs the
	// handler again.
	Sealer Sealer
}

// Sealer encrypts saved answers bound to aad (the vault's data key).
type Sealer interface {
	SealAnswer(ctx context.Context, answer, aad []byte) ([]byte, error)
	OpenAnswer(ctx context.Context, merchantID string, sealed, aad []byte) ([]byte, error)
}

// Store keeps idempotency keys and their saved answers in Postgres (table
// idempotency_keys). Safe for concurrent use by many processes.
type Store struct {
	cfg Config
	// onWait, if set (by tests), is called once per request that finds its
	// key in flight and starts waiting.
	onWait func()
}

// New returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Pool == nil || cfg.Hasher == nil {
		return nil, errors.New("idempotency: Config needs Pool and Hasher")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < DefaultTTL {
		return nil, fmt.Errorf("idempotency: TTL %s is below the documented minimum of %s", cfg.TTL, DefaultTTL)
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.InFlightWait == 0 {
		cfg.InFlightWait = DefaultInFlightWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Store{cfg: cfg}, nil
}

// Hasher makes and checks keyed request fingerprints in the HSM.
// *vaultkeys.Vault is one (the fp key, domain "idempotency").
type Hasher interface {
	// RequestMAC returns msg's MAC under the current key; the result
	// records the key's version and is never empty.
	RequestMAC(ctx context.Context, msg []byte) ([]byte, error)
	// RequestMACEqual reports whether mac, made by RequestMAC under any
	// key version, is msg's (false when that version is retired).
	RequestMACEqual(ctx context.Context, mac, msg []byte) (bool, error)
}

// Request identifies what a key was used for. Make one with NewRequest.
type Request struct {
	MerchantID string
	Key        string
	Method     string
	Path       string
	msg        []byte // requestMessage of the request
	hash       []byte // Hasher.RequestMAC(msg)
}

// NewRequest fingerprints a request with the Hasher (one HSM operation). Its
// error is the Hasher's.
func (s *Store) NewRequest(ctx context.Context, merchantID, key, method, path string, body []byte) (Request, error) {
	r := Request{MerchantID: merchantID, Key: key, Method: method, Path: path,
		msg: requestMessage(merchantID, key, method, path, body)}
	hash, err := s.cfg.Hasher.RequestMAC(ctx, r.msg)
	if err != nil {
		return Request{}, fmt.Errorf("fingerprint idempotent request: %w", err)
	}
	if len(hash) == 0 {
		return Request{}, errors.New("fingerprint idempotent request: the hasher returned nothing")
	}
	r.hash = hash
	return r, nil
}

// requestMessage is what a request's fingerprint is a MAC of: the merchant
// id, the key, the method, the path and the raw body, each preceded by its
// length (4 bytes, big-endian), so that no two requests share an encoding.
// Bodies are compared as bytes: the same JSON with other spacing is another
// request.
func requestMessage(merchantID, key, method, path string, body []byte) []byte {
	fields := [][]byte{[]byte(merchantID), []byte(key), []byte(method), []byte(path), body}
	n := 0
	for _, f := range fields {
		n += 4 + len(f)
	}
	msg := make([]byte, 0, n)
	for _, f := range fields {
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(f)))
		msg = append(msg, f...)
	}
	return msg
}

// sameRequest reports whether stored, a key's fingerprint, is r's.
func (s *Store) sameRequest(ctx context.Context, stored []byte, r Request) (bool, error) {
	switch {
	case len(stored) == 0:
		return false, nil // erased by migration 012: matches nothing
	case subtle.ConstantTimeCompare(stored, r.hash) == 1:
		return true, nil
	}
	// Perhaps made under an older key version: compare under that one.
	same, err := s.cfg.Hasher.RequestMACEqual(ctx, stored, r.msg)
	if err != nil {
		return false, fmt.Errorf("compare idempotent request: %w", err)
	}
	return same, nil
}

// Response is a saved answer.
type Response struct {
	Status      int
	ContentType string
	Body        []byte
	// Sealed: Body is encrypted by Config.Sealer (answerAAD).
	Sealed bool
}

// answerAAD binds a sealed answer to its merchant and key.
func answerAAD(r Request) []byte {
	return []byte("idempotency|" + r.MerchantID + "|" + r.Key)
}

// State is a key's state, mirrored by the CHECK on idempotency_keys.state.
type State string

// States.
const (
	StateInFlight State = "in_flight"
	StateDone     State = "done"
)

// Claim is the outcome of Claim.
type Claim struct {
	// Owned: this request holds the key and must run the handler, then call
	// Save or Release with the claim.
	Owned bool
	// Otherwise the key's current row:
	State    State
	Reused   bool      // the key was used for another request
	Response *Response // the saved answer, when State is done
	token    time.Time // created_at of an owned claim: the fence
}

// Claim tries to take the key for r. It inserts an in_flight row if the key
// is new, or takes over an expired row or a stale in_flight row of the same
// request; otherwise it reports the row as it stands.
func (s *Store) Claim(ctx context.Context, r Request) (Claim, error) {
	if len(r.hash) == 0 {
		return Claim{}, errors.New("claim idempotency key: the Request was not made by NewRequest")
	}
	for range 10 {
		now := s.now()
		expires := now.Add(s.cfg.TTL)
		tag, err := s.cfg.Pool.Exec(ctx, `
			INSERT INTO idempotency_keys (merchant_id, key, method, path, request_hash, state, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, 'in_flight', $6, $7)
			ON CONFLICT (merchant_id, key) DO NOTHING`,
			r.MerchantID, r.Key, r.Method, r.Path, r.hash, now, expires)
		if err != nil {
			return Claim{}, fmt.Errorf("claim idempotency key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return Claim{Owned: true, State: StateInFlight, token: now}, nil
		}
		// Take over an expired row: the key is free again. Concurrent
		// takers serialize on the row lock; the losers re-check the WHERE
		// against the winner's fresh expires_at and update nothing.
		if owned, err := s.takeOver(ctx, r, now, `expires_at <= $6`); err != nil || owned {
			return Claim{Owned: owned, State: StateInFlight, token: now}, err
		}
		var (
			hash      []byte
			state     State
			status    *int32
			body      []byte
			ctype     *string
			sealed    bool
			createdAt time.Time
			expiresAt time.Time
		)
		err = s.cfg.Pool.QueryRow(ctx, `
			SELECT request_hash, state, response_status, response_body, response_type, response_sealed,
			       created_at, expires_at
			  FROM idempotency_keys WHERE merchant_id = $1 AND key = $2`,
			r.MerchantID, r.Key).Scan(&hash, &state, &status, &body, &ctype, &sealed, &createdAt, &expiresAt)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !expiresAt.After(s.now())) {
			continue // released or expired meanwhile: try to claim again
		}
		if err != nil {
			return Claim{}, fmt.Errorf("read idempotency key: %w", err)
		}
		// The fingerprints are compared here rather than in SQL: one made
		// under an older key version is checked under that version's key.
		same, err := s.sameRequest(ctx, hash, r)
		if err != nil {
			return Claim{}, err
		}
		if same && state == StateInFlight && !createdAt.After(now.Add(-s.cfg.StaleAfter)) {
			// An abandoned claim of this same request. The row as read is
			// the fence: if anyone changed it meanwhile, look again.
			owned, err := s.takeOver(ctx, r, now,
				`state = 'in_flight' AND created_at = $8 AND request_hash = $9`, createdAt, hash)
			if err != nil || owned {
				return Claim{Owned: owned, State: StateInFlight, token: now}, err
			}
			continue
		}
		c := Claim{State: state, Reused: !same}
		if state == StateDone && status != nil && same {
			c.Response = &Response{Status: int(*status), Body: body, Sealed: sealed}
			if ctype != nil {
				c.Response.ContentType = *ctype
			}
		}
		return c, nil
	}
	return Claim{}, errors.New("claim idempotency key: the row kept changing")
}

// takeOver makes the key's row an in_flight claim of r dated now, if the
// row meets cond (SQL over $1 merchant, $2 key, $6 now, and extra from $8).
func (s *Store) takeOver(ctx context.Context, r Request, now time.Time, cond string, extra ...any) (bool, error) {
	args := append([]any{r.MerchantID, r.Key, r.Method, r.Path, r.hash, now, now.Add(s.cfg.TTL)}, extra...)
	tag, err := s.cfg.Pool.Exec(ctx, `
		UPDATE idempotency_keys
		   SET method = $3, path = $4, request_hash = $5, state = 'in_flight',
		       response_status = NULL, response_body = NULL, response_type = NULL,
		       created_at = $6, expires_at = $7
		 WHERE merchant_id = $1 AND key = $2 AND `+cond, args...)
	if err != nil {
		return false, fmt.Errorf("take over idempotency key: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Save stores the answer of an owned claim (state done). It reports false if
// the claim was taken over meanwhile, in which case nothing is written.
func (s *Store) Save(ctx context.Context, r Request, c Claim, resp Response) (bool, error) {
	tag, err := s.cfg.Pool.Exec(ctx, `
		UPDATE idempotency_keys
		   SET state = 'done', response_status = $4, response_body = $5, response_type = NULLIF($6, ''),
		       response_sealed = $7
		 WHERE merchant_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $3`,
		r.MerchantID, r.Key, c.token, resp.Status, resp.Body, resp.ContentType, resp.Sealed)
	if err != nil {
		return false, fmt.Errorf("save idempotent answer: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Release deletes an owned claim, so the next request with the key runs the
// handler. A claim taken over meanwhile is left alone.
func (s *Store) Release(ctx context.Context, r Request, c Claim) error {
	_, err := s.cfg.Pool.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE merchant_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $3`,
		r.MerchantID, r.Key, c.token)
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// cleanupBatch bounds the rows one DELETE removes, so cleanup never holds
// many row locks or one long transaction.
const cleanupBatch = 5000

// DeleteExpired removes expired keys and returns how many. Run it
// periodically (CleanupWorker does, as a River periodic job); correctness
// does not depend on it, since an expired key is free to be claimed anyway.
func (s *Store) DeleteExpired(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.cfg.Pool.Exec(ctx, `
			DELETE FROM idempotency_keys WHERE ctid IN (
				SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)`,
			s.now(), cleanupBatch)
		if err != nil {
			return total, fmt.Errorf("delete expired idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < cleanupBatch {
			return total, nil
		}
	}
}

// now is the clock's time at Postgres precision, so that a claim's
// created_at read back equals the token it was written with.
func (s *Store) now() time.Time {
	return s.cfg.Clock.Now().UTC().Truncate(time.Microsecond)
}
