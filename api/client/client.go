package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Config configures a Client. BaseURL, ClientID and ClientSecret are
// required.
type Config struct {
	// BaseURL is quickpay's, e.g. https://api.quickpay.example.
	BaseURL string
	// ClientID and ClientSecret are the merchant's client credentials
	// (`quickpay merchants create`).
	ClientID, ClientSecret string
	// Scopes narrow the access tokens to these scopes. Defaults to every
	// scope of the client.
	Scopes []string
	// HTTPClient sends the requests. Defaults to a client with a 30 s
	// timeout per attempt.
	HTTPClient *http.Client
	// MaxAttempts bounds the tries of one call, the first included.
	// Defaults to 4.
	MaxAttempts int
	// MaxRetryWait is the longest Retry-After the Client waits out itself;
	// an answer asking for longer (an abuse limit's hour) is returned at
	// once, its RetryAfter set. Defaults to 30 s.
	MaxRetryWait time.Duration
	// Backoff is the wait before try attempt+1 when the answer named none
	// (no Retry-After). Defaults to 250 ms doubled per attempt up to 8 s,
	// each wait drawn from its upper half.
	Backoff func(attempt int) time.Duration
	// Now is the clock that ages access tokens. Defaults to time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx ends. Defaults to a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client calls quickpay's merchant API: every generated method of
// [ClientWithResponses], over a transport that
//
//   - sends a fresh access token, fetched by client_credentials and
//     fetched again a minute before it expires (or after a 401);
//   - gives every POST an Idempotency-Key: the caller's (the Params'
//     IdempotencyKey field), else a random one, the same on every try;
//   - retries, up to Config.MaxAttempts, transport errors, 409
//     idempotency_key_in_use, 429 (after Retry-After, up to
//     Config.MaxRetryWait) and 5xx answers, and never another 4xx (nor
//     429 otp_resend_limit, which no wait lifts);
//   - turns every answer that is not 2xx into an [*Error]: a method's
//     error is nil only when its answer succeeded.
type Client struct {
	*ClientWithResponses
	tokens *tokenSource
}

// New returns a Client for cfg. It makes no request.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" || cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("client: BaseURL, ClientID and ClientSecret are required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 4
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 30 * time.Second
	}
	if cfg.Backoff == nil {
		cfg.Backoff = defaultBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	plain, err := NewClientWithResponses(cfg.BaseURL, WithHTTPClient(&transport{cfg: cfg}))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	tokens := &tokenSource{cfg: cfg, api: plain}
	api, err := NewClientWithResponses(cfg.BaseURL, WithHTTPClient(&transport{cfg: cfg, tokens: tokens}))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Client{ClientWithResponses: api, tokens: tokens}, nil
}

// transport is the generated client's HttpRequestDoer: authentication,
// idempotency keys, retries and errors.
type transport struct {
	cfg    Config
	tokens *tokenSource // nil for the token endpoint itself
}

func (t *transport) Do(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("client: read request body: %w", err)
		}
		body = b
	}
	if req.Method == http.MethodPost && req.Header.Get("Idempotency-Key") == "" {
		req.Header.Set("Idempotency-Key", NewIdempotencyKey())
	}
	reauthed := false
	for attempt := 1; ; attempt++ {
		try := req.Clone(ctx)
		try.Body, try.GetBody, try.ContentLength = http.NoBody, nil, 0
		if len(body) > 0 {
			try.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			try.Body, _ = try.GetBody()
			try.ContentLength = int64(len(body))
		}
		var token string
		if t.tokens != nil {
			tok, err := t.tokens.token(ctx)
			if err != nil {
				return nil, err
			}
			token = tok
			try.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := t.cfg.HTTPClient.Do(try)
		var apiErr *Error
		switch {
		case err != nil:
			if ctx.Err() != nil || attempt >= t.cfg.MaxAttempts {
				return nil, fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, err)
			}
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		default:
			apiErr = readError(resp)
			if resp.StatusCode == http.StatusUnauthorized && t.tokens != nil && !reauthed {
				// The token may have been retired or expired early: one
				// more try with a new one, not counted as an attempt.
				reauthed = true
				t.tokens.forget(token)
				attempt--
				continue
			}
			if !retryable(apiErr) || attempt >= t.cfg.MaxAttempts || apiErr.RetryAfter > t.cfg.MaxRetryWait {
				return nil, apiErr
			}
		}
		wait := t.cfg.Backoff(attempt)
		if apiErr != nil && apiErr.RetryAfter > 0 {
			wait = apiErr.RetryAfter
		}
		if err := t.cfg.Sleep(ctx, wait); err != nil {
			if apiErr != nil {
				return nil, fmt.Errorf("%w (stopped waiting to retry: %w)", apiErr, err)
			}
			return nil, fmt.Errorf("client: %s %s: %w", req.Method, req.URL.Path, err)
		}
	}
}

// retryable reports whether the same request may succeed if sent again:
// quickpay keeps no answer for these, so the same Idempotency-Key runs it
// anew.
func retryable(e *Error) bool {
	switch {
	case e.Status == http.StatusConflict:
		return e.Code == "idempotency_key_in_use"
	case e.Status == http.StatusTooManyRequests:
		return e.Code != "otp_resend_limit"
	default:
		return e.Status >= 500
	}
}

// readError reads and closes a failed answer's body.
func readError(resp *http.Response) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	e := parseError(resp.StatusCode, b)
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-Id")
	}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// NewIdempotencyKey returns a random Idempotency-Key (128 bits, hex).
func NewIdempotencyKey() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("client: crypto/rand: %v", err)) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b)
}

func defaultBackoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt-1, 5)
	d = min(d, 8*time.Second)
	return d/2 + mrand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
