package idempotency_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/vaultkeys"
)

// The vault is the Hasher the command wires; the assertion lives here and in
// cmd/quickpay, not in the package, which imports no vaultkeys.
var _ idempotency.Hasher = (*vaultkeys.Vault)(nil)

// newVault is a vault over the package's database and token.
func newVault(t *testing.T) *vaultkeys.Vault {
	t.Helper()
	return newVaultOn(t, testenv.Pool(t), testenv.HSM(t, 2))
}

func newVaultOn(t testing.TB, pool *pgxpool.Pool, hsm *vaultkeys.HSM) *vaultkeys.Vault {
	t.Helper()
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: hsm})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// storedHash is the request_hash of m's key k.
func (h *harness) storedHash(t *testing.T, m tenant, k string) []byte {
	t.Helper()
	var hash []byte
	if err := h.pool.QueryRow(context.Background(),
		`SELECT request_hash FROM idempotency_keys WHERE merchant_id = $1 AND key = $2`, m.id, k).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	return hash
}

// unkeyed is the fingerprint the store kept before it was keyed:
// SHA-256(method ‖ 0 ‖ path ‖ 0 ‖ body).
func unkeyed(method, path, body string) []byte {
	sum := sha256.Sum256([]byte(method + "\x00" + path + "\x00" + body))
	return sum[:]
}

func TestFingerprintIsKeyedAndPerMerchant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, idempotency.Config{}, created)
	a, b := h.newMerchant(t), h.newMerchant(t)
	// Six digits, like a confirm's code: guessable from an unkeyed digest.
	const body = `{"amount":482913}`
	for _, m := range []tenant{a, b} {
		if r := h.post(t, m, key("confirm-1"), body); r.status != http.StatusCreated {
			t.Fatalf("answer = %d %s, want 201", r.status, r.body)
		}
	}
	ha, hb := h.storedHash(t, a, "confirm-1"), h.storedHash(t, b, "confirm-1")
	for _, hash := range [][]byte{ha, hb} {
		if bytes.Equal(hash, unkeyed(http.MethodPost, "/v1/orders", body)) || bytes.Contains(hash, unkeyed(http.MethodPost, "/v1/orders", body)) {
			t.Fatal("request_hash holds SHA-256 of the method, path and body: a code falls to 10^6 guesses")
		}
		if sum := sha256.Sum256([]byte(body)); bytes.Contains(hash, sum[:]) {
			t.Fatal("request_hash holds SHA-256 of the body")
		}
		if v, err := vaultkeys.KeyVersion(hash); err != nil || len(hash) != 37 {
			t.Errorf("request_hash is %d bytes (version %d, %v), want a 37-byte vault fingerprint", len(hash), v, err)
		}
	}
	if bytes.Equal(ha, hb) {
		t.Error("two merchants' equal requests have equal fingerprints: they are not scoped by merchant")
	}
	// And the keyed fingerprint still tells requests apart.
	if r := h.post(t, a, key("confirm-1"), `{"amount":482914}`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("other code under the same key = %d %s, want 422", r.status, r.body)
	}
}

func TestConfigNeedsHasher(t *testing.T) {
	t.Parallel()
	if _, err := idempotency.New(idempotency.Config{Pool: testenv.Pool(t)}); err == nil {
		t.Error("a Config without Hasher was accepted: requests would go unfingerprinted or unkeyed")
	}
}

