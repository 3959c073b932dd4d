package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// TestVerifyWebhook checks signatures made by quickpay's own signer.
func TestVerifyWebhook(t *testing.T) {
	t.Parallel()
	const secret = "whsec_0123456789abcdef"
	body := []byte(`{"id":"evt_abcdefghijklmnopqrstuvwx","type":"binding.bound","created_at":"2026-01-02T03:04:05Z","data":{}}`)
	sent := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	header := webhooks.Sign(secret, sent, body)
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-2] = ' '
	tests := []struct {
		name      string
		secret    string
		header    string
		body      []byte
		now       time.Time
		tolerance time.Duration
		want      error
	}{
		{"signed just now", secret, header, body, sent.Add(time.Second), 0, nil},
		{"at the edge of the default window", secret, header, body, sent.Add(5 * time.Minute), 0, nil},
		{"past the default window", secret, header, body, sent.Add(5*time.Minute + time.Second), 0, client.ErrSignatureExpired},
		{"from the future", secret, header, body, sent.Add(-6 * time.Minute), 0, client.ErrSignatureExpired},
		{"within a wider window", secret, header, body, sent.Add(time.Hour), 2 * time.Hour, nil},
		{"tampered body", secret, header, tampered, sent, 0, client.ErrSignatureMismatch},
		{"another secret", "whsec_other", header, body, sent, 0, client.ErrSignatureMismatch},
		{"one of two v1 matches (a rotated secret)", secret, header + ",v1=" + "00ff", body, sent, 0, nil},
		{"unknown schemes ignored", secret, "v0=abc," + header, body, sent, 0, nil},
		{"no v1", secret, "t=1767323045", body, sent, 0, client.ErrSignatureMalformed},
		{"no t", secret, header[len("t=1767323045,"):], body, sent, 0, client.ErrSignatureMalformed},
		{"two t", secret, "t=1," + header, body, sent, 0, client.ErrSignatureMalformed},
		{"v1 not hex", secret, "t=1767323045,v1=zz", body, sent, 0, client.ErrSignatureMalformed},
		{"empty header", secret, "", body, sent, 0, client.ErrSignatureMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := client.VerifyWebhook(tc.secret, tc.header, tc.body, tc.now, tc.tolerance)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("VerifyWebhook = %v, want %v", err, tc.want)
			}
		})
	}
}
