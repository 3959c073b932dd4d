// Package apitest is test support for quickpay's HTTP API: a Client that
// talks to a running server over real HTTP and checks every answer against
// the API's OpenAPI document (api/openapi.yaml), so that a test of any package
// that goes through the API also proves the document right.
//
// Each answer is matched to its documented operation (kin-openapi's
// gorillamux router over the document) and validated with
// openapi3filter.ValidateResponse: the status must be documented for the
// operation (there are no "default" answers), the Content-Type must be one
// the answer documents, documented headers must match their schemas, and the
// body must match its schema (required members, types, enums, patterns,
// formats, and no undocumented members: response objects are
// additionalProperties: false). A mismatch fails the test with t.Errorf
// naming the method, path, status and what is wrong; the request body (which
// may hold card data) and the offending values are never printed.
//
// Clients are safe for concurrent use; every call takes the testing.TB that
// a failure is reported to, so subtests report their own failures.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/quickpay/quickpay/api"
)

// Timeout bounds each request of a Client.
const Timeout = 60 * time.Second

// Client sends requests to one server and validates every answer.
type Client struct {
	base   string // scheme://host[:port][/prefix], without a trailing slash
	http   *http.Client
	router routers.Router
	token  string
	header http.Header
}

// NewClient returns a Client for the server at baseURL (for example an
// httptest.Server's URL). It fails t at once if the document does not load.
func NewClient(t testing.TB, baseURL string) *Client {
	t.Helper()
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		t.Fatalf("apitest: base URL %q is not an absolute URL", baseURL)
	}
	doc, err := api.OpenAPIDocument()
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("apitest: route the OpenAPI document: %v", err)
	}
	return &Client{
		base:   strings.TrimSuffix(baseURL, "/"),
		http:   &http.Client{Timeout: Timeout},
		router: router,
		header: http.Header{},
	}
}

// WithToken returns a copy of c that sends Authorization: Bearer token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// WithHeader returns a copy of c that sends the header on every request.
func (c *Client) WithHeader(key, value string) *Client {
	cp := *c
	cp.header = c.header.Clone()
	cp.header.Set(key, value)
	return &cp
}

// Request is one request. Only Method and Path are required.
type Request struct {
	Method string
	// Path is the path and query, e.g. "/v1/members?external_id=u-1".
	Path string
	// Body is sent as JSON (application/json) unless it is []byte or
	// json.RawMessage (sent as is, for malformed bodies) or url.Values
	// (sent as application/x-www-form-urlencoded). Nil sends no body.
	Body any
	// ContentType overrides the body's Content-Type.
	ContentType string
	// Token is the bearer token; it overrides the client's. NoToken sends
	// none even if the client has one.
	Token   string
	NoToken bool
	// IdempotencyKey is sent as Idempotency-Key when not empty.
	IdempotencyKey string
	// Header holds extra headers; they override the client's.
	Header http.Header
}

// Option adjusts a Request of the shorthand methods.
type Option func(*Request)

// IdempotencyKey sends the Idempotency-Key header.
func IdempotencyKey(key string) Option { return func(r *Request) { r.IdempotencyKey = key } }

// Header sends a header (replacing any value the client would send).
func Header(key, value string) Option {
	return func(r *Request) {
		if r.Header == nil {
			r.Header = http.Header{}
		}
		r.Header.Set(key, value)
	}
}

// Bearer sends token as the bearer token of this request.
func Bearer(token string) Option { return func(r *Request) { r.Token = token } }

// NoToken sends no Authorization header.
func NoToken() Option { return func(r *Request) { r.NoToken = true } }

// ContentType sets the body's Content-Type.
func ContentType(ct string) Option { return func(r *Request) { r.ContentType = ct } }

// Response is a validated answer.
type Response struct {
	Method string
	Path   string // without the query
	Status int    // 0 when the request failed (already reported)
	Header http.Header
	Body   []byte
}

// Get sends GET path.
func (c *Client) Get(t testing.TB, path string, opts ...Option) *Response {
	t.Helper()
	return c.do(t, http.MethodGet, path, nil, opts)
}

