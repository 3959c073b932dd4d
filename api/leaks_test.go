package api_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/dev/testenv"
)

// allLogs is every log line the package's tests captured (newLogBuf) or
// wrote through slog.Default (TestMain), for the package's leak scan
// (testenv.ScanPackage). TestE2E's own scan also covers the values it
// made up for refusals, which no bank holds.
func allLogs() string {
	var b strings.Builder
	logBufs.Lock()
	defer logBufs.Unlock()
	for _, l := range logBufs.all {
		b.WriteString(l.String())
	}
	return b.String()
}

// TestIdempotentRequestsLeaveNoDigest binds a credit card and confirms it,
// both under Idempotency-Keys, then looks in a pg_dump for unkeyed digests
// of the two bodies (as the idempotency layer stored them before its
// fingerprints were keyed: SHA-256 of method, path and body; a CVV2 and
// expiry, or a code, fall to 10⁵–10⁶ guesses beside the masked PAN), and
// checks DESIGN's rule that a saved answer holds nothing a GET would not
// show: each equals the binding's GET view taken right after it.
func TestIdempotentRequestsLeaveNoDigest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newConformanceServer(t)
	clientID, secret := s.credentials(t, "bind")
	c := apitest.NewClient(t, s.url)
	c = c.WithToken(c.Token(t, clientID, secret))
	a := s.account(t, conformance.NewGen(), "CMB", "credit")
	values := map[string]string{a.CardNumber: "PAN", a.IDNumber: "ID number", a.CVV2: "CVV2", a.Expiry: "expiry"}

	// savedIsGET checks the saved answer of key against GET path.
	savedIsGET := func(key, path string) {
		t.Helper()
		var saved []byte
		if err := s.Pool.QueryRow(ctx, `SELECT response_body FROM idempotency_keys WHERE key = $1`, key).Scan(&saved); err != nil {
			t.Fatalf("the saved answer of %s: %v", key, err)
		}
		get := c.Get(t, path)
		if !get.WantStatus(t, http.StatusOK) {
			t.FailNow()
		}
		var want, got map[string]any
		if err := json.Unmarshal(get.Body, &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(saved, &got); err != nil {
			t.Fatalf("the saved answer of %s is not JSON: %v", key, err)
		}
		if !reflect.DeepEqual(got, want) {
			// Field names only: values may be card data.
			t.Errorf("the saved answer of %s has fields %v, GET %s shows %v (or their values differ)",
				key, slices.Sorted(maps.Keys(got)), path, slices.Sorted(maps.Keys(want)))
		}
	}

	req := bindRequest(a)
	req["external_user_id"] = "user-" + randomHex(t, 6)
	bindBody, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	bindKey := "bind-" + randomHex(t, 8)
	res := c.Post(t, "/v1/bindings", json.RawMessage(bindBody), apitest.IdempotencyKey(bindKey))
	var b bindingAnswer
	if !res.WantStatus(t, http.StatusCreated) || !res.Decode(t, &b) {
		t.FailNow()
	}
	savedIsGET(bindKey, "/v1/bindings/"+b.ID)

	code := s.code(t, a.Phone)
	values[code] = "OTP"
	confirmPath := "/v1/bindings/" + b.ID + "/confirm"
	confirmBody := []byte(`{"otp":"` + code + `"}`)
	confirmKey := "confirm-" + randomHex(t, 8)
	if res := c.Post(t, confirmPath, json.RawMessage(confirmBody), apitest.IdempotencyKey(confirmKey)); !res.WantStatus(t, http.StatusOK) {
		t.FailNow()
	}
	savedIsGET(confirmKey, "/v1/bindings/"+b.ID)

	dump := testenv.PGDump(t)
	for _, key := range []string{bindKey, confirmKey} {
		if !strings.Contains(dump, key) {
			t.Fatalf("the dump lacks key %s: the scan would prove nothing", key)
		}
	}
	scan := testenv.NewDigestScan([]testenv.SentRequest{
		{Method: http.MethodPost, Path: "/v1/bindings", Body: bindBody},
		{Method: http.MethodPost, Path: confirmPath, Body: confirmBody},
	}, values)
	for _, err := range scan.Find("pg_dump", dump) {
		t.Error(err)
	}
}
