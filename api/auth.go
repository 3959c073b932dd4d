package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
	"golang.org/x/sync/singleflight"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/vaultkeys"
)

// MaxTokenTTL is the longest an access token lives (DESIGN.md: exp ≤ 15 min).
const MaxTokenTTL = 15 * time.Minute

// TokenLeeway is the clock skew between quickpay processes that token
// verification forgives on exp and iat (NTP keeps them well within it).
const TokenLeeway = 10 * time.Second

// Paths of the public auth routes.
const (
	TokenPath = "/v1/oauth/token"
	JWKSPath  = "/.well-known/jwks.json"
)

// ClientAuthenticator checks client credentials presented from a source
// address; *merchants.Store is one. Errors: merchants.ErrInvalidClient,
// merchants.ErrThrottled (*merchants.ThrottledError).
type ClientAuthenticator interface {
	AuthenticateFrom(ctx context.Context, clientID, source, secret string) (merchants.Merchant, error)
}

// TokenKeys signs tokens in the HSM and gives the keys that verify them;
// *vaultkeys.Vault is one.
type TokenKeys interface {
	Policy(ctx context.Context, p vaultkeys.Purpose) (vaultkeys.Policy, error)
	SignES256(ctx context.Context, signingInput []byte) (sig []byte, kid string, err error)
	PublicKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error)
	JWKs(ctx context.Context) ([]vaultkeys.JWK, error)
}

// MerchantStatus says whether a merchant is disabled; *merchants.Store is
// one. Error: merchants.ErrNotFound.
type MerchantStatus interface {
	Disabled(ctx context.Context, merchantID string) (bool, error)
}

// DefaultStatusTTL is how long Auth trusts a merchant's status it read: a
// merchant disabled by an operator has its live tokens refused by every
// serve instance within this time.
const DefaultStatusTTL = 5 * time.Second

var (
	_ ClientAuthenticator = (*merchants.Store)(nil)
	_ MerchantStatus      = (*merchants.Store)(nil)
	_ TokenKeys           = (*vaultkeys.Vault)(nil)
	_ Authenticator       = (*Auth)(nil)
)

// AuthConfig configures Auth.
type AuthConfig struct {
	Merchants ClientAuthenticator // Required.
	Vault     TokenKeys           // Required.
	// Status says whether a token's merchant is disabled; a disabled
	// merchant's tokens are refused on every /v1 call. Defaults to
	// Merchants when it is a MerchantStatus (a *merchants.Store is);
	// NewAuth fails when neither is one.
	Status MerchantStatus
	// StatusTTL is how long a merchant's status read is used before it is
	// read again. Defaults to DefaultStatusTTL.
	StatusTTL time.Duration
	// Issuer is the tokens' iss. Defaults to "quickpay".
	Issuer string
	// Audience is the tokens' aud. Defaults to "quickpay-api".
	Audience string
	// TTL is the tokens' lifetime. Defaults to, and may not exceed, 15m.
	TTL time.Duration
	// Clock dates tokens and checks their expiry. Defaults to clock.System.
	Clock clock.Clock
	// Logger receives why tokens are refused (never the token). Defaults
	// to slog.Default().
	Logger *slog.Logger
	// TrustedProxies are the networks of the proxies in front of quickpay
	// whose X-Forwarded-For is believed: a token request's source address
	// (whose failures are counted) is then the nearest address there that
	// is not one of them. Empty (the default): the socket's peer address,
	// whatever the headers say.
	TrustedProxies []netip.Prefix
}

// Auth issues OAuth 2.0 client-credentials access tokens (JWT, ES256, signed
// in the HSM) and verifies them on /v1. It implements Authenticator.
type Auth struct {
	cfg    AuthConfig
	parser *jwt.Parser
	// source gives a token request's source address (TrustedProxies).
	source func(*http.Request) string

	// verified caches tokens whose signature and claims checked out, so a
	// merchant reusing its token (as it should, for up to 15 minutes) costs
	// one ECDSA verification a minute, not one a request. Entries hold the
	// SHA-256 of the token, the claims, and when to check again.
	mu       sync.Mutex
	verified map[[32]byte]verifiedToken

	// statuses caches each merchant's disabled flag for StatusTTL, so a
	// busy merchant costs one indexed read every few seconds, not one a
	// request; concurrent reads of one merchant share one query.
	statusMu    sync.Mutex
	statuses    map[string]merchantStatus
	statusReads singleflight.Group
}