// Post sends POST path with body (see Request.Body; nil for none).
func (c *Client) Post(t testing.TB, path string, body any, opts ...Option) *Response {
	t.Helper()
	return c.do(t, http.MethodPost, path, body, opts)
}

// Put sends PUT path with body.
func (c *Client) Put(t testing.TB, path string, body any, opts ...Option) *Response {
	t.Helper()
	return c.do(t, http.MethodPut, path, body, opts)
}

// Delete sends DELETE path.
func (c *Client) Delete(t testing.TB, path string, opts ...Option) *Response {
	t.Helper()
	return c.do(t, http.MethodDelete, path, nil, opts)
}

func (c *Client) do(t testing.TB, method, path string, body any, opts []Option) *Response {
	t.Helper()
	r := Request{Method: method, Path: path, Body: body}
	for _, o := range opts {
		o(&r)
	}
	return c.Do(t, r)
}

// Do sends r, validates the answer against the document (reporting any
// mismatch to t with t.Errorf), and returns it. A request that cannot be
// sent is reported with t.Errorf and returns a Response with Status 0.
func (c *Client) Do(t testing.TB, r Request) *Response {
	t.Helper()
	res := &Response{Method: r.Method, Path: r.Path}
	if i := strings.IndexByte(res.Path, '?'); i >= 0 {
		res.Path = res.Path[:i]
	}
	if !strings.HasPrefix(r.Path, "/") {
		t.Errorf("apitest: %s %s: the path must start with /", r.Method, res.Path)
		return res
	}
	body, ct, err := encodeBody(r.Body)
	if err != nil {
		t.Errorf("apitest: %s %s: encode the request body: %v", r.Method, res.Path, err)
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, c.base+r.Path, body)
	if err != nil {
		t.Errorf("apitest: %s %s: %v", r.Method, res.Path, err)
		return res
	}
	for k, vs := range c.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	if r.ContentType != "" {
		ct = r.ContentType
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	tok := c.token
	if r.Token != "" {
		tok = r.Token
	}
	if tok != "" && !r.NoToken {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if r.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", r.IdempotencyKey)
	}
	for k, vs := range r.Header {
		req.Header[k] = append([]string(nil), vs...)
	}

	hres, err := c.http.Do(req)
	if err != nil {
		// The error names the URL, never the body.
		t.Errorf("apitest: %s %s: %v", r.Method, res.Path, err)
		return res
	}
	defer hres.Body.Close()
	res.Status, res.Header = hres.StatusCode, hres.Header
	if res.Body, err = io.ReadAll(hres.Body); err != nil {
		t.Errorf("apitest: %s %s → %d: read the answer: %v", r.Method, res.Path, res.Status, err)
		return res
	}
	if err := c.validate(r.Method, r.Path, res); err != nil {
		t.Errorf("openapi: %s %s → %d (request id %s): %v", r.Method, res.Path, res.Status,
			res.Header.Get("X-Request-Id"), err)
	}
	return res
}

func encodeBody(v any) (io.Reader, string, error) {
	switch b := v.(type) {
	case nil:
		return nil, "", nil
	case []byte:
		return bytes.NewReader(b), "application/json", nil
	case json.RawMessage:
		return bytes.NewReader(b), "application/json", nil
	case url.Values:
		return strings.NewReader(b.Encode()), "application/x-www-form-urlencoded", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		// json's errors name the type, not the value.
		return nil, "", err
	}
	return bytes.NewReader(b), "application/json", nil
}

// Validate checks one answer (status, headers, body) against the
// document's operation of method and path, as every answer of Do is: the
// status documented for the operation, its Content-Type, headers and body
// schema (closed objects), with the offending values kept out of the
// messages. It serves tests whose requests do not go through Do (a typed
// client's transport).
func (c *Client) Validate(method, path string, status int, header http.Header, body []byte) error {
	return c.validate(method, path, &Response{Status: status, Header: header, Body: body})
}

// validate checks one answer against the operation of method and path.
func (c *Client) validate(method, path string, res *Response) error {
	// The route is looked up on the path alone, so that a base URL's host
	// (or a prefix) does not have to be in the document's servers.
	rreq, err := http.NewRequest(method, path, nil)
	if err != nil {
		return err
	}
	route, params, err := c.router.FindRoute(rreq)
	switch {
	case errors.Is(err, routers.ErrPathNotFound):
		return errors.New("the path is not in the document")
	case errors.Is(err, routers.ErrMethodNotAllowed):
		return fmt.Errorf("the document has no %s operation for this path", method)
	case err != nil:
		return fmt.Errorf("find the route: %w", err)
	}

	resp := route.Operation.Responses.Status(res.Status)
	if resp != nil && resp.Value != nil && len(resp.Value.Content) == 0 && len(res.Body) > 0 {
		return fmt.Errorf("the answer has a body, but %s %s documents none for %d", method, route.Path, res.Status)
	}

	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		// Keep the offending values (and the schema dump) out of messages.
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: rreq, PathParams: params, Route: route, Options: opts,
		},
		Status:  res.Status,
		Header:  res.Header,
		Body:    io.NopCloser(bytes.NewReader(res.Body)),
		Options: opts,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("(operation %s %s) %w", method, route.Path, err)
	}
	return nil
}

