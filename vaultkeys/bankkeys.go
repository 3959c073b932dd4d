package vaultkeys

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/internal/db"
)

// bankKeyPrefix starts the labels of bank signing keys.
const bankKeyPrefix = "qp-bank-"

// BankKeyLabel is the CKA_LABEL of the RSA-2048 pair that signs requests to
// a bank whose dialect wants RSA signatures: "qp-bank-CCB".
func BankKeyLabel(bankCode string) string { return bankKeyPrefix + bankCode }

var bankCodeRE = regexp.MustCompile(`^[A-Z0-9]{2,12}$`)

// EnsureBankKey creates the bank's RSA-2048 signing pair unless the token
// holds it, and reports whether it created it. The private half is
// CKA_SENSITIVE and not CKA_EXTRACTABLE.
func (h *HSM) EnsureBankKey(ctx context.Context, bankCode string) (bool, error) {
	if !bankCodeRE.MatchString(bankCode) {
		return false, fmt.Errorf("bank code %q: want 2–12 capitals or digits", bankCode)
	}
	return h.EnsureKey(ctx, BankKeyLabel(bankCode))
}

// BankSigner signs a bank's requests inside the HSM.
type BankSigner struct {
	hsm   *HSM
	label string
}

// BankSigner returns the signer for bankCode's key (see EnsureBankKey).
func (h *HSM) BankSigner(bankCode string) *BankSigner {
	return &BankSigner{hsm: h, label: BankKeyLabel(bankCode)}
}

// SignSHA256 returns the RSASSA-PKCS1-v1_5 signature over SHA-256(msg).
func (b *BankSigner) SignSHA256(ctx context.Context, msg []byte) ([]byte, error) {
	var sig []byte
	err := b.hsm.Do(ctx, func(s pkcs11.SessionHandle) error {
		key, err := b.hsm.workingKey(s, b.label, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if err := b.hsm.p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS, nil)}, key); err != nil {
			return err
		}
		sig, err = b.hsm.p.Sign(s, msg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", b.label, err)
	}
	return sig, nil
}

// PublicKeyPEM returns the public half as a PKIX PEM block, to give the bank.
func (b *BankSigner) PublicKeyPEM(ctx context.Context) (string, error) {
	var n, e []byte
	err := b.hsm.Do(ctx, func(s pkcs11.SessionHandle) error {
		o, err := b.hsm.object(s, b.label, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		attrs, err := b.hsm.p.GetAttributeValue(s, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return err
		}
		n, e = attrs[0].Value, attrs[1].Value
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read %s: %w", b.label, err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// BankPublicKeyPEM creates bankCode's signing pair if needed and returns its
// public half as PEM, to register with the bank. Two callers on one token
// may both create the pair (the token then holds two objects of the label,
// and every later use fails): where another process or HSM instance could
// be starting on the same token, use Vault.BankPublicKeyPEM.
func (h *HSM) BankPublicKeyPEM(ctx context.Context, bankCode string) (string, error) {
	if _, err := h.EnsureBankKey(ctx, bankCode); err != nil {
		return "", err
	}
	return h.BankSigner(bankCode).PublicKeyPEM(ctx)
}

// BankPublicKeyPEM is HSM.BankPublicKeyPEM serialized, through a Postgres
// advisory lock, with every other process and HSM instance ensuring the
// same bank key (as Ensure serializes the versioned keys), so a token never
// ends up with two pairs of one label.
func (v *Vault) BankPublicKeyPEM(ctx context.Context, bankCode string) (string, error) {
	err := db.InTx(ctx, v.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('quickpay.keys.bank.' || $1))`, bankCode); err != nil {
			return err
		}
		_, err := v.hsm.EnsureBankKey(ctx, bankCode)
		return err
	})
	if err != nil {
		return "", err
	}
	return v.hsm.BankSigner(bankCode).PublicKeyPEM(ctx)
}
