package client

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// refreshBefore is how long before its expiry an access token is replaced,
// so that a request never leaves with a token about to lapse.
const refreshBefore = time.Minute

// tokenSource fetches access tokens by client_credentials and keeps the
// current one until refreshBefore its expiry.
type tokenSource struct {
	cfg Config
	api *ClientWithResponses // without authentication

	mu      sync.Mutex // held while fetching: callers wait for one fetch
	current string
	expires time.Time
}

// token returns a token valid for at least refreshBefore, fetching one
// when needed.
func (s *tokenSource) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != "" && s.cfg.Now().Before(s.expires.Add(-refreshBefore)) {
		return s.current, nil
	}
	req := TokenRequest{GrantType: ClientCredentials, ClientId: &s.cfg.ClientID, ClientSecret: &s.cfg.ClientSecret}
	if len(s.cfg.Scopes) > 0 {
		scope := strings.Join(s.cfg.Scopes, " ")
		req.Scope = &scope
	}
	issued := s.cfg.Now()
	resp, err := s.api.CreateTokenWithResponse(ctx, nil, req)
	if err != nil {
		return "", fmt.Errorf("client: access token: %w", err)
	}
	if resp.JSON200 == nil || resp.JSON200.AccessToken == "" {
		return "", fmt.Errorf("client: access token: answer %d without a token", resp.StatusCode())
	}
	s.current = resp.JSON200.AccessToken
	s.expires = issued.Add(time.Duration(resp.JSON200.ExpiresIn) * time.Second)
	return s.current, nil
}

// forget drops token if it is still the current one (the server refused it).
func (s *tokenSource) forget(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == token {
		s.current = ""
	}
}
