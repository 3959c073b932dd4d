package vaultkeys_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Test card numbers (Luhn-valid, ICBC and CMB BINs).
const (
	panA = "6222021234567890128"
	panB = "6225881234567894"
)

func newVault(t *testing.T, pool *pgxpool.Pool, poolSize int, cols ...vaultkeys.Column) *vaultkeys.Vault {
	t.Helper()
	if pool == nil {
		pool = testenv.Pool(t)
	}
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: testenv.HSM(t, poolSize), Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

var access = vaultkeys.Access{MerchantID: "mch_test", Actor: "test", Subject: "card_1", Reason: "test"}

func TestEncryptDecrypt(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 4)
	aad := []byte("card_1|mch_test")

	ct, err := v.Encrypt(ctx, []byte(panA), aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte(panA)) || bytes.Contains(ct, []byte(panA[6:])) {
		t.Fatal("ciphertext contains the PAN")
	}
	pol, err := v.Policy(ctx, vaultkeys.PurposeData)
	if err != nil {
		t.Fatal(err)
	}
	if ver, err := vaultkeys.KeyVersion(ct); err != nil || ver != pol.Current {
		t.Fatalf("ciphertext version = %d, %v; want %d", ver, err, pol.Current)
	}

	t.Run("round trip", func(t *testing.T) {
		pt, err := v.Decrypt(ctx, ct, aad, access)
		if err != nil || string(pt) != panA {
			t.Fatalf("Decrypt = %q, %v", pt, err)
		}
	})
	t.Run("same plaintext, fresh IV", func(t *testing.T) {
		ct2, err := v.Encrypt(ctx, []byte(panA), aad)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ct, ct2) {
			t.Fatal("two encryptions of one value are identical")
		}
	})
	for _, tc := range []struct {
		name  string
		ct    func() []byte
		aad   []byte
		want  error
		audit bool
	}{
		{"tampered body", func() []byte { c := bytes.Clone(ct); c[len(c)-20] ^= 1; return c }, aad, vaultkeys.ErrDecrypt, true},
		{"tampered tag", func() []byte { c := bytes.Clone(ct); c[len(c)-1] ^= 0x80; return c }, aad, vaultkeys.ErrDecrypt, true},
		{"tampered IV", func() []byte { c := bytes.Clone(ct); c[6] ^= 1; return c }, aad, vaultkeys.ErrDecrypt, true},
		{"wrong AAD", func() []byte { return ct }, []byte("card_2|mch_test"), vaultkeys.ErrDecrypt, true},
		{"no AAD", func() []byte { return ct }, nil, vaultkeys.ErrDecrypt, true},
		{"truncated", func() []byte { return ct[:10] }, aad, vaultkeys.ErrDecrypt, true},
		{"not a ciphertext", func() []byte { return []byte("hello world") }, aad, vaultkeys.ErrMalformed, true},
		{"unknown version", func() []byte { c := bytes.Clone(ct); c[4] += 9; return c }, aad, vaultkeys.ErrMalformed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := v.Decrypt(ctx, tc.ct(), tc.aad, access)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt = %q, %v; want %v", pt, err, tc.want)
			}
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
		})
	}
	t.Run("access must say who and why", func(t *testing.T) {
		if _, err := v.Decrypt(ctx, ct, aad, vaultkeys.Access{}); err == nil {
			t.Fatal("Decrypt without Actor and Reason succeeded")
		}
	})
}

