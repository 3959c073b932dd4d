package vaultkeys

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"regexp"

	"github.com/miekg/pkcs11"
)

// BankKeyLabel is the CKA_LABEL of the RSA-2048 pair that signs requests to
// a bank whose dialect wants RSA signatures: "qp-bank-CCB".
func BankKeyLabel(bankCode string) string { return "qp-bank-" + bankCode }

var bankCodeRE = regexp.MustCompile(`^[A-Z0-9]{2,12}$`)

// EnsureBankKey creates the bank's RSA-2048 signing pair unless the token
// holds it, and reports whether it created it. The private half is
// CKA_SENSITIVE and not CKA_EXTRACTABLE.
func (h *HSM) EnsureBankKey(ctx context.Context, bankCode string) (bool, error) {
	if !bankCodeRE.MatchString(bankCode) {
		return false, fmt.Errorf("bank code %q: want 2–12 capitals or digits", bankCode)
	}
	label := BankKeyLabel(bankCode)
	h.genMu.Lock()
	defer h.genMu.Unlock()
	created := false
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		_, ferr := h.object(s, label, pkcs11.CKO_PRIVATE_KEY)
		if ferr == nil {
			return nil
		}
		if !isNotFound(ferr) {
			return ferr
		}
		id := sha256.Sum256([]byte(label))
		_, _, err := h.p.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
				pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
				pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id[:8]),
			},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
				pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id[:8]),
			})
		if err != nil {
			return fmt.Errorf("hsm: generate %s: %w", label, err)
		}
		created = true
		return nil
	})
	return created, err
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
		key, err := b.hsm.object(s, b.label, pkcs11.CKO_PRIVATE_KEY)
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
// public half as PEM, to register with the bank.
func (h *HSM) BankPublicKeyPEM(ctx context.Context, bankCode string) (string, error) {
	if _, err := h.EnsureBankKey(ctx, bankCode); err != nil {
		return "", err
	}
	return h.BankSigner(bankCode).PublicKeyPEM(ctx)
}
