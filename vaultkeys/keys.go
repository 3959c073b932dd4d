package vaultkeys

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/miekg/pkcs11"
)

// Purpose says what a key is for; it is the middle part of its label.
type Purpose string

// The key purposes of DESIGN.md's key hierarchy.
const (
	PurposeData Purpose = "data" // AES-256-GCM of PAN, ID number, name, phone
	PurposeFP   Purpose = "fp"   // HMAC-SHA256 fingerprints
	PurposeJWT  Purpose = "jwt"  // EC P-256 signing of API tokens
)

// Purposes lists every purpose, in a stable order.
var Purposes = []Purpose{PurposeData, PurposeFP, PurposeJWT}

// ParsePurpose checks s names a purpose.
func ParsePurpose(s string) (Purpose, error) {
	for _, p := range Purposes {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown key purpose %q (want data, fp or jwt)", s)
}

// Label is the CKA_LABEL of version v of a purpose's key: "qp-data-v3".
func Label(p Purpose, v int) string { return "qp-" + string(p) + "-v" + strconv.Itoa(v) }

// FirstLabels are the version-1 labels of every purpose: what a new token
// is provisioned with.
func FirstLabels() []string {
	out := make([]string, len(Purposes))
	for i, p := range Purposes {
		out[i] = Label(p, 1)
	}
	return out
}

// ParseLabel splits a label made by Label.
func ParseLabel(label string) (Purpose, int, error) {
	rest, ok := strings.CutPrefix(label, "qp-")
	if !ok {
		return "", 0, fmt.Errorf("label %q: not a quickpay key", label)
	}
	i := strings.LastIndex(rest, "-v")
	if i < 0 {
		return "", 0, fmt.Errorf("label %q: no version", label)
	}
	p, err := ParsePurpose(rest[:i])
	if err != nil {
		return "", 0, err
	}
	v, err := strconv.Atoi(rest[i+2:])
	if err != nil || v < 1 {
		return "", 0, fmt.Errorf("label %q: bad version", label)
	}
	return p, v, nil
}

// oidP256 is the DER encoding of the named curve prime256v1.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// createKey generates the key labelled label on the token: AES-256 for data,
// a 256-bit generic secret for HMAC, an EC P-256 pair for JWT, an RSA-2048
// pair for a bank (qp-bank-<code>). Every secret and private key is
// CKA_SENSITIVE and not CKA_EXTRACTABLE, and every object's usage is
// pinned (pinnedFalse): no key can wrap, unwrap or derive another, and
// none of its attributes can be changed after creation (CKA_MODIFIABLE
// false), so a PIN holder cannot turn a signing key into a wrapping key
// and export the data keys under it.
func createKey(p P11, s pkcs11.SessionHandle, label string) error {
	id := sha256.Sum256([]byte(label))
	common := func(class, keyType uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id[:8]),
		}
	}
	secretAttrs := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
	}
	pins := func(class uint) []*pkcs11.Attribute {
		var out []*pkcs11.Attribute
		for _, t := range pinnedFalse(class) {
			out = append(out, pkcs11.NewAttribute(t, false))
		}
		return out
	}
	secret := func(keyType uint, usage ...*pkcs11.Attribute) []*pkcs11.Attribute {
		a := append(common(pkcs11.CKO_SECRET_KEY, keyType), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32))
		return append(append(append(a, secretAttrs...), pins(pkcs11.CKO_SECRET_KEY)...), usage...)
	}
	pair := func(mech, keyType uint, public ...*pkcs11.Attribute) error {
		pub := append(append(common(pkcs11.CKO_PUBLIC_KEY, keyType), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)), public...)
		priv := append(append(common(pkcs11.CKO_PRIVATE_KEY, keyType), secretAttrs...), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true))
		_, _, err := p.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)},
			append(pub, pins(pkcs11.CKO_PUBLIC_KEY)...), append(priv, pins(pkcs11.CKO_PRIVATE_KEY)...))
		return err
	}

	var err error
	if strings.HasPrefix(label, bankKeyPrefix) {
		err = pair(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKK_RSA,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	} else {
		purpose, _, perr := ParseLabel(label)
		if perr != nil {
			return perr
		}
		switch purpose {
		case PurposeData:
			_, err = p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
				secret(pkcs11.CKK_AES,
					pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
					pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true)))
		case PurposeFP:
			_, err = p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)},
				secret(pkcs11.CKK_GENERIC_SECRET,
					pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
					pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)))
		case PurposeJWT:
			err = pair(pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256))
		}
	}
	if err != nil {
		return fmt.Errorf("hsm: generate %s: %w", label, err)
	}
	return nil
}