func TestDecryptIsAudited(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	v := newVault(t, pool, 2)
	subject := fmt.Sprintf("card_audit_%d", time.Now().UnixNano())
	tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(panA), []byte(subject))
	if err != nil {
		t.Fatal(err)
	}
	a := access
	a.Subject = subject
	pan, err := v.DetokenizePAN(ctx, tok.Ciphertext, []byte(subject), a)
	if err != nil || pan.Reveal() != panA {
		t.Fatalf("DetokenizePAN = %v", err)
	}
	if _, err := v.DetokenizePAN(ctx, tok.Ciphertext, []byte("other"), a); !errors.Is(err, vaultkeys.ErrDecrypt) {
		t.Fatalf("wrong AAD: %v", err)
	}
	var ok, failed int
	err = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE details->>'ok' = 'true'), count(*) FILTER (WHERE details->>'ok' = 'false')
		FROM audit_log WHERE action = 'vault.detokenize' AND subject = $1 AND merchant_id = 'mch_test'`, subject).Scan(&ok, &failed)
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || failed != 1 {
		t.Fatalf("audit rows: %d ok, %d failed; want 1 and 1", ok, failed)
	}
}

func TestTokenizePAN(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(panA), []byte("card_1"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Masked != "622202*********0128" || tok.Last4 != "0128" {
		t.Fatalf("masked %q last4 %q", tok.Masked, tok.Last4)
	}
	if _, err := v.TokenizePAN(ctx, sensitive.NewPAN("1234"), nil); err == nil {
		t.Fatal("short PAN tokenized")
	}
}

func TestFingerprints(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	fp := func(domain, s string) []byte {
		t.Helper()
		b, err := v.Fingerprint(ctx, domain, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a1, a2, b := fp(vaultkeys.DomainPAN, panA), fp(vaultkeys.DomainPAN, panA), fp(vaultkeys.DomainPAN, panB)
	if !bytes.Equal(a1, a2) {
		t.Error("fingerprint of one PAN is not stable")
	}
	if bytes.Equal(a1, b) {
		t.Error("two PANs share a fingerprint")
	}
	if bytes.Equal(a1, fp(vaultkeys.DomainIDNumber, panA)) {
		t.Error("domains do not separate fingerprints")
	}
	plain := sha256.Sum256([]byte(panA))
	if bytes.Contains(a1, plain[:]) || len(a1) != 5+32 {
		t.Errorf("fingerprint is an unkeyed hash or has the wrong size (%d)", len(a1))
	}
}

func TestKeysAreSensitiveAndNotExtractable(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	keys, err := v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[vaultkeys.Purpose]bool{}
	for _, k := range keys {
		seen[k.Purpose] = true
		sens, extr, err := v.HSM().KeyAttributes(ctx, k.Label)
		if err != nil {
			t.Fatalf("%s: %v", k.Label, err)
		}
		if !sens || extr {
			t.Errorf("%s: CKA_SENSITIVE=%v CKA_EXTRACTABLE=%v; want true, false", k.Label, sens, extr)
		}
	}
	for _, p := range vaultkeys.Purposes {
		if !seen[p] {
			t.Errorf("no %s key listed", p)
		}
	}
}

func TestSignES256(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	msg := []byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtY2hfMSJ9")
	sig, kid, err := v.SignES256(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := v.PublicKey(ctx, kid)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(msg)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if len(sig) != 64 || !ecdsa.Verify(pub, d[:], r, s) {
		t.Fatal("signature does not verify")
	}
	d[0] ^= 1
	if ecdsa.Verify(pub, d[:], r, s) {
		t.Fatal("signature verifies another message")
	}
	jwks, err := v.JWKs(ctx)
	if err != nil || len(jwks) == 0 || jwks[0].Kid != kid || jwks[0].Crv != "P-256" {
		t.Fatalf("JWKs = %+v, %v", jwks, err)
	}
	if _, err := v.PublicKey(ctx, "qp-data-v1"); err == nil {
		t.Fatal("a data key id was accepted as a signing key")
	}
}

// recordingColumn is a table like the ones binding will register: a row per
// card with its ciphertext and fingerprint.
func recordingTable(t *testing.T, pool *pgxpool.Pool, name string) vaultkeys.Column {
	t.Helper()
	_, err := pool.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE %s (
		id text PRIMARY KEY, merchant_id text NOT NULL, pan_ct bytea NOT NULL, pan_fp bytea NOT NULL)`, name))
	if err != nil {
		t.Fatal(err)
	}
	return vaultkeys.Column{
		Table: name, Key: "id", Ciphertext: "pan_ct", Fingerprint: "pan_fp", FPDomain: vaultkeys.DomainPAN,
		AAD: func(id, merchant string) []byte { return []byte(id + "|" + merchant) },
	}
}

