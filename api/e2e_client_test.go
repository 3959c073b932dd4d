package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/apitest"
	"github.com/quickpay/quickpay/api/client"
	"github.com/quickpay/quickpay/bankadapters/conformance"
)

// TestE2E's requests go through api/client, the package merchants import,
// so that a bug of the client fails the end-to-end flows. Under it runs
// checkedTransport, which validates every raw answer (the token endpoint's
// too) against api/openapi.yaml as apitest validates its own, and records
// it for the test whose context the request carries.

// exchange is one request through the client and its raw answer.
type exchange struct {
	Method, Path string
	Key          string // the Idempotency-Key sent
	Status       int
	Header       http.Header
	Body         []byte
}

// calls are the exchanges of the requests made with one context from on.
type calls struct {
	t  testing.TB
	mu sync.Mutex
	ex []exchange
}

type callsKey struct{}

// on returns a context for client calls made on behalf of t: their answers'
// validation failures are reported to t, and calls(ctx) lists them.
func on(t testing.TB) context.Context {
	return context.WithValue(context.Background(), callsKey{}, &calls{t: t})
}

// callsOf are the exchanges made with ctx so far, oldest first, but for
// the client's token fetches (validated like the others, not listed).
func callsOf(ctx context.Context) []exchange {
	c, _ := ctx.Value(callsKey{}).(*calls)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []exchange
	for _, ex := range c.ex {
		if ex.Path != api.TokenPath {
			out = append(out, ex)
		}
	}
	return out
}

// checkedTransport sends a request, validates its answer against the
// OpenAPI document (apitest's check) and records it in the request
// context's calls.
type checkedTransport struct {
	doc  *apitest.Client
	next http.RoundTripper
}

func newCheckedTransport(t testing.TB) *checkedTransport {
	t.Helper()
	// Only its Validate is used: the address is never dialled.
	return &checkedTransport{doc: apitest.NewClient(t, "http://openapi.invalid"), next: http.DefaultTransport}
}

func (ct *checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callsKey{}).(*calls)
	if c == nil {
		return nil, fmt.Errorf("%s %s: the request's context comes from no test (use on(t))", req.Method, req.URL.Path)
	}
	resp, err := ct.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := ct.doc.Validate(req.Method, req.URL.RequestURI(), resp.StatusCode, resp.Header, body); err != nil {
		c.t.Errorf("openapi: %s %s → %d (request id %s): %v", req.Method, req.URL.Path, resp.StatusCode,
			resp.Header.Get(echoRequestID), err)
	}
	c.mu.Lock()
	c.ex = append(c.ex, exchange{Method: req.Method, Path: req.URL.Path, Key: req.Header.Get("Idempotency-Key"),
		Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body})
	c.mu.Unlock()
	return resp, nil
}

// tenant is a merchant with its API client (api/client) and, for the few
// requests a typed client cannot send (malformed JSON, unknown or mistyped
// members, oversized bodies), an apitest client holding its token.
type tenant struct {
	id                    string
	api                   *client.Client
	c                     *apitest.Client
	url, clientID, secret string
	transport             *checkedTransport
}

// merchant creates a merchant (merchants.Store.Create) with a client of
// srv; the client fetches its own access tokens from POST /v1/oauth/token.
func (e *e2e) merchant(t *testing.T, srv *testServer) tenant {
	t.Helper()
	m, secret, err := srv.merchants.Create(context.Background(), "e2e merchant", []string{"bind"})
	if err != nil {
		t.Fatal(err)
	}
	raw := apitest.NewClient(t, srv.url)
	te := tenant{id: m.ID, url: srv.url, clientID: m.ClientID, secret: secret, transport: newCheckedTransport(t),
		c: raw.WithToken(raw.Token(t, m.ClientID, secret))}
	te.api = te.client(t, nil)
	return te
}

// client is another client of the tenant's credentials, with cfg's
// changes (retries, waits).
func (m tenant) client(t *testing.T, change func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{BaseURL: m.url, ClientID: m.clientID, ClientSecret: m.secret,
		HTTPClient: &http.Client{Transport: m.transport, Timeout: apitest.Timeout}}
	if change != nil {
		change(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantAPIError fails unless err is a *client.Error with status, code and
// field ("" for none) whose request id is that of an answer ctx saw, in
// its body and its X-Request-Id alike. It returns the error (zero if none).
func wantAPIError(t *testing.T, ctx context.Context, err error, status int, code, field string) client.Error {
	t.Helper()
	var got *client.Error
	if !errors.As(err, &got) {
		t.Errorf("err = %v, want %d %s", err, status, code)
		return client.Error{}
	}
	if got.Status != status || got.Code != code || got.Field != field {
		t.Errorf("%d %q field %q, want %d %q field %q", got.Status, got.Code, got.Field, status, code, field)
	}
	found := false
	for _, ex := range callsOf(ctx) {
		if ex.Status == status && ex.Header.Get(echoRequestID) == got.RequestID &&
			bytes.Contains(ex.Body, []byte(`"request_id":"`+got.RequestID+`"`)) {
			found = true
		}
	}
	if got.RequestID == "" || !found {
		t.Errorf("%s: request id %q is not an answer's X-Request-Id and body request_id", code, got.RequestID)
	}
	return *got
}

// fails is the *client.Error of err, or a zero Error with Status -1.
func fails(err error) client.Error {
	var e *client.Error
	if errors.As(err, &e) {
		return *e
	}
	return client.Error{Status: -1, Message: fmt.Sprint(err)}
}

func ptr[T any](v T) *T { return &v }

// bindReq is the card's binding request, with neither member_id nor
// external_user_id.
func bindReq(a conformance.Account) client.CreateBindingRequest {
	r := client.CreateBindingRequest{HolderName: a.HolderName, IdNumber: a.IDNumber, CardNumber: a.CardNumber, Phone: a.Phone}
	if a.CardType == "credit" {
		r.Expiry, r.Cvv2 = ptr(a.Expiry), ptr(a.CVV2)
	}
	return r
}

// forMember and forUser name the binding's owner.
func forMember(r client.CreateBindingRequest, memberID string) client.CreateBindingRequest {
	r.MemberId = ptr(memberID)
	return r
}

func forUser(r client.CreateBindingRequest, externalID string) client.CreateBindingRequest {
	r.ExternalUserId = ptr(externalID)
	return r
}
