package vaultkeys

import (
	"context"
	"crypto/hmac"
	"errors"
)

// DomainIdempotency is the fingerprint domain of request MACs: the
// idempotency layer's fingerprint of a POST (merchant, key, method, path and
// body). Request bodies carry card numbers, CVV2, expiry dates, ID numbers
// and bank codes, so the fingerprint that tells a retry from another request
// must be keyed: an unkeyed digest beside the masked PAN of the saved answer
// gives a CVV2 and expiry away in about 10⁵ guesses, and a code in 10⁶.
const DomainIdempotency = "idempotency"

// RequestMAC is the keyed fingerprint of an API request: HMAC-SHA256 in the
// HSM, under the current fp key, of DomainIdempotency ‖ 0 ‖ msg, in the
// fingerprint envelope (0x02 ‖ key version ‖ MAC). It is a domain-separated
// use of the fp key (no domain holds a NUL byte, so no other fingerprint's
// input equals one of these); msg is the caller's unambiguous encoding of the
// request.
func (v *Vault) RequestMAC(ctx context.Context, msg []byte) ([]byte, error) {
	return v.Fingerprint(ctx, DomainIdempotency, msg)
}

// RequestMACEqual reports whether mac, made by RequestMAC under any fp key
// version, is msg's. It recomputes msg's MAC under mac's own version, so a
// request retried after an fp rotation still matches the MAC its first try
// stored; the comparison takes constant time.
//
// A mac under a version below the fp policy's minimum matches nothing
// (false, nil): the key that made it is retired and may be gone, and saying
// "another request" is the answer that never runs a request twice.
//
// Errors: ErrMalformed (not a fingerprint, or a version newer than any
// known), or an HSM or database error.
func (v *Vault) RequestMACEqual(ctx context.Context, mac, msg []byte) (bool, error) {
	ver, err := parseHeader(mac, formatFP)
	if err != nil {
		return false, err
	}
	if err := v.checkVersion(ctx, PurposeFP, ver); err != nil {
		if errors.Is(err, ErrKeyVersionRetired) {
			return false, nil
		}
		return false, err
	}
	want, err := v.fingerprintWith(ctx, ver, DomainIdempotency, msg)
	if err != nil {
		return false, err
	}
	return hmac.Equal(want, mac), nil
}

// SealAnswer encrypts a saved API answer that holds a secret a GET would
// not show (a binding session's link), under the data key, bound to aad
// (the idempotency key's merchant and key): the idempotency store keeps
// nothing a database reader could use.
func (v *Vault) SealAnswer(ctx context.Context, answer, aad []byte) ([]byte, error) {
	return v.Encrypt(ctx, answer, aad)
}

// OpenAnswer decrypts an answer SealAnswer sealed, to replay it to the
// merchant who owns it (audited as vault.detokenize, reason "replay
// idempotent answer").
func (v *Vault) OpenAnswer(ctx context.Context, merchantID string, sealed, aad []byte) ([]byte, error) {
	return v.Decrypt(ctx, sealed, aad, Access{MerchantID: merchantID, Actor: "api:" + merchantID,
		Reason: "replay idempotent answer"})
}