func TestRotationUnderLoad(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	col := recordingTable(t, pool, "rot_cards")
	v := newVault(t, pool, 8, col)

	before, err := v.Policy(ctx, vaultkeys.PurposeData)
	if err != nil {
		t.Fatal(err)
	}
	beforeFP, err := v.Policy(ctx, vaultkeys.PurposeFP)
	if err != nil {
		t.Fatal(err)
	}

	// Writes in the middle of each writer's run race the rotation; the
	// first ones come before it starts and the last ones after it ends, so
	// both versions must show up however the scheduler runs the goroutines.
	const writers, perWriter = 8, 40
	var wg, started sync.WaitGroup
	errs := make(chan error, writers*perWriter+2)
	rotated := make(chan struct{})
	started.Add(writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				switch i {
				case perWriter / 4:
					started.Done()
				case perWriter - 5:
					<-rotated
				}
				id, merchant := fmt.Sprintf("card_%d_%d", w, i), fmt.Sprintf("mch_%d", w%3)
				pan := fmt.Sprintf("622202%013d", w*1000+i)
				tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(pan), col.AAD(id, merchant))
				if err != nil {
					errs <- err // carry on: the rotation waits for every writer
					continue
				}
				if _, err := pool.Exec(ctx, `INSERT INTO rot_cards VALUES ($1, $2, $3, $4)`,
					id, merchant, tok.Ciphertext, tok.Fingerprint); err != nil {
					errs <- err // carry on: the rotation waits for every writer
					continue
				}
			}
		}()
	}
	started.Wait()
	if _, err := v.Rotate(ctx, vaultkeys.PurposeData, "test"); err != nil {
		errs <- err
	}
	if _, err := v.Rotate(ctx, vaultkeys.PurposeFP, "test"); err != nil {
		errs <- err
	}
	close(rotated)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	versions := func(colName string) map[int]int {
		t.Helper()
		rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT qp_key_version(%s), count(*) FROM rot_cards GROUP BY 1`, colName))
		if err != nil {
			t.Fatal(err)
		}
		m := map[int]int{}
		var ver, n int
		if _, err := pgx.ForEachRow(rows, []any{&ver, &n}, func() error { m[ver] = n; return nil }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := versions("pan_ct"); m[before.Current] == 0 || m[before.Current+1] == 0 {
		t.Fatalf("writes before and after the rotation should use both versions, got %v", m)
	}
	checkAll := func() {
		t.Helper()
		rows, err := pool.Query(ctx, `SELECT id, merchant_id, pan_ct, pan_fp FROM rot_cards`)
		if err != nil {
			t.Fatal(err)
		}
		var id, merchant string
		var ct, fp []byte
		n := 0
		_, err = pgx.ForEachRow(rows, []any{&id, &merchant, &ct, &fp}, func() error {
			n++
			pt, err := v.Decrypt(ctx, ct, col.AAD(id, merchant), access)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			fps, err := v.Fingerprints(ctx, vaultkeys.DomainPAN, pt)
			if err != nil {
				return err
			}
			found := false
			for _, f := range fps {
				found = found || bytes.Equal(f, fp)
			}
			if !found {
				return fmt.Errorf("%s: stored fingerprint matches no live version", id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != writers*perWriter {
			t.Fatalf("%d rows, want %d", n, writers*perWriter)
		}
	}
	checkAll()

	if err := v.SetMinDecryption(ctx, vaultkeys.PurposeData, before.Current+1, "test"); !errors.Is(err, vaultkeys.ErrRowsBelowVersion) {
		t.Fatalf("retiring a version still in use: %v", err)
	}
	for _, p := range []vaultkeys.Purpose{vaultkeys.PurposeData, vaultkeys.PurposeFP} {
		if n, err := v.Reencrypt(ctx, p); err != nil || n == 0 {
			t.Fatalf("Reencrypt(%s) = %d, %v", p, n, err)
		}
	}
	if m := versions("pan_ct"); len(m) != 1 || m[before.Current+1] != writers*perWriter {
		t.Fatalf("after re-encryption ciphertext versions = %v", m)
	}
	if m := versions("pan_fp"); len(m) != 1 || m[beforeFP.Current+1] != writers*perWriter {
		t.Fatalf("after re-encryption fingerprint versions = %v", m)
	}
	checkAll()

	// Retire the old version: its ciphertexts no longer decrypt.
	old, err := v.Encrypt(ctx, []byte(panA), []byte("x")) // current version
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Rotate(ctx, vaultkeys.PurposeData, "test"); err != nil {
		t.Fatal(err)
	}
	if n, err := v.Reencrypt(ctx, vaultkeys.PurposeData); err != nil || n != writers*perWriter {
		t.Fatalf("Reencrypt = %d, %v", n, err)
	}
	if err := v.SetMinDecryption(ctx, vaultkeys.PurposeData, before.Current+2, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Decrypt(ctx, old, []byte("x"), access); !errors.Is(err, vaultkeys.ErrKeyVersionRetired) {
		t.Fatalf("retired version decrypted: %v", err)
	}
	checkAll()

	var audits int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action IN ('key.rotate', 'key.retire')`).Scan(&audits); err != nil || audits < 4 {
		t.Fatalf("rotation audit rows = %d, %v", audits, err)
	}
}

func TestBankRSAKey(t *testing.T) {
	ctx := context.Background()
	h := testenv.HSM(t, 2)
	created, err := h.EnsureBankKey(ctx, "CCB")
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.EnsureBankKey(ctx, "CCB")
	if err != nil || again {
		t.Fatalf("second EnsureBankKey created=%v err=%v; want reuse", again, err)
	}
	_ = created // true on a fresh token, false if another test made it first
	if _, err := h.EnsureBankKey(ctx, "ccb; drop"); err == nil {
		t.Fatal("a malformed bank code was accepted")
	}
	sens, extr, err := h.KeyAttributes(ctx, vaultkeys.BankKeyLabel("CCB"))
	if err != nil || !sens || extr {
		t.Fatalf("bank key sensitive=%v extractable=%v err=%v", sens, extr, err)
	}
	signer := h.BankSigner("CCB")
	msg := []byte("amount=100&merchant_no=M1&order_no=o1")
	sig, err := signer.SignSHA256(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	pemText, err := signer.PublicKeyPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		t.Fatal("public key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rpub, ok := pub.(*rsa.PublicKey)
	if !ok || rpub.N.BitLen() != 2048 {
		t.Fatalf("public key %T, want RSA-2048", pub)
	}
	d := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(rpub, crypto.SHA256, d[:], sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	d[0] ^= 1
	if rsa.VerifyPKCS1v15(rpub, crypto.SHA256, d[:], sig) == nil {
		t.Fatal("signature verifies another message")
	}
}