type merchantStatus struct {
	disabled bool
	read     time.Time
}

type verifiedToken struct {
	claims  TokenClaims
	kid     string
	recheck time.Time
}

// verifyCacheTTL bounds how long a verified token skips the signature
// check; a key retired meanwhile stops it within this time. verifyCacheMax
// bounds the cache's size.
const (
	verifyCacheTTL = time.Minute
	verifyCacheMax = 10_000
)

// NewAuth returns an Auth. It refuses a TTL above MaxTokenTTL.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	if cfg.Merchants == nil || cfg.Vault == nil {
		return nil, errors.New("api: AuthConfig needs Merchants and Vault")
	}
	if cfg.Status == nil {
		st, ok := cfg.Merchants.(MerchantStatus)
		if !ok {
			return nil, errors.New("api: AuthConfig needs Status (its Merchants says no merchant's status)")
		}
		cfg.Status = st
	}
	if cfg.StatusTTL == 0 {
		cfg.StatusTTL = DefaultStatusTTL
	}
	if cfg.StatusTTL < 0 {
		return nil, fmt.Errorf("api: negative merchant status TTL %s", cfg.StatusTTL)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "quickpay"
	}
	if cfg.Audience == "" {
		cfg.Audience = "quickpay-api"
	}
	if cfg.TTL == 0 {
		cfg.TTL = MaxTokenTTL
	}
	if cfg.TTL < time.Second || cfg.TTL > MaxTokenTTL {
		return nil, fmt.Errorf("api: token TTL %s is outside 1s..%s", cfg.TTL, MaxTokenTTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	source := peerAddress
	if len(cfg.TrustedProxies) > 0 {
		// echo's RealIP logic, trusting only the configured networks.
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, p := range cfg.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(prefixNet(p)))
		}
		source = echo.ExtractIPFromXFFHeader(opts...)
	}
	return &Auth{
		cfg:    cfg,
		source: source,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(TokenLeeway),
			jwt.WithTimeFunc(cfg.Clock.Now),
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// Routes registers the token endpoint and the JWKS, outside the
// authenticated /v1 group.
func (a *Auth) Routes(e *echo.Echo) {
	e.POST(TokenPath, a.token)
	e.GET(JWKSPath, a.jwks)
}

// Answers of the token endpoint (RFC 6749 §5.2 codes in the API's error shape).
var (
	errInvalidRequest   = NewError(http.StatusBadRequest, "invalid_request", "the token request is malformed")
	errUnsupportedGrant = NewError(http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
	errInvalidScope     = NewError(http.StatusBadRequest, "invalid_scope", "the requested scope exceeds the client's scopes")
	errInvalidClient    = NewError(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	errInvalidToken     = NewError(http.StatusUnauthorized, "invalid_token", "the access token is malformed, expired or not valid here")
)

// tokenRequest holds the parameters the token endpoint reads.
type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	Scope        string `json:"scope"`
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// token is POST /v1/oauth/token: the client_credentials grant (RFC 6749
// §4.4), with the client's credentials in the body (JSON or form) or in
// HTTP Basic (§2.3.1), never both.
func (a *Auth) token(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store") // RFC 6749 §5.1, also for errors
	h.Set("Pragma", "no-cache")
	r := c.Request()
	ctx := audit.WithRequestID(r.Context(), h.Get(echo.HeaderXRequestID))

	req, basic, err := readTokenRequest(c)
	if err != nil {
		return err
	}
	switch {
	case req.GrantType == "":
		return errInvalidRequest.With("field", "grant_type")
	case req.GrantType != "client_credentials":
		return errUnsupportedGrant
	case req.ClientID == "" || req.ClientSecret == "":
		if basic {
			h.Set(echo.HeaderWWWAuthenticate, `Basic realm="quickpay"`)
		}
		return errInvalidClient
	}
	requested := strings.Fields(req.Scope) // optional (§3.3): a subset of the client's scopes

	m, err := a.cfg.Merchants.AuthenticateFrom(ctx, req.ClientID, a.source(r), req.ClientSecret)
	var throttled *merchants.ThrottledError
	switch {
	case errors.As(err, &throttled):
		return RateLimited(int(math.Ceil(throttled.RetryAfter.Seconds())))
	case errors.Is(err, merchants.ErrInvalidClient):
		if basic {
			h.Set(echo.HeaderWWWAuthenticate, `Basic realm="quickpay"`)
		}
		return errInvalidClient
	case err != nil:
		return err
	}

	scopes := m.Scopes
	if len(requested) > 0 {
		for _, s := range requested {
			if !m.HasScope(s) {
				return errInvalidScope
			}
		}
		// Canonical order, without duplicates.
		scopes = slices.DeleteFunc(slices.Clone(m.Scopes), func(s string) bool { return !slices.Contains(requested, s) })
	}
	tok, err := a.Issue(ctx, m.ID, scopes)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tokenResponse{
		AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(a.cfg.TTL / time.Second), Scope: strings.Join(scopes, " "),
	})
}

// peerAddress is the IP address of the request's socket peer.
func peerAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func prefixNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// readTokenRequest reads the parameters from a JSON or form body and the
// client credentials from Basic if present. basic reports whether the
// client authenticated with Basic.
func readTokenRequest(c echo.Context) (req tokenRequest, basic bool, err error) {
	r := c.Request()
	body, err := Body(c)
	if err != nil {
		return req, false, err
	}
	ct := r.Header.Get(echo.HeaderContentType)
	mt, _, perr := mime.ParseMediaType(ct)
	switch {
	case ct == "" && len(body) == 0:
		// Everything missing: grant_type is required.
	case perr != nil:
		return req, false, errInvalidRequest
	case mt == echo.MIMEApplicationJSON:
		// OAuth ignores parameters it does not know (RFC 6749 §3.2), so
		// unknown JSON members are ignored too; wrong types are refused.
		if err := json.Unmarshal(body, &req); err != nil {
			return req, false, errInvalidRequest
		}
	case mt == echo.MIMEApplicationForm:
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return req, false, errInvalidRequest
		}
		for _, k := range []string{"grant_type", "client_id", "client_secret", "scope"} {
			// RFC 6749 §3.2: parameters must not repeat.
			if len(vals[k]) > 1 {
				return req, false, errInvalidRequest.With("field", k)
			}
		}
		req = tokenRequest{GrantType: vals.Get("grant_type"), ClientID: vals.Get("client_id"),
			ClientSecret: vals.Get("client_secret"), Scope: vals.Get("scope")}
	default:
		return req, false, errInvalidRequest
	}

	auth := r.Header.Get(echo.HeaderAuthorization)
	if auth == "" {
		return req, false, nil
	}
	scheme, cred, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return req, false, errInvalidRequest
	}
	// RFC 6749 §2.3.1: one authentication method per request.
	if req.ClientID != "" || req.ClientSecret != "" {
		return req, true, errInvalidRequest
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return req, true, errInvalidRequest
	}
	id, secret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return req, true, errInvalidRequest
	}
	// Both halves are form-urlencoded before being joined (§2.3.1).
	if req.ClientID, err = url.QueryUnescape(id); err != nil {
		return req, true, errInvalidRequest
	}
	if req.ClientSecret, err = url.QueryUnescape(secret); err != nil {
		return req, true, errInvalidRequest
	}
	return req, true, nil
}

