package vaultkeys

import (
	"context"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/miekg/pkcs11"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Errors returned by Vault.
var (
	// ErrKeyVersionRetired: the ciphertext's key version is below the
	// purpose's min_decryption_version.
	ErrKeyVersionRetired = errors.New("key version is retired")
	// ErrMalformed: the bytes are not a vaultkeys ciphertext or fingerprint.
	ErrMalformed = errors.New("malformed ciphertext")
	// ErrDecrypt: the ciphertext or its AAD does not authenticate.
	ErrDecrypt = errDecrypt
	// ErrRowsBelowVersion: SetMinDecryption would strand rows still under an
	// older version; re-encrypt first.
	ErrRowsBelowVersion = errors.New("rows still use an older key version")
)

// Envelope format bytes: the first byte of every ciphertext and fingerprint.
// The next four bytes are the key version, big-endian (SQL: qp_key_version).
const (
	formatCiphertext byte = 0x01
	formatFP         byte = 0x02
	headerSize            = 5
)

// Policy is a purpose's key versions: new writes use Current; decryption
// accepts versions from MinDecryption to Current.
type Policy struct {
	Purpose       Purpose
	Current       int
	MinDecryption int
}

// Column names a table column that holds ciphertext made by Encrypt, so that
// re-encryption after a rotation can find and rewrite it.
type Column struct {
	Table      string // e.g. "cards"
	Key        string // its primary key column
	Merchant   string // its merchant column. Defaults to "merchant_id".
	Ciphertext string // bytea written by Encrypt
	// Fingerprint is an optional bytea column holding Fingerprint(FPDomain,
	// plaintext of Ciphertext); fp rotation recomputes it.
	Fingerprint string
	FPDomain    string
	// AAD rebuilds the AAD the row was encrypted with. Required.
	AAD func(key, merchantID string) []byte
}

// JobInserter enqueues River jobs in a transaction; *river.Client is one.
type JobInserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Config configures a Vault.
type Config struct {
	Pool *pgxpool.Pool // Required.
	HSM  *HSM          // Required.
	// PolicyRefresh is how long a process trusts its cached key policies
	// before reading them again, so that a rotation made elsewhere reaches
	// it. Defaults to 5s.
	PolicyRefresh time.Duration
	// Columns are re-encrypted after data and fp rotations.
	Columns []Column
	// Jobs enqueues the re-encryption job on rotation. Optional: without it
	// Rotate does not enqueue, and Reencrypt must be called directly.
	Jobs JobInserter
}

// Vault is the token vault: encryption, fingerprints and signatures with
// versioned keys that live in the HSM.
type Vault struct {
	cfg Config
	hsm *HSM

	mu         sync.RWMutex
	policies   map[Purpose]Policy
	loadedAt   time.Time
	refreshing atomic.Bool

	pubMu sync.Mutex
	pubs  map[int]*ecdsa.PublicKey
}

// New returns a Vault over cfg's HSM and database. Call Ensure once before use.
func New(cfg Config) (*Vault, error) {
	if cfg.Pool == nil || cfg.HSM == nil {
		return nil, errors.New("vaultkeys: Config needs Pool and HSM")
	}
	if cfg.PolicyRefresh == 0 {
		cfg.PolicyRefresh = 5 * time.Second
	}
	for i := range cfg.Columns {
		c := &cfg.Columns[i]
		if c.Merchant == "" {
			c.Merchant = "merchant_id"
		}
		if c.Table == "" || c.Key == "" || c.Ciphertext == "" || c.AAD == nil {
			return nil, fmt.Errorf("vaultkeys: column %d needs Table, Key, Ciphertext and AAD", i)
		}
	}
	return &Vault{cfg: cfg, hsm: cfg.HSM, pubs: map[int]*ecdsa.PublicKey{}}, nil
}

// HSM returns the session pool, for health checks and metrics.
func (v *Vault) HSM() *HSM { return v.hsm }

// Ensure makes sure every purpose has a policy and its current key exists in
// the HSM, creating version 1 on first run. It is idempotent.
func (v *Vault) Ensure(ctx context.Context) error {
	for _, p := range Purposes {
		err := db.InTx(ctx, v.cfg.Pool, func(tx pgx.Tx) error {
			// Serialize with Rotate and other processes starting up.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('quickpay.keys.' || $1))`, string(p)); err != nil {
				return err
			}
			var cur int
			err := tx.QueryRow(ctx, `SELECT current_version FROM key_policies WHERE purpose = $1`, string(p)).Scan(&cur)
			if errors.Is(err, pgx.ErrNoRows) {
				cur = 1
				if _, err := tx.Exec(ctx,
					`INSERT INTO key_policies (purpose, current_version) VALUES ($1, 1)`, string(p)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx,
					`INSERT INTO key_versions (purpose, version, label) VALUES ($1, 1, $2)`, string(p), Label(p, 1)); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			created, err := v.hsm.EnsureKey(ctx, Label(p, cur))
			if err != nil {
				return err
			}
			if created {
				return audit.Write(ctx, tx, audit.Entry{Actor: "system", Action: "key.create",
					Subject: Label(p, cur), Details: map[string]any{"purpose": p, "version": cur}})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ensure %s key: %w", p, err)
		}
	}
	_, err := v.loadPolicies(ctx)
	return err
}

func (v *Vault) loadPolicies(ctx context.Context) (map[Purpose]Policy, error) {
	rows, err := v.cfg.Pool.Query(ctx, `SELECT purpose, current_version, min_decryption_version FROM key_policies`)
	if err != nil {
		return nil, fmt.Errorf("load key policies: %w", err)
	}
	m := map[Purpose]Policy{}
	var p Policy
	_, err = pgx.ForEachRow(rows, []any{&p.Purpose, &p.Current, &p.MinDecryption}, func() error {
		m[p.Purpose] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load key policies: %w", err)
	}
	v.mu.Lock()
	v.policies, v.loadedAt = m, time.Now()
	v.mu.Unlock()
	return m, nil
}

// Policy returns p's key policy from a cache. A cache older than
// PolicyRefresh is still answered while one background refresh reads the
// database, so callers never wait for a connection here (they may hold
// one already, inside a transaction). Only an empty cache is read inline.
func (v *Vault) Policy(ctx context.Context, p Purpose) (Policy, error) {
	v.mu.RLock()
	pol, ok := v.policies[p]
	fresh := time.Since(v.loadedAt) < v.cfg.PolicyRefresh
	v.mu.RUnlock()
	if ok {
		if !fresh && v.refreshing.CompareAndSwap(false, true) {
			go func() {
				defer v.refreshing.Store(false)
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				_, _ = v.loadPolicies(rctx)
			}()
		}
		return pol, nil
	}
	m, err := v.loadPolicies(ctx)
	if err != nil {
		return Policy{}, err
	}
	if pol, ok = m[p]; !ok {
		return Policy{}, fmt.Errorf("no %s key policy: run `quickpay migrate` and start quickpay once", p)
	}
	return pol, nil
}

// checkVersion refuses versions outside [MinDecryption, Current], reloading
// the policy once when the version is newer than the cache knows.
func (v *Vault) checkVersion(ctx context.Context, p Purpose, ver int) error {
	pol, err := v.Policy(ctx, p)
	if err != nil {
		return err
	}
	if ver > pol.Current {
		if _, err := v.loadPolicies(ctx); err != nil {
			return err
		}
		if pol, err = v.Policy(ctx, p); err != nil {
			return err
		}
	}
	switch {
	case ver < pol.MinDecryption:
		return fmt.Errorf("%w: %s v%d (minimum v%d)", ErrKeyVersionRetired, p, ver, pol.MinDecryption)
	case ver > pol.Current:
		return fmt.Errorf("%w: unknown %s key version %d", ErrMalformed, p, ver)
	}
	return nil
}

func header(format byte, ver int) []byte {
	b := make([]byte, headerSize)
	b[0] = format
	binary.BigEndian.PutUint32(b[1:], uint32(ver))
	return b
}

func parseHeader(b []byte, format byte) (int, error) {
	if len(b) < headerSize || b[0] != format {
		return 0, ErrMalformed
	}
	ver := binary.BigEndian.Uint32(b[1:headerSize])
	if ver == 0 || ver > 1<<20 {
		return 0, ErrMalformed
	}
	return int(ver), nil
}

// KeyVersion returns the key version recorded in a ciphertext or fingerprint.
func KeyVersion(b []byte) (int, error) {
	if len(b) > 0 && b[0] == formatFP {
		return parseHeader(b, formatFP)
	}
	return parseHeader(b, formatCiphertext)
}

// Encrypt seals plaintext with AES-256-GCM under the current data key. The
// result records the key version; aad (e.g. card id + merchant id) binds it
// to its row and must be given again to decrypt.
func (v *Vault) Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	pol, err := v.Policy(ctx, PurposeData)
	if err != nil {
		return nil, err
	}
	return v.encryptWith(ctx, pol.Current, plaintext, aad)
}

func (v *Vault) encryptWith(ctx context.Context, ver int, plaintext, aad []byte) ([]byte, error) {
	sealed, err := v.hsm.sealGCM(ctx, Label(PurposeData, ver), plaintext, aad)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return append(header(formatCiphertext, ver), sealed...), nil
}

// decrypt opens ct without auditing; callers outside this package use
// Decrypt, which audits.
func (v *Vault) decrypt(ctx context.Context, ct, aad []byte) ([]byte, error) {
	ver, err := parseHeader(ct, formatCiphertext)
	if err != nil {
		return nil, err
	}
	if err := v.checkVersion(ctx, PurposeData, ver); err != nil {
		return nil, err
	}
	pt, err := v.hsm.openGCM(ctx, Label(PurposeData, ver), ct[headerSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return pt, nil
}

// Access says who decrypts what and why; it goes to the audit trail.
type Access = sensitive.Access

// Decrypt is the restricted path back to plaintext. It checks the key
// version against the policy and writes an audit row whether or not it
// succeeds.
//
// Errors: ErrMalformed, ErrKeyVersionRetired, ErrDecrypt (tampered
// ciphertext or wrong AAD), or an HSM or database error. The audit row's
// error class tells them apart: "not_authentic" (the ciphertext or its
// AAD failed the tag: tampering, or a row's ciphertext moved to another
// row) is never an HSM fault, which is "hsm_error" (the device or its
// session failed; the ciphertext is not suspected).
func (v *Vault) Decrypt(ctx context.Context, ct, aad []byte, a Access) ([]byte, error) {
	if a.Actor == "" || a.Reason == "" {
		return nil, errors.New("decrypt: Access needs Actor and Reason")
	}
	pt, err := v.decrypt(ctx, ct, aad)
	ver, _ := KeyVersion(ct)
	details := map[string]any{"key_version": ver, "reason": a.Reason, "ok": err == nil}
	if err != nil {
		details["error"] = errorClass(err)
	}
	if aerr := audit.Write(ctx, audit.ExecerFrom(ctx, v.cfg.Pool), audit.Entry{
		MerchantID: a.MerchantID, Actor: a.Actor, Action: "vault.detokenize", Subject: a.Subject, Details: details,
	}); aerr != nil {
		// No plaintext without its audit row (under an audit.Collector,
		// without the caller's Flush of it).
		return nil, aerr
	}
	return pt, err
}

// isHSMError reports an error the PKCS#11 module returned (CKR_DEVICE_ERROR,
// CKR_GENERAL_ERROR that a probe confirmed, a lost session…).
func isHSMError(err error) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe)
}

func errorClass(err error) string {
	switch {
	case errors.Is(err, ErrKeyVersionRetired):
		return "key_version_retired"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrDecrypt):
		return "not_authentic"
	case isHSMError(err):
		return "hsm_error"
	default:
		return "internal"
	}
}

// Fingerprint is HMAC-SHA256 under the current fp key of domain ‖ 0 ‖ value,
// prefixed with its key version. Equal inputs give equal fingerprints within
// a version; domains ("pan", "id_number") keep kinds apart.
func (v *Vault) Fingerprint(ctx context.Context, domain string, value []byte) ([]byte, error) {
	pol, err := v.Policy(ctx, PurposeFP)
	if err != nil {
		return nil, err
	}
	return v.fingerprintWith(ctx, pol.Current, domain, value)
}

// Fingerprints returns value's fingerprint under every fp version still
// accepted, newest first, for lookups while a rotation is re-keying rows.
func (v *Vault) Fingerprints(ctx context.Context, domain string, value []byte) ([][]byte, error) {
	pol, err := v.Policy(ctx, PurposeFP)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for ver := pol.Current; ver >= pol.MinDecryption; ver-- {
		fp, err := v.fingerprintWith(ctx, ver, domain, value)
		if err != nil {
			return nil, err
		}
		out = append(out, fp)
	}
	return out, nil
}

func (v *Vault) fingerprintWith(ctx context.Context, ver int, domain string, value []byte) ([]byte, error) {
	msg := make([]byte, 0, len(domain)+1+len(value))
	msg = append(append(append(msg, domain...), 0), value...)
	mac, err := v.hsm.hmacSHA256(ctx, Label(PurposeFP, ver), msg)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	return append(header(formatFP, ver), mac...), nil
}

// Fingerprint domains.
const (
	DomainPAN      = "pan"
	DomainIDNumber = "id_number"
)

// TokenizedPAN is what the vault keeps and shows of a card number.
type TokenizedPAN struct {
	Ciphertext  []byte // versioned AES-GCM ciphertext
	Fingerprint []byte // versioned HMAC, for duplicate detection
	Masked      string // first 6 and last 4
	Last4       string
}

// TokenizePAN encrypts pan bound to aad and fingerprints it.
func (v *Vault) TokenizePAN(ctx context.Context, pan sensitive.PAN, aad []byte) (TokenizedPAN, error) {
	if len(pan.Reveal()) < 13 {
		return TokenizedPAN{}, errors.New("tokenize: card number too short")
	}
	ct, err := v.Encrypt(ctx, []byte(pan.Reveal()), aad)
	if err != nil {
		return TokenizedPAN{}, err
	}
	fp, err := v.Fingerprint(ctx, DomainPAN, []byte(pan.Reveal()))
	if err != nil {
		return TokenizedPAN{}, err
	}
	return TokenizedPAN{Ciphertext: ct, Fingerprint: fp, Masked: pan.Masked(), Last4: pan.Last4()}, nil
}

// DetokenizePAN decrypts a PAN made by TokenizePAN; it is audited like Decrypt.
func (v *Vault) DetokenizePAN(ctx context.Context, ct, aad []byte, a Access) (sensitive.PAN, error) {
	pt, err := v.Decrypt(ctx, ct, aad, a)
	if err != nil {
		return sensitive.PAN{}, err
	}
	return sensitive.NewPAN(string(pt)), nil
}
