package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/vaultkeys"
)

// whoamiArea is a test Area: GET /v1/whoami behind the bind scope answers
// the authenticated merchant.
type whoamiArea struct{}

func (whoamiArea) Routes(v1 *echo.Group) {
	v1.GET("/whoami", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"merchant_id": api.MerchantID(c)})
	}, api.RequireScope(merchants.ScopeBind))
}

func (whoamiArea) Errors() map[error]*api.Error { return nil }

// authEnv is an API server with Auth over real Postgres, SoftHSM and Vault,
// on a fake clock of its own.
type authEnv struct {
	url   string
	pool  *pgxpool.Pool
	clock *clock.Fake
	vault *vaultkeys.Vault
	store *merchants.Store
	auth  *api.Auth
}

var authStart = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// newAuthEnv starts the API with trusted as its trusted proxies.
func newAuthEnv(t *testing.T, trusted ...netip.Prefix) *authEnv {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	hsm := testenv.HSM(t, 2)
	vault, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: hsm})
	if err != nil {
		t.Fatal(err)
	}
	if err := vault.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(authStart)
	store, err := merchants.NewStore(merchants.Config{Pool: pool, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: vault, Clock: clk, Logger: log, TrustedProxies: trusted})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Config{
		Pool: pool, HSM: hsm, Secrets: testenv.Secrets(t), Logger: log,
		Auth: auth, Areas: []api.Area{whoamiArea{}},
	}))
	t.Cleanup(srv.Close)
	return &authEnv{url: srv.URL, pool: pool, clock: clk, vault: vault, store: store, auth: auth}
}

func (e *authEnv) merchant(t *testing.T, scopes ...string) (merchants.Merchant, string) {
	t.Helper()
	m, secret, err := e.store.Create(context.Background(), "Test Merchant", scopes)
	if err != nil {
		t.Fatal(err)
	}
	return m, secret
}

func (e *authEnv) currentKid(t *testing.T) string {
	t.Helper()
	pol, err := e.vault.Policy(context.Background(), vaultkeys.PurposeJWT)
	if err != nil {
		t.Fatal(err)
	}
	return vaultkeys.Label(vaultkeys.PurposeJWT, pol.Current)
}

