package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quickpay/quickpay/internal/webhooks/signature"
)

// TestEndpoint: the soak's endpoint counts signed deliveries by event id,
// refuses a picked event's first delivery only, and counts deliveries it
// cannot trust.
func TestEndpoint(t *testing.T) {
	refuseNext := true
	e, err := startEndpoint(func() bool { r := refuseNext; refuseNext = false; return r })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	e.secret = "whsec_test"
	post := func(secret, body string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, e.url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(signature.Header, signature.Sign(secret, time.Now(), []byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, step := range []struct {
		secret, body string
		want         int
	}{
		{"whsec_test", `{"id":"evt_1","type":"charge.succeeded"}`, http.StatusServiceUnavailable}, // refused first
		{"whsec_test", `{"id":"evt_1","type":"charge.succeeded"}`, http.StatusNoContent},          // the retry
		{"whsec_test", `{"id":"evt_2","type":"charge.failed"}`, http.StatusNoContent},
		{"whsec_test", `{"id":"evt_2","type":"charge.failed"}`, http.StatusNoContent}, // at least once
		{"whsec_other", `{"id":"evt_3","type":"charge.failed"}`, http.StatusBadRequest},
		{"whsec_test", `{"type":"charge.failed"}`, http.StatusBadRequest},
	} {
		if got := post(step.secret, step.body); got != step.want {
			t.Errorf("step %d: %d, want %d", i, got, step.want)
		}
	}
	got := e.deliveries()
	if len(got.Received) != 2 || got.Received["evt_1"] != 1 || got.Received["evt_2"] != 2 || got.BadSignatures != 2 {
		t.Errorf("deliveries %+v", got)
	}
	if attempts, refused := e.counts(); attempts != 6 || refused != 1 {
		t.Errorf("%d posts, %d refused; want 6 and 1", attempts, refused)
	}
}