// Decode decodes the JSON body into v, reporting a failure to t. It reports
// whether it succeeded.
func (r *Response) Decode(t testing.TB, v any) bool {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Errorf("apitest: %s %s → %d: decode the answer into %T: %v", r.Method, r.Path, r.Status, v, err)
		return false
	}
	return true
}

// APIError is the error object of an error answer, with the request id.
type APIError struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	Field         string `json:"field"`
	AttemptsLeft  *int   `json:"attempts_left"`
	RetryAfter    *int   `json:"retry_after"`
	RequiredScope string `json:"required_scope"`
	RequestID     string `json:"-"`
}

// APIError decodes an error answer; the zero value if the body is not one.
func (r *Response) APIError() APIError {
	var b struct {
		Error     APIError `json:"error"`
		RequestID string   `json:"request_id"`
	}
	if json.Unmarshal(r.Body, &b) != nil {
		return APIError{}
	}
	b.Error.RequestID = b.RequestID
	return b.Error
}

// WantStatus reports to t unless the answer's status is want; the report
// names the error code of an error answer. It reports whether it matched.
func (r *Response) WantStatus(t testing.TB, want int) bool {
	t.Helper()
	if r.Status == want {
		return true
	}
	if code := r.APIError().Code; code != "" {
		t.Errorf("%s %s → %d %s, want %d", r.Method, r.Path, r.Status, code, want)
	} else {
		t.Errorf("%s %s → %d, want %d", r.Method, r.Path, r.Status, want)
	}
	return false
}

// WantError reports to t unless the answer is status with error code code.
// It reports whether it matched.
func (r *Response) WantError(t testing.TB, status int, code string) bool {
	t.Helper()
	got := r.APIError()
	if r.Status == status && got.Code == code {
		return true
	}
	t.Errorf("%s %s → %d %q, want %d %q", r.Method, r.Path, r.Status, got.Code, status, code)
	return false
}

// TokenResponse is the token endpoint's answer.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// Token gets an access token for the client credentials from
// POST /v1/oauth/token (JSON body, all the client's scopes). It fails t
// (t.Fatalf: call it from the test's goroutine) unless the answer is 200.
func (c *Client) Token(t testing.TB, clientID, secret string) string {
	t.Helper()
	res := c.Post(t, api.TokenPath, map[string]string{
		"grant_type": "client_credentials", "client_id": clientID, "client_secret": secret,
	}, NoToken())
	if res.Status != http.StatusOK {
		t.Fatalf("apitest: token for client %s: %s %s → %d %s", clientID, res.Method, res.Path, res.Status, res.APIError().Code)
	}
	var tok TokenResponse
	if !res.Decode(t, &tok) || tok.AccessToken == "" {
		t.Fatalf("apitest: token for client %s: no access_token in the answer", clientID)
	}
	return tok.AccessToken
}