// TokenClaims are the claims of a quickpay access token.
type TokenClaims struct {
	// Scope is the space-separated list of the token's scopes (RFC 9068).
	Scope string `json:"scope"`
	jwt.RegisteredClaims
}

// Issue signs an access token for merchant sub with scopes, in the HSM
// under the current qp-jwt key, whose label is the token's kid.
func (a *Auth) Issue(ctx context.Context, sub string, scopes []string) (string, error) {
	now := a.cfg.Clock.Now()
	claims := TokenClaims{
		Scope: strings.Join(scopes, " "),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    a.cfg.Issuer,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{a.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(a.cfg.TTL)),
			ID:        ids.New("jti"),
		},
	}
	// The kid is part of what is signed, but the HSM side picks the key. So
	// the header names the current key, and a rotation landing between the
	// two (the signer then reports another kid) means one more try.
	for range 3 {
		pol, err := a.cfg.Vault.Policy(ctx, vaultkeys.PurposeJWT)
		if err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
		kid := vaultkeys.Label(vaultkeys.PurposeJWT, pol.Current)
		t := jwt.NewWithClaims(hsmES256{}, claims)
		t.Header["kid"] = kid
		s, err := t.SignedString(hsmKey{ctx: ctx, keys: a.cfg.Vault, kid: kid})
		if errors.Is(err, errKidChanged) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
		return s, nil
	}
	return "", errors.New("issue token: the signing key kept changing")
}