// TestRetryAfterFPRotation is not parallel: it rotates and retires the fp
// key of the package's database, which tests running beside it use.
func TestRetryAfterFPRotation(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	first := h.post(t, m, key("before-rotation"), `{"amount":7}`)
	if first.status != http.StatusCreated {
		t.Fatalf("first answer = %d %s", first.status, first.body)
	}
	old, err := vaultkeys.KeyVersion(h.storedHash(t, m, "before-rotation"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := h.vault.Rotate(ctx, vaultkeys.PurposeFP, "test")
	if err != nil {
		t.Fatal(err)
	}

	// A retry within the day replays, though its fingerprint is now made
	// under another key; another request under the key is still refused.
	again := h.post(t, m, key("before-rotation"), `{"amount":7}`)
	sameAnswer(t, again, first)
	if !again.replayed() {
		t.Error("the retry after an fp rotation was not a replay")
	}
	if r := h.post(t, m, key("before-rotation"), `{"amount":8}`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("other request after the rotation = %d %s, want 422", r.status, r.body)
	}
	if got, err := vaultkeys.KeyVersion(h.storedHash(t, m, "before-rotation")); err != nil || got != old {
		t.Errorf("the row's fingerprint is now under version %d (%v), want its own %d kept", got, err, old)
	}
	if r := h.post(t, m, key("after-rotation"), `{"amount":7}`); r.status != http.StatusCreated {
		t.Fatalf("new key = %d %s", r.status, r.body)
	}
	if got, err := vaultkeys.KeyVersion(h.storedHash(t, m, "after-rotation")); err != nil || got != pol.Current || got == old {
		t.Errorf("a new key's fingerprint is under version %d (%v), want the current %d", got, err, pol.Current)
	}

	// Once the old version is retired its fingerprints match nothing: the
	// key is refused rather than run again.
	if err := h.vault.SetMinDecryption(ctx, vaultkeys.PurposeFP, pol.Current, "test"); err != nil {
		t.Fatal(err)
	}
	if r := h.post(t, m, key("before-rotation"), `{"amount":7}`); r.status != http.StatusUnprocessableEntity || r.replayed() {
		t.Errorf("retry under a retired fp version = %d replayed=%v %s, want 422", r.status, r.replayed(), r.body)
	}
	if n := h.area.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (one per key)", n)
	}
}

// TestMigrationErasesUnkeyedDigests runs migration 012 again over a row as
// the old code left it, in a transaction it rolls back. Not parallel: the
// transaction locks the table.
func TestMigrationErasesUnkeyedDigests(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, idempotency.Config{}, created)
	m := h.newMerchant(t)
	sql, err := os.ReadFile("../../internal/db/migrations/012_idempotency_keyed_fingerprints.sql")
	if err != nil {
		t.Fatal(err)
	}
	body := `{"amount":9}`
	digest := unkeyed(http.MethodPost, "/v1/orders", body)
	err = pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		// The table as it was before 012.
		if _, err := tx.Exec(ctx, `ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_request_hash_keyed`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO idempotency_keys (merchant_id, key, method, path, request_hash, state,
			                              response_status, response_body, response_type, expires_at)
			VALUES ($1, 'legacy', 'POST', '/v1/orders', $2, 'done', 201, '{"id":"ord_1"}', 'application/json', $3)`,
			m.id, digest, time.Now().Add(time.Hour)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return err
		}
		var hash, saved []byte
		if err := tx.QueryRow(ctx, `SELECT request_hash, response_body FROM idempotency_keys
			WHERE merchant_id = $1 AND key = 'legacy'`, m.id).Scan(&hash, &saved); err != nil {
			return err
		}
		if len(hash) != 0 || saved != nil {
			t.Errorf("after 012 the old row holds a %d-byte request_hash and a %d-byte answer, want both erased", len(hash), len(saved))
		}
		// The constraint is back: nothing unkeyed can be written again.
		_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET request_hash = $2 WHERE merchant_id = $1 AND key = 'legacy'`, m.id, digest)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
			t.Errorf("writing a SHA-256 digest after 012: %v, want a check violation", err)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}

	// A key erased so answers idempotency_key_reused and never runs again.
	if _, err := h.pool.Exec(ctx, `
		INSERT INTO idempotency_keys (merchant_id, key, method, path, request_hash, state, response_status, expires_at)
		VALUES ($1, 'erased', 'POST', '/v1/orders', '\x', 'done', 201, $2)`, m.id, h.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r := h.post(t, m, key("erased"), body)
	if code, _ := r.errorCode(t); r.status != http.StatusUnprocessableEntity || code != "idempotency_key_reused" {
		t.Errorf("retry of an erased key = %d %s, want 422 idempotency_key_reused", r.status, r.body)
	}
	if n := h.area.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for an erased key, want 0", n)
	}
}

var errRollback = errors.New("rollback")