// pinnedFalse lists the attributes every object of class is created with
// set to false (createKey). A private key has no CKA_WRAP and a public key
// no CKA_UNWRAP (PKCS#11 §4.8, §4.9): a template naming them is refused.
func pinnedFalse(class uint) []uint {
	switch class {
	case pkcs11.CKO_SECRET_KEY:
		return []uint{pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE, pkcs11.CKA_MODIFIABLE}
	case pkcs11.CKO_PRIVATE_KEY:
		return []uint{pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE, pkcs11.CKA_MODIFIABLE}
	case pkcs11.CKO_PUBLIC_KEY:
		return []uint{pkcs11.CKA_WRAP, pkcs11.CKA_DERIVE, pkcs11.CKA_MODIFIABLE}
	}
	panic(fmt.Sprintf("vaultkeys: no pinned attributes for object class %d", class))
}

// PinnedAttribute is one usage attribute of a key's object as the token
// reports it (KeyPins).
type PinnedAttribute struct {
	Object string // "secret", "private" or "public"
	Name   string // "CKA_WRAP", "CKA_UNWRAP", "CKA_DERIVE", "CKA_MODIFIABLE"
	Value  bool
}

// KeyPins reads back, from the token, the attributes createKey pins false
// on every object of the key labelled label (a versioned key or a bank
// key; for a pair, both halves), for audits and tests. A key created
// before they were pinned shows what it was created with.
func (h *HSM) KeyPins(ctx context.Context, label string) ([]PinnedAttribute, error) {
	class, err := labelClass(label)
	if err != nil {
		return nil, err
	}
	classes := []uint{class}
	if class == pkcs11.CKO_PRIVATE_KEY {
		classes = append(classes, pkcs11.CKO_PUBLIC_KEY)
	}
	names := map[uint]string{pkcs11.CKA_WRAP: "CKA_WRAP", pkcs11.CKA_UNWRAP: "CKA_UNWRAP",
		pkcs11.CKA_DERIVE: "CKA_DERIVE", pkcs11.CKA_MODIFIABLE: "CKA_MODIFIABLE"}
	objects := map[uint]string{pkcs11.CKO_SECRET_KEY: "secret", pkcs11.CKO_PRIVATE_KEY: "private", pkcs11.CKO_PUBLIC_KEY: "public"}
	var out []PinnedAttribute
	err = h.Do(ctx, func(s pkcs11.SessionHandle) error {
		out = out[:0]
		for _, c := range classes {
			o, err := h.object(s, label, c)
			if err != nil {
				return err
			}
			var tmpl []*pkcs11.Attribute
			for _, t := range pinnedFalse(c) {
				tmpl = append(tmpl, pkcs11.NewAttribute(t, nil))
			}
			attrs, err := h.p.GetAttributeValue(s, o, tmpl)
			if err != nil {
				return err
			}
			for _, a := range attrs {
				out = append(out, PinnedAttribute{Object: objects[c], Name: names[a.Type], Value: attrTrue(a)})
			}
		}
		return nil
	})
	return out, err
}

// labelClass is the object class that does the secret work of the key
// labelled label: the private half of a pair, or the secret key.
func labelClass(label string) (uint, error) {
	if strings.HasPrefix(label, bankKeyPrefix) {
		return pkcs11.CKO_PRIVATE_KEY, nil
	}
	purpose, _, err := ParseLabel(label)
	if err != nil {
		return 0, err
	}
	if purpose == PurposeJWT {
		return pkcs11.CKO_PRIVATE_KEY, nil
	}
	return pkcs11.CKO_SECRET_KEY, nil
}

// EnsureKey creates the key labelled label (a versioned key or a bank key)
// unless the token already holds it, and reports whether it created it. It
// is safe to call concurrently in one process; across processes callers
// serialize (Rotate holds a row lock).
func (h *HSM) EnsureKey(ctx context.Context, label string) (created bool, err error) {
	class, err := labelClass(label)
	if err != nil {
		return false, err
	}
	h.genMu.Lock()
	defer h.genMu.Unlock()
	err = h.Do(ctx, func(s pkcs11.SessionHandle) error {
		_, ferr := h.object(s, label, class)
		if ferr == nil {
			return nil
		}
		if !isNotFound(ferr) {
			return ferr
		}
		if gerr := createKey(h.p, s, label); gerr != nil {
			return gerr
		}
		created = true
		return nil
	})
	return created, err
}

const gcmIVSize, gcmTagBits = 12, 128

// sealGCM encrypts plaintext under the AES key labelled label with a fresh
// 12-byte IV and returns IV ‖ ciphertext ‖ tag.
func (h *HSM) sealGCM(ctx context.Context, label string, plaintext, aad []byte) ([]byte, error) {
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	var out []byte
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		key, err := h.workingKey(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
		defer params.Free()
		if err := h.p.EncryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, key); err != nil {
			return err
		}
		ct, err := h.p.Encrypt(s, plaintext)
		if err != nil {
			return err
		}
		out = append(append(make([]byte, 0, len(iv)+len(ct)), iv...), ct...)
		return nil
	})
	return out, err
}

// errDecrypt hides why decryption failed: tag mismatch, wrong AAD and wrong
// key all look the same to a caller, as they should.
var errDecrypt = errors.New("decryption failed: ciphertext or AAD do not authenticate")

