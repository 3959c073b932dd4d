package vaultkeys

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"fmt"
)

// JWK is a public EC key in JSON Web Key form (RFC 7517/7518).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// SignES256 signs a JWS signing input (base64url header "." base64url
// claims) with the current qp-jwt key inside the HSM. It returns the 64-byte
// r ‖ s signature and the key id to put in the header.
func (v *Vault) SignES256(ctx context.Context, signingInput []byte) (sig []byte, kid string, err error) {
	pol, err := v.Policy(ctx, PurposeJWT)
	if err != nil {
		return nil, "", err
	}
	kid = Label(PurposeJWT, pol.Current)
	sig, err = v.hsm.signES256(ctx, kid, signingInput)
	if err != nil {
		return nil, "", fmt.Errorf("sign token: %w", err)
	}
	return sig, kid, nil
}

// PublicKey returns the verification key for kid, if kid names a jwt key
// version that verification still accepts: the current one and the one
// before it (tokens live at most 15 minutes, so that covers a rotation), and
// never one below min_decryption_version.
func (v *Vault) PublicKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	p, ver, err := ParseLabel(kid)
	if err != nil || p != PurposeJWT {
		return nil, fmt.Errorf("unknown key id")
	}
	lo, hi, err := v.jwtWindow(ctx)
	if err != nil {
		return nil, err
	}
	if ver < lo || ver > hi {
		if _, err := v.loadPolicies(ctx); err != nil {
			return nil, err
		}
		if lo, hi, err = v.jwtWindow(ctx); err != nil {
			return nil, err
		}
		if ver < lo || ver > hi {
			return nil, fmt.Errorf("%w: key id %s", ErrKeyVersionRetired, kid)
		}
	}
	v.pubMu.Lock()
	pub, ok := v.pubs[ver]
	v.pubMu.Unlock()
	if ok {
		return pub, nil
	}
	pub, err = v.hsm.ecPublicKey(ctx, kid)
	if err != nil {
		return nil, err
	}
	v.pubMu.Lock()
	v.pubs[ver] = pub
	v.pubMu.Unlock()
	return pub, nil
}

func (v *Vault) jwtWindow(ctx context.Context) (lo, hi int, err error) {
	pol, err := v.Policy(ctx, PurposeJWT)
	if err != nil {
		return 0, 0, err
	}
	return max(pol.MinDecryption, pol.Current-1), pol.Current, nil
}

// JWKs returns the public keys that verification accepts, newest first, for
// /.well-known/jwks.json.
func (v *Vault) JWKs(ctx context.Context) ([]JWK, error) {
	lo, hi, err := v.jwtWindow(ctx)
	if err != nil {
		return nil, err
	}
	var out []JWK
	for ver := hi; ver >= lo; ver-- {
		kid := Label(PurposeJWT, ver)
		pub, err := v.PublicKey(ctx, kid)
		if err != nil {
			return nil, err
		}
		out = append(out, JWK{
			Kty: "EC", Crv: "P-256", Kid: kid, Use: "sig", Alg: "ES256",
			X: base64.RawURLEncoding.EncodeToString(pub.X.FillBytes(make([]byte, 32))),
			Y: base64.RawURLEncoding.EncodeToString(pub.Y.FillBytes(make([]byte, 32))),
		})
	}
	return out, nil
}