var errKidChanged = errors.New("signing key changed while signing")

// hsmES256 is ES256 (ECDSA P-256, SHA-256, r ‖ s) whose Sign runs in the
// HSM through TokenKeys.SignES256: the private key never leaves it.
// Verification is jwt's own ES256 against an *ecdsa.PublicKey. It is not
// registered with jwt.RegisterSigningMethod: parsing looks "ES256" up and
// finds jwt's standard method, which is the verifier wanted, and replacing
// a process-wide registration would be a side effect on every other user
// of the library.
type hsmES256 struct{}

// hsmKey is the "key" handed to hsmES256.Sign: where to sign, and the kid
// the header already names.
type hsmKey struct {
	ctx  context.Context
	keys TokenKeys
	kid  string
}

func (hsmES256) Alg() string { return jwt.SigningMethodES256.Alg() }

func (hsmES256) Verify(signingString string, sig []byte, key any) error {
	return jwt.SigningMethodES256.Verify(signingString, sig, key)
}

func (hsmES256) Sign(signingString string, key any) ([]byte, error) {
	k, ok := key.(hsmKey)
	if !ok {
		return nil, jwt.ErrInvalidKeyType
	}
	sig, kid, err := k.keys.SignES256(k.ctx, []byte(signingString))
	if err != nil {
		return nil, err
	}
	if kid != k.kid {
		return nil, errKidChanged
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("HSM returned a %d-byte ES256 signature, want 64", len(sig))
	}
	return sig, nil
}

// keyLookupError is a failure to look a kid up that is not the token's
// fault (database or HSM down): it answers 500, not 401.
type keyLookupError struct{ err error }

func (e *keyLookupError) Error() string { return "look up token key: " + e.err.Error() }
func (e *keyLookupError) Unwrap() error { return e.err }

// statusLookupError is a failure to read the token's merchant's status
// that is not the token's fault: it answers 500, not 401.
type statusLookupError struct{ err error }

func (e *statusLookupError) Error() string { return "read merchant status: " + e.err.Error() }
func (e *statusLookupError) Unwrap() error { return e.err }

var errMerchantDisabled = errors.New("the token's merchant is disabled")

// checkStatus refuses a disabled (or unknown) merchant's token. A status
// read within StatusTTL is used as read.
func (a *Auth) checkStatus(ctx context.Context, merchantID string) error {
	now := a.cfg.Clock.Now()
	a.statusMu.Lock()
	st, ok := a.statuses[merchantID]
	a.statusMu.Unlock()
	if !ok || now.Sub(st.read) >= a.cfg.StatusTTL || now.Before(st.read) {
		v, err, _ := a.statusReads.Do(merchantID, func() (any, error) {
			return a.cfg.Status.Disabled(context.WithoutCancel(ctx), merchantID)
		})
		switch {
		case errors.Is(err, merchants.ErrNotFound):
			v = true // a token naming no merchant is refused like a disabled one's
		case err != nil:
			return &statusLookupError{err}
		}
		st = merchantStatus{disabled: v.(bool), read: now}
		a.statusMu.Lock()
		if a.statuses == nil || len(a.statuses) >= verifyCacheMax {
			a.statuses = make(map[string]merchantStatus)
		}
		a.statuses[merchantID] = st
		a.statusMu.Unlock()
	}
	if st.disabled {
		return errMerchantDisabled
	}
	return nil
}

var errBadKid = errors.New("token kid is missing or names no accepted key")

// keyFunc resolves the token's kid to a verification key: only qp-jwt
// versions that vaultkeys still accepts (current and previous).
func (a *Auth) keyFunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodECDSA); !ok || t.Method.Alg() != "ES256" {
			return nil, errBadKid // WithValidMethods already refuses these
		}
		kid, _ := t.Header["kid"].(string)
		if p, _, err := vaultkeys.ParseLabel(kid); err != nil || p != vaultkeys.PurposeJWT {
			return nil, errBadKid
		}
		pub, err := a.cfg.Vault.PublicKey(ctx, kid)
		if errors.Is(err, vaultkeys.ErrKeyVersionRetired) {
			return nil, errBadKid
		}
		if err != nil {
			return nil, &keyLookupError{err}
		}
		return pub, nil
	}
}

