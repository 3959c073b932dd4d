package vaultkeys_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/quickpay/quickpay/vaultkeys"
)

func TestRequestMAC(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, nil, 2)
	msg := []byte(`{"otp":"654321"}`)
	mac, err := v.RequestMAC(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if ver, err := vaultkeys.KeyVersion(mac); err != nil || ver < 1 || len(mac) != 37 {
		t.Errorf("MAC of %d bytes, version %d (%v); want a 37-byte fingerprint envelope", len(mac), ver, err)
	}
	if sum := sha256.Sum256(msg); bytes.Contains(mac, sum[:]) {
		t.Error("the MAC holds SHA-256 of the message")
	}
	// Domain-separated: the same bytes fingerprinted as a card number differ.
	if pan, err := v.Fingerprint(ctx, vaultkeys.DomainPAN, msg); err != nil || bytes.Equal(pan, mac) {
		t.Errorf("a PAN fingerprint of the same bytes equals the request MAC (%v)", err)
	}
	for name, tc := range map[string]struct {
		msg  []byte
		want bool
	}{
		"same message":  {msg, true},
		"other message": {[]byte(`{"otp":"654320"}`), false},
	} {
		if got, err := v.RequestMACEqual(ctx, mac, tc.msg); err != nil || got != tc.want {
			t.Errorf("%s: RequestMACEqual = %v, %v; want %v", name, got, err, tc.want)
		}
	}
	unkeyed := sha256.Sum256(msg)
	if _, err := v.RequestMACEqual(ctx, unkeyed[:], msg); !errors.Is(err, vaultkeys.ErrMalformed) {
		t.Errorf("an unkeyed digest: %v, want ErrMalformed", err)
	}
}