// do sends one request; headers are name, value pairs.
func (e *authEnv) do(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// whoami calls the bind-scoped probe route with authorization as the
// Authorization header ("" sends none).
func (e *authEnv) whoami(t *testing.T, authorization string) response {
	t.Helper()
	if authorization == "" {
		return e.do(t, http.MethodGet, "/v1/whoami", "")
	}
	return e.do(t, http.MethodGet, "/v1/whoami", "", echo.HeaderAuthorization, authorization)
}

func (e *authEnv) issue(t *testing.T, m merchants.Merchant) string {
	t.Helper()
	tok, err := e.auth.Issue(context.Background(), m.ID, m.Scopes)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type authErrBody struct {
	Error struct {
		Code          string `json:"code"`
		Message       string `json:"message"`
		Field         string `json:"field"`
		RequiredScope string `json:"required_scope"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func errCode(t *testing.T, r response) authErrBody {
	t.Helper()
	var b authErrBody
	if err := json.Unmarshal(r.body, &b); err != nil || b.Error.Code == "" {
		t.Fatalf("error answer %d is not the documented shape (%v): %s", r.status, err, r.body)
	}
	if b.RequestID == "" || b.RequestID != r.header.Get(echo.HeaderXRequestID) {
		t.Fatalf("error answer request_id %q, header %q", b.RequestID, r.header.Get(echo.HeaderXRequestID))
	}
	return b
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

func jsonBody(v map[string]string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

const ctJSON, ctForm = "application/json", "application/x-www-form-urlencoded"

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	m, secret := e.merchant(t, "bind", "withhold")
	kid := e.currentKid(t)

	grants := []struct {
		name    string
		body    string
		headers []string
	}{
		{"json body", jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": secret}),
			[]string{"Content-Type", ctJSON}},
		{"json body with charset and unknown members ignored",
			jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": secret, "audience": "x"}),
			[]string{"Content-Type", ctJSON + "; charset=utf-8"}},
		{"form body", url.Values{"grant_type": {"client_credentials"}, "client_id": {m.ClientID}, "client_secret": {secret}}.Encode(),
			[]string{"Content-Type", ctForm}},
		{"http basic", "grant_type=client_credentials",
			[]string{"Content-Type", ctForm, "Authorization", basicAuth(m.ClientID, secret)}},
	}
	seenJTI := map[string]bool{}
	for _, g := range grants {
		t.Run(g.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/v1/oauth/token", g.body, g.headers...)
			if r.status != http.StatusOK {
				t.Fatalf("status = %d, want 200: %s", r.status, r.body)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
			var ans tokenAnswer
			if err := json.Unmarshal(r.body, &ans); err != nil {
				t.Fatal(err)
			}
			if ans.TokenType != "Bearer" || ans.ExpiresIn != 900 || ans.Scope != "bind withhold" || ans.AccessToken == "" {
				t.Fatalf("answer = %+v, want Bearer, 900 s, scope \"bind withhold\"", ans)
			}
			var claims api.TokenClaims
			tok, _, err := jwt.NewParser().ParseUnverified(ans.AccessToken, &claims)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Header["alg"] != "ES256" || tok.Header["kid"] != kid {
				t.Errorf("header = %v, want alg ES256, kid %s", tok.Header, kid)
			}
			if claims.Issuer != "quickpay" || !slices.Equal(claims.Audience, jwt.ClaimStrings{"quickpay-api"}) ||
				claims.Subject != m.ID || claims.Scope != "bind withhold" {
				t.Errorf("claims = %+v", claims)
			}
			if !claims.IssuedAt.Equal(authStart) || !claims.ExpiresAt.Equal(authStart.Add(15*time.Minute)) {
				t.Errorf("iat %v exp %v, want the injected clock's %v and 15 min later", claims.IssuedAt, claims.ExpiresAt, authStart)
			}
			if claims.ID == "" || seenJTI[claims.ID] {
				t.Errorf("jti %q empty or repeated", claims.ID)
			}
			seenJTI[claims.ID] = true

			w := e.whoami(t, "Bearer "+ans.AccessToken)
			if w.status != http.StatusOK || !bytes.Contains(w.body, []byte(m.ID)) {
				t.Fatalf("whoami with the token = %d %s, want 200 naming %s", w.status, w.body, m.ID)
			}
		})
	}

	t.Run("requested scope narrows the token", func(t *testing.T) {
		r := e.do(t, http.MethodPost, "/v1/oauth/token",
			jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": secret, "scope": "withhold"}),
			"Content-Type", ctJSON)
		var ans tokenAnswer
		if err := json.Unmarshal(r.body, &ans); err != nil || r.status != http.StatusOK || ans.Scope != "withhold" {
			t.Fatalf("status %d scope %q (%v), want 200 withhold: %s", r.status, ans.Scope, err, r.body)
		}
		if w := e.whoami(t, "Bearer "+ans.AccessToken); w.status != http.StatusForbidden {
			t.Fatalf("withhold-only token on a bind route = %d, want 403", w.status)
		}
	})

	refusals := []struct {
		name    string
		body    string
		headers []string
		status  int
		code    string
	}{
		{"missing grant_type", jsonBody(map[string]string{"client_id": m.ClientID, "client_secret": secret}),
			[]string{"Content-Type", ctJSON}, 400, "invalid_request"},
		{"empty body", "", nil, 400, "invalid_request"},
		{"password grant", jsonBody(map[string]string{"grant_type": "password", "client_id": m.ClientID, "client_secret": secret}),
			[]string{"Content-Type", ctJSON}, 400, "unsupported_grant_type"},
		{"malformed json", `{"grant_type": "client_credentials",`, []string{"Content-Type", ctJSON}, 400, "invalid_request"},
		{"json of the wrong type", `{"grant_type": "client_credentials", "client_id": 7}`, []string{"Content-Type", ctJSON}, 400, "invalid_request"},
		{"text/plain body", "grant_type=client_credentials", []string{"Content-Type", "text/plain"}, 400, "invalid_request"},
		{"repeated form parameter", "grant_type=client_credentials&client_id=" + m.ClientID + "&client_id=x&client_secret=" + secret,
			[]string{"Content-Type", ctForm}, 400, "invalid_request"},
		{"basic and body credentials together",
			url.Values{"grant_type": {"client_credentials"}, "client_id": {m.ClientID}, "client_secret": {secret}}.Encode(),
			[]string{"Content-Type", ctForm, "Authorization", basicAuth(m.ClientID, secret)}, 400, "invalid_request"},
		{"no client credentials", "grant_type=client_credentials", []string{"Content-Type", ctForm}, 401, "invalid_client"},
		{"scope the client lacks", jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID,
			"client_secret": secret, "scope": "bind admin"}), []string{"Content-Type", ctJSON}, 400, "invalid_scope"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/v1/oauth/token", tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.status, r.body)
			}
			if b := errCode(t, r); b.Error.Code != tt.code {
				t.Fatalf("code = %q, want %q", b.Error.Code, tt.code)
			}
			if bytes.Contains(r.body, []byte(secret)) {
				t.Fatal("the answer echoes the secret")
			}
		})
	}

	t.Run("wrong secret and unknown client answer alike", func(t *testing.T) {
		wrong := e.do(t, http.MethodPost, "/v1/oauth/token",
			jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": secret + "x"}),
			"Content-Type", ctJSON)
		unknown := e.do(t, http.MethodPost, "/v1/oauth/token",
			jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": ids.New("qpc"), "client_secret": secret}),
			"Content-Type", ctJSON)
		for _, r := range []response{wrong, unknown} {
			if r.status != http.StatusUnauthorized || errCode(t, r).Error.Code != "invalid_client" {
				t.Fatalf("status %d: %s, want 401 invalid_client", r.status, r.body)
			}
		}
		a, b := errCode(t, wrong), errCode(t, unknown)
		a.RequestID, b.RequestID = "", ""
		if a != b {
			t.Fatalf("answers differ: %+v vs %+v", a, b)
		}
	})

	t.Run("wrong secret over basic asks for basic", func(t *testing.T) {
		r := e.do(t, http.MethodPost, "/v1/oauth/token", "grant_type=client_credentials",
			"Content-Type", ctForm, "Authorization", basicAuth(m.ClientID, "nope"))
		if r.status != http.StatusUnauthorized || errCode(t, r).Error.Code != "invalid_client" {
			t.Fatalf("status %d: %s, want 401 invalid_client", r.status, r.body)
		}
		if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Basic ") {
			t.Fatalf("WWW-Authenticate = %q, want Basic", h)
		}
	})
}

// TestTokenLockoutPerSource: ten failed token requests for a client from
// one address refuse that address for that client until the window passes,
// even with the right secret, before bcrypt; the client's own addresses
// still get tokens.
func TestTokenLockoutPerSource(t *testing.T) {
	t.Parallel()
	const stranger, merchant = "203.0.113.7", "198.51.100.2"
	// Behind a proxy on loopback, whose X-Forwarded-For names the source.
	e := newAuthEnv(t, netip.MustParsePrefix("127.0.0.0/8"))
	m, secret := e.merchant(t, "bind")
	var requestIDs []string
	login := func(t *testing.T, from, s string) response {
		t.Helper()
		r := e.do(t, http.MethodPost, "/v1/oauth/token",
			url.Values{"grant_type": {"client_credentials"}, "client_id": {m.ClientID}, "client_secret": {s}}.Encode(),
			"Content-Type", ctForm, "X-Forwarded-For", from)
		requestIDs = append(requestIDs, r.header.Get(echo.HeaderXRequestID))
		return r
	}
	fail := func(t *testing.T, n int) {
		t.Helper()
		for i := range n {
			if r := login(t, stranger, "wrong-"+secret[:8]); r.status != http.StatusUnauthorized {
				t.Fatalf("failure %d: status %d, want 401: %s", i+1, r.status, r.body)
			}
		}
	}
	want := func(t *testing.T, r response, status int, code, retryAfter string) {
		t.Helper()
		if r.status != status {
			t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
		}
		if code != "" {
			if got := errCode(t, r).Error.Code; got != code {
				t.Fatalf("code = %q, want %q", got, code)
			}
			var body struct {
				Error struct {
					RetryAfter int `json:"retry_after"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil || strconv.Itoa(body.Error.RetryAfter) != retryAfter {
				t.Fatalf("retry_after = %d (%v), want %s", body.Error.RetryAfter, err, retryAfter)
			}
		}
		if got := r.header.Get("Retry-After"); got != retryAfter {
			t.Fatalf("Retry-After = %q, want %q", got, retryAfter)
		}
	}

	fail(t, 9)
	want(t, login(t, stranger, secret), http.StatusOK, "", "") // a right secret does not count
	fail(t, 1)
	want(t, login(t, stranger, secret), http.StatusTooManyRequests, "rate_limited", "900")
	want(t, login(t, stranger, "wrong"), http.StatusTooManyRequests, "rate_limited", "900")
	want(t, login(t, merchant, secret), http.StatusOK, "", "") // the merchant's own address
	e.clock.Advance(14 * time.Minute)
	want(t, login(t, stranger, secret), http.StatusTooManyRequests, "rate_limited", "60")
	e.clock.Advance(time.Minute)
	want(t, login(t, stranger, secret), http.StatusOK, "", "")

	rows, err := e.pool.Query(context.Background(), `
		SELECT details->>'outcome', coalesce(request_id, ''), details::text FROM audit_log
		WHERE action = 'auth.login' AND subject = $1 ORDER BY id`, m.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ outcome, requestID, details string }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.outcome, &x.requestID, &x.details)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Refused requests reach neither bcrypt nor the audit trail.
	var wantOutcomes, wantIDs []string
	for i := range 16 {
		switch {
		case i < 9 || i == 10:
			wantOutcomes = append(wantOutcomes, "failed")
		case i == 9 || i == 13 || i == 15:
			wantOutcomes = append(wantOutcomes, "ok")
		default:
			continue // refused: 11, 12, 14
		}
		wantIDs = append(wantIDs, requestIDs[i])
	}
	if len(got) != len(wantOutcomes) {
		t.Fatalf("%d auth.login audit rows, want %d: %+v", len(got), len(wantOutcomes), got)
	}
	for i, r := range got {
		if r.outcome != wantOutcomes[i] {
			t.Errorf("row %d audited %q, want %q", i+1, r.outcome, wantOutcomes[i])
		}
		if r.requestID == "" || r.requestID != wantIDs[i] {
			t.Errorf("row %d audited request id %q, the answer said %q", i+1, r.requestID, wantIDs[i])
		}
		if strings.Contains(r.details, secret) || strings.Contains(r.details, secret[:8]) {
			t.Errorf("row %d holds (part of) the secret", i+1)
		}
	}
	if !strings.Contains(got[0].details, stranger) || !strings.Contains(got[11].details, merchant) {
		t.Errorf("audit rows lack the source address: %s; %s", got[0].details, got[11].details)
	}
}

// TestTokenSourceIsTheSocketWithoutTrustedProxies: without a trusted proxy
// X-Forwarded-For is the caller's to write, so it does not pick the
// counter: failures sent under ten made-up addresses refuse the socket's.
func TestTokenSourceIsTheSocketWithoutTrustedProxies(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	m, secret := e.merchant(t, "bind")
	login := func(from, s string) response {
		return e.do(t, http.MethodPost, "/v1/oauth/token",
			url.Values{"grant_type": {"client_credentials"}, "client_id": {m.ClientID}, "client_secret": {s}}.Encode(),
			"Content-Type", ctForm, "X-Forwarded-For", from)
	}
	for i := range 10 {
		if r := login(fmt.Sprintf("203.0.113.%d", i+1), "wrong"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := login("198.51.100.2", secret); r.status != http.StatusTooManyRequests || errCode(t, r).Error.Code != "rate_limited" {
		t.Fatalf("after 10 failures from this socket: %d %s, want 429 rate_limited", r.status, r.body)
	}
}

// b64 is base64url without padding, as JWS uses.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

// forge builds a token from header and claims, signed in the HSM with the
// current qp-jwt key whatever the header says.
func (e *authEnv) forge(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	sig, _, err := e.vault.SignES256(context.Background(), []byte(input))
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

// with returns a copy of m with k set to v, or removed if v is nil.
func with(m map[string]any, k string, v any) map[string]any {
	c := make(map[string]any, len(m)+1)
	for key, val := range m {
		c[key] = val
	}
	if v == nil {
		delete(c, k)
	} else {
		c[k] = v
	}
	return c
}

func hs256(t *testing.T, header, claims map[string]any, key []byte) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

func TestAccessTokenRejections(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	ctx := context.Background()
	m, _ := e.merchant(t, "bind", "withhold")
	kid := e.currentKid(t)
	now := e.clock.Now()
	valid := e.issue(t, m)

	hdr := map[string]any{"alg": "ES256", "typ": "JWT", "kid": kid}
	claims := map[string]any{
		"iss": "quickpay", "aud": []string{"quickpay-api"}, "sub": m.ID, "scope": "bind withhold",
		"iat": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(), "jti": "test",
	}
	pub, err := e.vault.PublicKey(ctx, kid)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubPoint := append([]byte{4}, append(pub.X.FillBytes(make([]byte, 32)), pub.Y.FillBytes(make([]byte, 32))...)...)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherTok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	otherTok.Header["kid"] = kid
	otherSigned, err := otherTok.SignedString(other)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(valid, ".")
	tamperedPayload := parts[0] + "." + b64JSON(t, with(claims, "sub", ids.New("mch"))) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + b64(sig)

	accepted := []struct {
		name, authorization string
	}{
		{"issued token", "Bearer " + valid},
		{"forged with the right claims (the baseline of the forgeries below)", "Bearer " + e.forge(t, hdr, claims)},
		{"scheme is case-insensitive", "bearer " + valid},
	}
	for _, tt := range accepted {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			r := e.whoami(t, tt.authorization)
			if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(m.ID)) {
				t.Fatalf("status %d: %s, want 200 naming %s", r.status, r.body, m.ID)
			}
		})
	}

	refused := []struct {
		name, authorization string
	}{
		{"expired", "Bearer " + e.forge(t, hdr, with(with(claims, "exp", now.Add(-api.TokenLeeway-time.Second).Unix()),
			"iat", now.Add(-15*time.Minute).Unix()))},
		{"wrong audience", "Bearer " + e.forge(t, hdr, with(claims, "aud", []string{"other-api"}))},
		{"no audience", "Bearer " + e.forge(t, hdr, with(claims, "aud", nil))},
		{"wrong issuer", "Bearer " + e.forge(t, hdr, with(claims, "iss", "evil"))},
		{"no expiry", "Bearer " + e.forge(t, hdr, with(claims, "exp", nil))},
		{"no issued-at", "Bearer " + e.forge(t, hdr, with(claims, "iat", nil))},
		{"issued in the future", "Bearer " + e.forge(t, hdr, with(with(claims, "iat", now.Add(5*time.Minute).Unix()),
			"exp", now.Add(20*time.Minute).Unix()))},
		{"lives longer than 15 minutes", "Bearer " + e.forge(t, hdr, with(claims, "exp", now.Add(time.Hour).Unix()))},
		{"subject is not a merchant", "Bearer " + e.forge(t, hdr, with(claims, "sub", "admin"))},
		{"alg none", "Bearer " + b64JSON(t, with(hdr, "alg", "none")) + "." + b64JSON(t, claims) + "."},
		{"HS256 keyed with the public key PEM", "Bearer " + hs256(t, with(hdr, "alg", "HS256"), claims, pubPEM)},
		{"HS256 keyed with the public point", "Bearer " + hs256(t, with(hdr, "alg", "HS256"), claims, pubPoint)},
		{"missing kid", "Bearer " + e.forge(t, with(hdr, "kid", nil), claims)},
		{"unknown kid", "Bearer " + e.forge(t, with(hdr, "kid", "qp-jwt-v999"), claims)},
		{"kid of another purpose", "Bearer " + e.forge(t, with(hdr, "kid", "qp-data-v1"), claims)},
		{"kid that is not a label", "Bearer " + e.forge(t, with(hdr, "kid", "../../keys"), claims)},
		{"signed by another P-256 key", "Bearer " + otherSigned},
		{"tampered payload", "Bearer " + tamperedPayload},
		{"tampered signature", "Bearer " + tamperedSig},
		{"garbled token", "Bearer " + valid[:len(valid)/2]},
		{"trailing junk", "Bearer " + valid + "x"},
		{"not a jwt", "Bearer abc.def"},
		{"scheme without token", "Bearer"},
		{"basic credentials", basicAuth("qpc_x", "y")},
		{"token under another scheme", "Token " + valid},
	}
	for _, tt := range refused {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			r := e.whoami(t, tt.authorization)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401: %s", r.status, r.body)
			}
			if got := errCode(t, r).Error.Code; got != "invalid_token" {
				t.Errorf("code = %q, want invalid_token", got)
			}
			if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="invalid_token"`) {
				t.Errorf("WWW-Authenticate = %q, want Bearer with error=\"invalid_token\"", h)
			}
		})
	}

	t.Run("refuses a request without authorization", func(t *testing.T) {
		r := e.whoami(t, "")
		if r.status != http.StatusUnauthorized || errCode(t, r).Error.Code != "unauthorized" {
			t.Fatalf("status %d: %s, want 401 unauthorized", r.status, r.body)
		}
		// RFC 6750 §3.1: no error code when no credentials were sent.
		if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || strings.Contains(h, "error=") {
			t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge without error", h)
		}
	})

	t.Run("a token without the route's scope answers 403", func(t *testing.T) {
		w, _ := e.merchant(t, "withhold")
		r := e.whoami(t, "Bearer "+e.issue(t, w))
		if r.status != http.StatusForbidden {
			t.Fatalf("status = %d, want 403: %s", r.status, r.body)
		}
		if b := errCode(t, r); b.Error.Code != "insufficient_scope" || b.Error.RequiredScope != "bind" {
			t.Fatalf("error = %+v, want insufficient_scope naming bind", b.Error)
		}
	})

	// Last: it moves this test's clock.
	t.Run("an issued token works until it expires", func(t *testing.T) {
		tok := e.issue(t, m)
		e.clock.Advance(15*time.Minute + api.TokenLeeway - time.Second)
		if r := e.whoami(t, "Bearer "+tok); r.status != http.StatusOK {
			t.Fatalf("just before expiry: status %d, want 200: %s", r.status, r.body)
		}
		e.clock.Advance(2 * time.Second)
		if r := e.whoami(t, "Bearer "+tok); r.status != http.StatusUnauthorized {
			t.Fatalf("after expiry: status %d, want 401: %s", r.status, r.body)
		}
	})
}

type jwksAnswer struct {
	Keys []vaultkeys.JWK `json:"keys"`
}

func (e *authEnv) jwks(t *testing.T) jwksAnswer {
	t.Helper()
	r := e.do(t, http.MethodGet, "/.well-known/jwks.json", "")
	if r.status != http.StatusOK {
		t.Fatalf("jwks status = %d: %s", r.status, r.body)
	}
	var ans jwksAnswer
	if err := json.Unmarshal(r.body, &ans); err != nil {
		t.Fatal(err)
	}
	return ans
}

func kids(a jwksAnswer) []string {
	var out []string
	for _, k := range a.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func jwkKey(t *testing.T, k vaultkeys.JWK) *ecdsa.PublicKey {
	t.Helper()
	x, err1 := base64.RawURLEncoding.DecodeString(k.X)
	y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		t.Fatalf("jwk %s has bad coordinates", k.Kid)
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	ctx := context.Background()
	pol, err := e.vault.Policy(ctx, vaultkeys.PurposeJWT)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for v := pol.Current; v >= max(pol.MinDecryption, pol.Current-1); v-- {
		want = append(want, vaultkeys.Label(vaultkeys.PurposeJWT, v))
	}
	ans := e.jwks(t) // no Authorization: it is public
	if got := kids(ans); !slices.Equal(got, want) {
		t.Fatalf("jwks kids = %v, want %v", got, want)
	}
	k := ans.Keys[0]
	if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != "ES256" || k.Use != "sig" {
		t.Fatalf("jwk = %+v, want an EC P-256 ES256 signing key", k)
	}

	// A standard ES256 verifier with only the published key accepts the
	// token: the HSM's signature is plain JWS.
	m, _ := e.merchant(t, "bind")
	tok := e.issue(t, m)
	parsed, err := jwt.Parse(tok, func(tk *jwt.Token) (any, error) {
		for _, k := range ans.Keys {
			if k.Kid == tk.Header["kid"] {
				return jwkKey(t, k), nil
			}
		}
		t.Fatalf("token kid %v is not in the jwks", tk.Header["kid"])
		return nil, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(e.clock.Now))
	if err != nil || !parsed.Valid {
		t.Fatalf("standard ES256 verification with the jwks key: %v", err)
	}
}

// TestKeyRotation is not parallel: rotating qp-jwt changes the package's
// key policy, and Go runs the parallel tests only after the sequential ones.
func TestKeyRotation(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	m, _ := e.merchant(t, "bind")
	k1 := e.currentKid(t)
	old := e.issue(t, m)

	if _, err := e.vault.Rotate(ctx, vaultkeys.PurposeJWT, "test"); err != nil {
		t.Fatal(err)
	}
	k2 := e.currentKid(t)
	if k2 == k1 {
		t.Fatalf("rotation left the current kid at %s", k1)
	}
	mid := e.issue(t, m)
	tk, _, err := jwt.NewParser().ParseUnverified(mid, jwt.MapClaims{})
	if err != nil || tk.Header["kid"] != k2 {
		t.Fatalf("token issued after rotation has kid %v (%v), want %s", tk.Header["kid"], err, k2)
	}
	if got := kids(e.jwks(t)); !slices.Equal(got, []string{k2, k1}) {
		t.Fatalf("jwks after one rotation = %v, want [%s %s]", got, k2, k1)
	}
	e.clock.Advance(14 * time.Minute)
	for name, tok := range map[string]string{"old": old, "new": mid} {
		if r := e.whoami(t, "Bearer "+tok); r.status != http.StatusOK {
			t.Fatalf("%s token after one rotation: status %d, want 200: %s", name, r.status, r.body)
		}
	}

	if _, err := e.vault.Rotate(ctx, vaultkeys.PurposeJWT, "test"); err != nil {
		t.Fatal(err)
	}
	k3 := e.currentKid(t)
	if got := kids(e.jwks(t)); !slices.Equal(got, []string{k3, k2}) {
		t.Fatalf("jwks after two rotations = %v, want [%s %s]", got, k3, k2)
	}
	// Still within its exp, but its key is no longer accepted.
	if r := e.whoami(t, "Bearer "+old); r.status != http.StatusUnauthorized {
		t.Fatalf("token under %s after two rotations: status %d, want 401: %s", k1, r.status, r.body)
	}
	if r := e.whoami(t, "Bearer "+mid); r.status != http.StatusOK {
		t.Fatalf("token under %s after two rotations: status %d, want 200: %s", k2, r.status, r.body)
	}
	if r := e.whoami(t, "Bearer "+e.issue(t, m)); r.status != http.StatusOK {
		t.Fatalf("token under %s: status %d, want 200: %s", k3, r.status, r.body)
	}
}

// TestDisabledMerchant: a disabled merchant gets no token (invalid_client,
// as for a wrong secret) and its live tokens are refused with 401 once
// the status its serve instance read is DefaultStatusTTL old; enabled
// again, it is let in the same way.
func TestDisabledMerchant(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	ctx := context.Background()
	m, secret := e.merchant(t, "bind")
	other, _ := e.merchant(t, "bind")
	tok, otherTok := e.issue(t, m), e.issue(t, other)
	grant := jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": secret})
	if r := e.whoami(t, "Bearer "+tok); r.status != http.StatusOK {
		t.Fatalf("before the disable: %d %s", r.status, r.body)
	}
	if err := e.store.Disable(ctx, m.ID, "operator:op_test"); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name      string
		advance   time.Duration
		wantLive  int // status of the live token's call
		wantToken int // status of a token request with the right secret
	}{
		{"status read a moment ago is still used", 0, http.StatusOK, http.StatusUnauthorized},
		{"status older than the TTL is read again", api.DefaultStatusTTL, http.StatusUnauthorized, http.StatusUnauthorized},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			e.clock.Advance(s.advance)
			r := e.whoami(t, "Bearer "+tok)
			if r.status != s.wantLive {
				t.Fatalf("live token: %d, want %d: %s", r.status, s.wantLive, r.body)
			}
			if s.wantLive == http.StatusUnauthorized {
				if b := errCode(t, r); b.Error.Code != "invalid_token" {
					t.Errorf("code %q, want invalid_token", b.Error.Code)
				}
				if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
					t.Errorf("WWW-Authenticate %q", h)
				}
			}
			r = e.do(t, http.MethodPost, "/v1/oauth/token", grant, "Content-Type", ctJSON)
			if r.status != s.wantToken || errCode(t, r).Error.Code != "invalid_client" {
				t.Fatalf("token request: %d %s, want %d invalid_client", r.status, r.body, s.wantToken)
			}
		})
	}
	if r := e.whoami(t, "Bearer "+otherTok); r.status != http.StatusOK {
		t.Errorf("another merchant's token: %d, want 200", r.status)
	}

	if err := e.store.Enable(ctx, m.ID, "operator:op_test"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(api.DefaultStatusTTL)
	if r := e.whoami(t, "Bearer "+tok); r.status != http.StatusOK {
		t.Errorf("enabled again: live token %d, want 200: %s", r.status, r.body)
	}
	if r := e.do(t, http.MethodPost, "/v1/oauth/token", grant, "Content-Type", ctJSON); r.status != http.StatusOK {
		t.Errorf("enabled again: token request %d, want 200: %s", r.status, r.body)
	}
}

// TestRotatedSecret: after RotateSecret the old secret gets invalid_client
// at once and the new one a token.
func TestRotatedSecret(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	m, old := e.merchant(t, "bind")
	fresh, err := e.store.RotateSecret(context.Background(), m.ID, "operator:op_test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		secret string
		want   int
	}{
		{"old secret refused", old, http.StatusUnauthorized},
		{"new secret gets a token", fresh, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/v1/oauth/token",
				jsonBody(map[string]string{"grant_type": "client_credentials", "client_id": m.ClientID, "client_secret": tt.secret}),
				"Content-Type", ctJSON)
			if r.status != tt.want {
				t.Fatalf("%d, want %d: %s", r.status, tt.want, r.body)
			}
			if tt.want == http.StatusUnauthorized && errCode(t, r).Error.Code != "invalid_client" {
				t.Errorf("code %s, want invalid_client", r.body)
			}
		})
	}
}