// openGCM reverses sealGCM.
func (h *HSM) openGCM(ctx context.Context, label string, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < gcmIVSize+gcmTagBits/8 {
		return nil, errDecrypt
	}
	iv, ct := sealed[:gcmIVSize], sealed[gcmIVSize:]
	var out []byte
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		key, err := h.workingKey(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
		defer params.Free()
		if err := h.p.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, key); err != nil {
			return err
		}
		out, err = h.p.Decrypt(s, ct)
		// A tag that does not verify is CKR_ENCRYPTED_DATA_INVALID by the
		// standard; SoftHSM2 answers CKR_GENERAL_ERROR, which is also what
		// a failing device answers. That one is told apart by a round trip
		// of the same key on the same session: if the HSM seals and opens
		// a probe, it works, and the ciphertext is what failed. Any other
		// code (CKR_DEVICE_ERROR, a lost session…) is an HSM fault, never
		// a tampered ciphertext (Vault.Decrypt's audit class).
		switch {
		case isCode(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID), isCode(err, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE):
			return errDecrypt
		case isCode(err, pkcs11.CKR_GENERAL_ERROR):
			if perr := h.gcmProbe(s, key); perr != nil {
				return fmt.Errorf("%w (and a probe of the key failed: %v)", err, perr)
			}
			return errDecrypt
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// gcmProbe seals and opens a fixed text under key, with a fresh IV: nil if
// the HSM does AES-GCM with it, the HSM's error otherwise.
func (h *HSM) gcmProbe(s pkcs11.SessionHandle, key pkcs11.ObjectHandle) error {
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return err
	}
	probe := []byte("quickpay gcm probe")
	mech := func() ([]*pkcs11.Mechanism, func()) {
		params := pkcs11.NewGCMParams(iv, nil, gcmTagBits)
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, params.Free
	}
	m, free := mech()
	defer free()
	if err := h.p.EncryptInit(s, m, key); err != nil {
		return err
	}
	sealed, err := h.p.Encrypt(s, probe)
	if err != nil {
		return err
	}
	m2, free2 := mech()
	defer free2()
	if err := h.p.DecryptInit(s, m2, key); err != nil {
		return err
	}
	opened, err := h.p.Decrypt(s, sealed)
	if err != nil {
		return err
	}
	if string(opened) != string(probe) {
		return errors.New("probe did not round-trip")
	}
	return nil
}

// hmacSHA256 computes HMAC-SHA256 of data under the secret labelled label.
func (h *HSM) hmacSHA256(ctx context.Context, label string, data []byte) ([]byte, error) {
	var out []byte
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		key, err := h.workingKey(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		if err := h.p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, key); err != nil {
			return err
		}
		out, err = h.p.Sign(s, data)
		return err
	})
	return out, err
}

// signES256 signs the SHA-256 digest of msg with the EC private key labelled
// label and returns r ‖ s, 64 bytes, the JWS ES256 form.
func (h *HSM) signES256(ctx context.Context, label string, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	var out []byte
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		key, err := h.workingKey(s, label, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if err := h.p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, key); err != nil {
			return err
		}
		out, err = h.p.Sign(s, digest[:])
		return err
	})
	return out, err
}

// ecPublicKey reads the public half of the EC pair labelled label.
func (h *HSM) ecPublicKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	var point []byte
	err := h.Do(ctx, func(s pkcs11.SessionHandle) error {
		o, err := h.object(s, label, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		attrs, err := h.p.GetAttributeValue(s, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return err
		}
		point = attrs[0].Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	// CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
	var raw []byte
	if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) != 0 {
		raw = point // some modules return the bare point
	}
	if len(raw) != 65 || raw[0] != 4 {
		return nil, fmt.Errorf("hsm: %s: unexpected EC point encoding", label)
	}
	pub := &ecdsa.PublicKey{
		Curve: elliptic.P256(),
		X:     new(big.Int).SetBytes(raw[1:33]),
		Y:     new(big.Int).SetBytes(raw[33:]),
	}
	if !pub.Curve.IsOnCurve(pub.X, pub.Y) { //nolint:staticcheck // validating bytes from the token
		return nil, fmt.Errorf("hsm: %s: public point not on P-256", label)
	}
	return pub, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrKeyNotFound) }

// KeyAttributes reads CKA_SENSITIVE and CKA_EXTRACTABLE of the secret or
// private key labelled label (a versioned key or a bank key), for audits and
// tests.
func (h *HSM) KeyAttributes(ctx context.Context, label string) (sensitive, extractable bool, err error) {
	class, err := labelClass(label)
	if err != nil {
		return false, false, err
	}
	err = h.Do(ctx, func(s pkcs11.SessionHandle) error {
		o, err := h.object(s, label, class)
		if err != nil {
			return err
		}
		attrs, err := h.p.GetAttributeValue(s, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		})
		if err != nil {
			return err
		}
		sensitive, extractable = attrTrue(attrs[0]), attrTrue(attrs[1])
		return nil
	})
	return sensitive, extractable, err
}
