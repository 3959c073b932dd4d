package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quickpay/quickpay/api/client"
)

// endpoint is the soak merchant's webhook endpoint: it verifies each
// delivery's signature as a merchant would (client.VerifyWebhook) and
// counts deliveries by event id. It refuses (503) the first delivery of
// the events refuse picks (called under its lock), so that quickpay's
// retries are part of the proof.
type endpoint struct {
	srv    *http.Server
	url    string
	refuse func() bool

	mu       sync.Mutex
	secret   string
	got      Deliveries
	refused  map[string]bool // events whose first delivery was refused
	attempts int             // every POST, refused and bad ones included
}

// startEndpoint listens on a loopback port.
func startEndpoint(refuse func() bool) (*endpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &endpoint{url: "http://" + ln.Addr().String() + "/webhooks", refuse: refuse,
		got: Deliveries{Received: map[string]int{}}, refused: map[string]bool{}}
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost {
		http.Error(w, "a POST with a body", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attempts++
	if err := client.VerifyWebhook(e.secret, r.Header.Get(client.SignatureHeader), body, time.Now(), 0); err != nil {
		e.got.BadSignatures++
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var ev client.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Id == "" {
		e.got.BadSignatures++ // signed, yet not an event: as untrustworthy
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	if _, seen := e.refused[ev.Id]; !seen && e.got.Received[ev.Id] == 0 {
		e.refused[ev.Id] = e.refuse()
		if e.refused[ev.Id] {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
	}
	e.got.Received[ev.Id]++
	w.WriteHeader(http.StatusNoContent)
}

// register makes e the merchant's endpoint for every event type.
func (e *endpoint) register(ctx context.Context, c *client.Client) error {
	r, err := c.SetWebhookEndpointWithResponse(ctx, &client.SetWebhookEndpointParams{},
		client.SetWebhookEndpointJSONRequestBody{Url: e.url})
	if err != nil {
		return fmt.Errorf("set the webhook endpoint: %w", err)
	}
	if r.JSON200 == nil || r.JSON200.Secret == "" {
		return fmt.Errorf("set the webhook endpoint: %d without a secret", r.StatusCode())
	}
	e.mu.Lock()
	e.secret = r.JSON200.Secret
	e.mu.Unlock()
	return nil
}

// deliveries returns a copy of what e received.
func (e *endpoint) deliveries() Deliveries {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Deliveries{Received: maps.Clone(e.got.Received), BadSignatures: e.got.BadSignatures}
}

// counts returns the POSTs e was sent and the first deliveries it refused.
func (e *endpoint) counts() (attempts, refused int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.refused {
		if r {
			refused++
		}
	}
	return e.attempts, refused
}

func (e *endpoint) close() { _ = e.srv.Close() }

// deliveriesOf returns what the endpoint received, for v (its feed read
// before): an event made after that read and delivered since is added to
// v.Events, so that the judge does not take its delivery for one of an
// event the feed does not hold.
func (s *soak) deliveriesOf(ctx context.Context, v *View) (Deliveries, error) {
	d := s.hook.deliveries()
	inFeed := map[string]bool{}
	for _, e := range v.Events {
		inFeed[e.Id] = true
	}
	late := false
	for id := range d.Received {
		late = late || !inFeed[id]
	}
	if !late {
		return d, nil
	}
	evs, err := s.feed(ctx)
	for _, e := range evs {
		if !inFeed[e.Id] && d.Received[e.Id] > 0 {
			v.Events = append(v.Events, e)
		}
	}
	return d, err
}

// awaitDeliveries polls until every event of the feed has reached the
// endpoint (at least once), or until within has passed; it returns when
// the last one was first seen delivered.
func (s *soak) awaitDeliveries(ctx context.Context, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		missing, err := s.undelivered(ctx)
		switch {
		case err != nil:
			s.say("deliveries: %v", err)
		case missing == 0:
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("deliveries: %d events of the feed not delivered after %s", missing, within)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// undelivered counts the feed's events the endpoint has not received.
func (s *soak) undelivered(ctx context.Context) (int, error) {
	got := s.hook.deliveries().Received
	evs, err := s.feed(ctx)
	n := 0
	for _, e := range evs {
		if got[e.Id] == 0 {
			n++
		}
	}
	return n, err
}
