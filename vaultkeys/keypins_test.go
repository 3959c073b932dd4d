package vaultkeys_test

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/quickpay/quickpay/vaultkeys"
)

// TestKeyUsageIsPinned reads back from SoftHSM that every key quickpay
// creates (data, fingerprint, JWT, bank) has CKA_WRAP, CKA_UNWRAP,
// CKA_DERIVE and CKA_MODIFIABLE false on each of its objects, and that the
// token then refuses to change them.
func TestKeyUsageIsPinned(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	h := v.HSM()
	if _, err := h.EnsureBankKey(ctx, "PINS"); err != nil {
		t.Fatal(err)
	}
	keys, err := v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels := []string{vaultkeys.BankKeyLabel("PINS")}
	for _, k := range keys {
		labels = append(labels, k.Label)
	}
	for _, label := range labels {
		pins, err := h.KeyPins(ctx, label)
		if err != nil {
			t.Fatalf("KeyPins(%s): %v", label, err)
		}
		// A secret key: 4 attributes; a pair: 3 on each half.
		if want := map[bool]int{true: 4, false: 6}[len(pins) == 4]; len(pins) != want {
			t.Errorf("%s: %d attributes read, want 4 (secret) or 6 (pair)", label, len(pins))
		}
		for _, p := range pins {
			if p.Value {
				t.Errorf("%s: %s %s is true, want false", label, p.Object, p.Name)
			}
		}
	}

	// Not modifiable: the token refuses to grant the data key CKA_DERIVE.
	data, err := v.Policy(ctx, vaultkeys.PurposeData)
	if err != nil {
		t.Fatal(err)
	}
	label := vaultkeys.Label(vaultkeys.PurposeData, data.Current)
	err = h.Do(ctx, func(s pkcs11.SessionHandle) error {
		p := h.P11()
		if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		}); err != nil {
			return err
		}
		objs, _, err := p.FindObjects(s, 1)
		if ferr := p.FindObjectsFinal(s); err == nil {
			err = ferr
		}
		if err != nil || len(objs) != 1 {
			t.Fatalf("find %s: %d objects, %v", label, len(objs), err)
		}
		setter, ok := p.(interface {
			SetAttributeValue(pkcs11.SessionHandle, pkcs11.ObjectHandle, []*pkcs11.Attribute) error
		})
		if !ok {
			t.Fatalf("the module (%T) has no SetAttributeValue", p)
		}
		return setter.SetAttributeValue(s, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true)})
	})
	if err == nil {
		t.Errorf("the token let %s be given CKA_DERIVE true", label)
	}
}
