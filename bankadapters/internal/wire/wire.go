// Package wire is the HTTP plumbing the bank adapters share: a deadline on
// every call, retries only for idempotent operations, bounded answer sizes,
// and logs that never hold a body.
package wire

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Caller sends requests to one bank.
type Caller struct {
	Bank    string
	HTTP    *http.Client
	Timeout time.Duration // per attempt
	Retries int           // extra attempts for idempotent operations
	Log     *slog.Logger
}

// Response is a bank's raw answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// maxAnswer bounds what is read of an answer.
const maxAnswer = 4 << 20

// Request is built afresh for every attempt (new nonce, timestamp and
// signature).
type Request struct {
	Path        string // "/banks/ICBC/charge"
	ContentType string
	Header      http.Header
	Body        []byte
}

// Do sends the request built by build, once, or up to 1+Retries times when
// idempotent and the failure was transport or 5xx. Each attempt has its own
// deadline of Timeout within ctx, which also bounds building (signing in
// the HSM included).
func (c *Caller) Do(ctx context.Context, baseURL, op string, idempotent bool, build func(context.Context) (Request, error)) (*Response, error) {
	attempts := 1
	if idempotent {
		attempts += c.Retries
	}
	var lastErr error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			backoff := time.Duration(50<<uint(i-1)) * time.Millisecond
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w (after: %v)", ctx.Err(), lastErr)
			case <-time.After(backoff):
			}
		}
		resp, err := c.once(ctx, baseURL, op, i+1, build)
		if err == nil && resp.Status < 500 {
			return resp, nil
		}
		if err == nil {
			err = fmt.Errorf("bank answered HTTP %d", resp.Status)
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (c *Caller) once(ctx context.Context, baseURL, op string, attempt int, build func(context.Context) (Request, error)) (*Response, error) {
	actx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	r, err := build(actx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(actx, http.MethodPost, baseURL+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", r.ContentType)
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.Log.LogAttrs(ctx, slog.LevelWarn, "bank call failed", slog.String("bank", c.Bank), slog.String("op", op),
			slog.Int("attempt", attempt), slog.Duration("elapsed", time.Since(start)), slog.String("err", transportError(err)))
		return nil, errors.New(transportError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		c.Log.LogAttrs(ctx, slog.LevelWarn, "bank answer lost", slog.String("bank", c.Bank), slog.String("op", op),
			slog.Int("attempt", attempt), slog.Int("status", resp.StatusCode), slog.String("err", err.Error()))
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	c.Log.LogAttrs(ctx, slog.LevelDebug, "bank call", slog.String("bank", c.Bank), slog.String("op", op),
		slog.Int("attempt", attempt), slog.Int("status", resp.StatusCode), slog.Duration("elapsed", time.Since(start)))
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// transportError describes a transport failure without the URL's query or
// anything from the body (neither is in net/http's errors, but be sure).
func transportError(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout: no answer before the deadline"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without an answer"
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return err.Error()
}

// Nonce returns 16 random bytes in hex.
func Nonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DefaultClient keeps connections alive to a few bank hosts; deadlines come
// from each call.
func DefaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 128
	return &http.Client{Transport: t}
}

// NewCaller fills the defaults: Timeout 10s, Retries 2 (negative: none),
// DefaultClient, slog.Default.
func NewCaller(bank string, client *http.Client, timeout time.Duration, retries int, log *slog.Logger) *Caller {
	if client == nil {
		client = DefaultClient()
	}
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	switch {
	case retries == 0:
		retries = 2
	case retries < 0:
		retries = 0
	}
	if log == nil {
		log = slog.Default()
	}
	return &Caller{Bank: bank, HTTP: client, Timeout: timeout, Retries: retries, Log: log}
}