// Verify checks an access token and that its merchant is not disabled, and
// returns its claims. Errors: a *keyLookupError when the key could not be
// looked up, a *statusLookupError when the merchant's status could not be
// read; any other means the token is not valid.
func (a *Auth) Verify(ctx context.Context, token string) (*TokenClaims, error) {
	claims, err := a.verifyCached(ctx, token)
	if err != nil {
		return nil, err
	}
	if err := a.checkStatus(ctx, claims.Subject); err != nil {
		return nil, err
	}
	return claims, nil
}

// verifyCached checks an access token's signature and claims, skipping the
// signature for a token verified within verifyCacheTTL.
func (a *Auth) verifyCached(ctx context.Context, token string) (*TokenClaims, error) {
	sum := sha256.Sum256([]byte(token))
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	hit, ok := a.verified[sum]
	a.mu.Unlock()
	if ok && now.Before(hit.recheck) && now.Before(hit.claims.ExpiresAt.Add(TokenLeeway)) {
		// The key must still be one verification accepts (a cached lookup).
		if _, err := a.cfg.Vault.PublicKey(ctx, hit.kid); err == nil {
			c := hit.claims
			return &c, nil
		}
	}
	claims, kid, err := a.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.verified == nil || len(a.verified) >= verifyCacheMax {
		a.verified = make(map[[32]byte]verifiedToken)
	}
	a.verified[sum] = verifiedToken{claims: *claims, kid: kid, recheck: now.Add(verifyCacheTTL)}
	a.mu.Unlock()
	return claims, nil
}

func (a *Auth) verify(ctx context.Context, token string) (*TokenClaims, string, error) {
	var claims TokenClaims
	tok, err := a.parser.ParseWithClaims(token, &claims, a.keyFunc(ctx))
	if err != nil {
		return nil, "", err
	}
	if !ids.Valid(merchants.IDPrefix, claims.Subject) {
		return nil, "", errors.New("token subject is not a merchant id")
	}
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > MaxTokenTTL {
		return nil, "", errors.New("token lives longer than the maximum")
	}
	kid, _ := tok.Header["kid"].(string)
	return &claims, kid, nil
}

// Middleware verifies the bearer token (RFC 6750 §2.1) and records the
// merchant and scopes with SetPrincipal. Refusals answer 401 with
// WWW-Authenticate: Bearer; error="invalid_token" unless no token was sent
// at all (§3.1: then no error code).
func (a *Auth) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			auth := c.Request().Header.Get(echo.HeaderAuthorization)
			if auth == "" {
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="quickpay"`)
				return ErrUnauthorized
			}
			scheme, tok, _ := strings.Cut(auth, " ")
			tok = strings.TrimSpace(tok)
			if !strings.EqualFold(scheme, "Bearer") || tok == "" {
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="quickpay", error="invalid_token"`)
				return errInvalidToken
			}
			claims, err := a.Verify(c.Request().Context(), tok)
			var (
				kerr *keyLookupError
				serr *statusLookupError
			)
			if errors.As(err, &kerr) || errors.As(err, &serr) {
				return err // 500, logged with the request id
			}
			if err != nil {
				a.cfg.Logger.Info("access token refused", "request_id", h.Get(echo.HeaderXRequestID), "reason", err.Error())
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="quickpay", error="invalid_token"`)
				return errInvalidToken
			}
			SetPrincipal(c, claims.Subject, strings.Fields(claims.Scope))
			return next(c)
		}
	}
}

type jwksDoc struct {
	Keys []vaultkeys.JWK `json:"keys"`
}

// jwks is GET /.well-known/jwks.json: the keys verification accepts.
func (a *Auth) jwks(c echo.Context) error {
	keys, err := a.cfg.Vault.JWKs(c.Request().Context())
	if err != nil {
		return err
	}
	// Short caching: a rotation publishes a new key at once.
	c.Response().Header().Set("Cache-Control", "public, max-age=60")
	return c.JSON(http.StatusOK, jwksDoc{Keys: keys})
}
