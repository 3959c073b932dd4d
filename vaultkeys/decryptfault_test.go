package vaultkeys_test

import (
	"context"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/vaultkeys"
)

// faultyHSM is a stand-in P11: the real SoftHSM module, except that every
// C_Decrypt (and, with sealToo, C_Encrypt) answers code. It is a mock of a
// fault that cannot be caused for real: SoftHSM has no failing device.
type faultyHSM struct {
	vaultkeys.P11
	code    uint
	sealToo bool
}

func (f faultyHSM) Decrypt(pkcs11.SessionHandle, []byte) ([]byte, error) {
	return nil, pkcs11.Error(f.code)
}

func (f faultyHSM) Encrypt(s pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if f.sealToo {
		return nil, pkcs11.Error(f.code)
	}
	return f.P11.Encrypt(s, msg)
}

// TestDecryptAuditsTamperingApartFromHSMFaults: vault.detokenize's audit
// row says "not_authentic" for a ciphertext with a flipped byte (real
// SoftHSM) and "hsm_error" for a device fault, including the
// CKR_GENERAL_ERROR that SoftHSM also answers for a bad tag.
func TestDecryptAuditsTamperingApartFromHSMFaults(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	v := newVault(t, pool, 2)
	aad := []byte("card_1|mch_test")
	ct, err := v.Encrypt(ctx, []byte(panA), aad)
	if err != nil {
		t.Fatal(err)
	}
	real := v.HSM().P11()
	faulty := func(code uint, sealToo bool) *vaultkeys.Vault {
		t.Helper()
		h, err := vaultkeys.NewHSM(ctx, faultyHSM{P11: real, code: code, sealToo: sealToo}, vaultkeys.HSMConfig{
			TokenLabel: testenv.SoftHSM(t).Label, PIN: testenv.Secrets(t).PIN(testenv.HSMPINPath, "pin"), PoolSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		fv, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: h})
		if err != nil {
			t.Fatal(err)
		}
		return fv
	}
	tampered := append([]byte(nil), ct...)
	tampered[len(tampered)-3] ^= 0x01

	for _, tc := range []struct {
		name     string
		vault    *vaultkeys.Vault
		ct       []byte
		class    string
		tampered bool
	}{
		{"flipped ciphertext byte", v, tampered, "not_authentic", true},
		{"device error", faulty(pkcs11.CKR_DEVICE_ERROR, false), ct, "hsm_error", false},
		{"device removed", faulty(pkcs11.CKR_DEVICE_REMOVED, false), ct, "hsm_error", false},
		{"general error from a failing device", faulty(pkcs11.CKR_GENERAL_ERROR, true), ct, "hsm_error", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject := ids.New("card")
			a := vaultkeys.Access{MerchantID: "mch_test", Actor: "test", Subject: subject, Reason: "test"}
			pt, err := tc.vault.Decrypt(ctx, tc.ct, aad, a)
			if err == nil || pt != nil {
				t.Fatalf("Decrypt = %d bytes, %v; want an error", len(pt), err)
			}
			if got := errors.Is(err, vaultkeys.ErrDecrypt); got != tc.tampered {
				t.Errorf("errors.Is(err, ErrDecrypt) = %v, want %v (err %v)", got, tc.tampered, err)
			}
			var class string
			if err := pool.QueryRow(ctx, `SELECT details->>'error' FROM audit_log
				WHERE action = 'vault.detokenize' AND subject = $1 AND (details->>'ok')::bool = false`, subject).Scan(&class); err != nil {
				t.Fatalf("audit row: %v", err)
			}
			if class != tc.class {
				t.Errorf("audited error class %q, want %q", class, tc.class)
			}
		})
	}
	// The real path still opens the untampered ciphertext.
	if pt, err := v.Decrypt(ctx, ct, aad, access); err != nil || string(pt) != panA {
		t.Errorf("untampered Decrypt: %v", err)
	}
}
