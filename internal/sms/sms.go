// Package sms sends quickpay's own text messages (mandate consent codes,
// pre-debit notices) through an SMS carrier's HTTP API: POST {to, text}
// as JSON, any 2xx is accepted. banksim's /carrier/sms is such a carrier.
//
// A message's text may hold a code: it is never logged, and errors name
// the carrier's answer, never the text or the number.
package sms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Sender is a carrier client. Safe for concurrent use.
type Sender struct {
	url    string
	client *http.Client
}

// Config wires a Sender.
type Config struct {
	// URL is the carrier's send endpoint, e.g. http://127.0.0.1:8090/carrier/sms. Required.
	URL string
	// Timeout bounds each send. Defaults to 10s.
	Timeout time.Duration
	// HTTPClient defaults to a keep-alive client.
	HTTPClient *http.Client
}

// New returns a Sender.
func New(cfg Config) (*Sender, error) {
	if cfg.URL == "" {
		return nil, errors.New("sms: Config needs the carrier URL (QUICKPAY_SMS_URL, or the banksim URL + /carrier/sms)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := cfg.HTTPClient
	if c == nil {
		c = &http.Client{Transport: http.DefaultTransport}
	}
	c2 := *c
	c2.Timeout = cfg.Timeout
	return &Sender{url: cfg.URL, client: &c2}, nil
}

// ErrUnavailable: the carrier did not take the message.
var ErrUnavailable = errors.New("sms carrier unavailable")

// Send hands one message to the carrier. It is not retried: a retry could
// text twice. Errors wrap ErrUnavailable.
func (s *Sender) Send(ctx context.Context, to, text string) error {
	body, err := json.Marshal(struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}{to, text})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: carrier answered HTTP %d", ErrUnavailable, resp.StatusCode)
	}
	return nil
}
