// Package api is quickpay's HTTP layer on echo/v4: routing, request ids,
// structured access logs, health and readiness, Prometheus metrics, and (as
// the binding and mandate work lands) JWT auth, idempotency, the error table
// and the OpenAPI document. It never builds SQL; it calls domain packages.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/vaultkeys"
)

// Config wires the server.
type Config struct {
	Pool    *pgxpool.Pool      // Required.
	HSM     *vaultkeys.HSM     // Required.
	Secrets *vaultkeys.Secrets // Required.
	Logger  *slog.Logger       // Defaults to slog.Default().
	// ReadyTimeout bounds each readiness probe. Defaults to 2s.
	ReadyTimeout time.Duration
	// Metrics receives the server's collectors (HTTP, HSM and DB pools, Go
	// runtime). The API does not serve it: /metrics is no business of
	// merchants, so serve exposes it with MetricsHandler on a listener of
	// its own. Defaults to a registry nobody reads.
	Metrics *prometheus.Registry

	// Auth issues and checks access tokens. Without it there are no /v1
	// routes (health and metrics only).
	Auth Authenticator
	// Idempotency wraps every POST under /v1 (Idempotency-Key). Optional.
	Idempotency echo.MiddlewareFunc
	// RateLimit refuses a merchant's /v1 requests over its ceiling (see
	// RateLimit); it runs after auth and before Idempotency. Optional.
	RateLimit echo.MiddlewareFunc
	// Areas add their /v1 routes and their rows of the error table, and,
	// if they are PublicRouters, their public routes.
	Areas []Area
}

// Authenticator is the token side of the API: it serves its own public
// routes (token endpoint, JWKS) and guards /v1.
type Authenticator interface {
	Routes(e *echo.Echo)
	// Middleware verifies the bearer token and calls SetPrincipal.
	Middleware() echo.MiddlewareFunc
}

// Area is a group of /v1 routes with the domain errors they can return.
type Area interface {
	Routes(v1 *echo.Group)
	// Errors maps the area's domain sentinels to answers (the error table).
	Errors() map[error]*Error
}

// PublicRouter is an Area that also serves routes outside /v1: no bearer
// token, no idempotency (a bank's callback, which its signature
// authenticates). They are served even without Config.Auth.
type PublicRouter interface {
	PublicRoutes(e *echo.Echo)
}

type server struct {
	cfg    Config
	log    *slog.Logger
	errors *domainTable
}

// New builds the HTTP handler.
func New(cfg Config) *echo.Echo {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	s := &server{cfg: cfg, log: cfg.Logger, errors: &domainTable{}}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler

	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newHSMCollector(cfg.HSM),
		newPoolCollector(cfg.Pool),
	)
	m := newHTTPMetrics(reg)

	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		// Keep a caller's id only if it is short and plain; it goes into logs.
		Skipper: func(c echo.Context) bool {
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if id != "" && !validRequestID(id) {
				c.Request().Header.Del(echo.HeaderXRequestID)
			}
			return false
		},
	}))
	e.Use(accessLog(cfg.Logger, m))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		// The stack may hold request values; log it without them.
		DisablePrintStack: true,
	}))

	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", readyz(cfg))
	if err := RegisterOpenAPI(e); err != nil {
		// The document is embedded and checked by tests: this is a build defect.
		panic(fmt.Sprintf("api: openapi document: %v", err))
	}

	for _, a := range cfg.Areas {
		s.errors.register(a.Errors())
		if p, ok := a.(PublicRouter); ok {
			p.PublicRoutes(e)
		}
		// An area with metrics of its own (Mandates: held amount
		// mismatches) exports them with the server's.
		if c, ok := a.(prometheus.Collector); ok {
			reg.MustRegister(c)
		}
	}
	if cfg.Auth != nil {
		cfg.Auth.Routes(e)
		v1 := e.Group("/v1", cfg.Auth.Middleware(), withAuditRequestID)
		if cfg.RateLimit != nil {
			v1.Use(cfg.RateLimit)
		}
		if cfg.Idempotency != nil {
			v1.Use(cfg.Idempotency)
		}
		for _, a := range cfg.Areas {
			a.Routes(v1)
		}
	}
	return e
}

// MetricsHandler serves reg's metrics in the Prometheus text format at
// /metrics (and answers 404 elsewhere), for serve's metrics listener.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// withAuditRequestID puts the request id into the request context, so that
// audit rows written under it name the request.
func withAuditRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		c.SetRequest(r.WithContext(audit.WithRequestID(r.Context(), c.Response().Header().Get(echo.HeaderXRequestID))))
		return next(c)
	}
}

const (
	ctxMerchant   = "qp.merchant"
	ctxScopes     = "qp.scopes"
	ctxSealAnswer = "qp.seal_answer"
)

// SetPrincipal records the authenticated merchant and its token's scopes.
func SetPrincipal(c echo.Context, merchantID string, scopes []string) {
	c.Set(ctxMerchant, merchantID)
	c.Set(ctxScopes, scopes)
}

// SealAnswer marks the answer being written as holding a secret a GET
// would not show (a binding session's link): the idempotency store saves
// it only encrypted (DESIGN.md: a saved response holds nothing a GET would
// not show in clear).
func SealAnswer(c echo.Context) { c.Set(ctxSealAnswer, true) }

// AnswerSealed reports whether the handler called SealAnswer.
func AnswerSealed(c echo.Context) bool {
	sealed, _ := c.Get(ctxSealAnswer).(bool)
	return sealed
}

// MerchantID is the authenticated merchant, "" outside /v1.
func MerchantID(c echo.Context) string {
	id, _ := c.Get(ctxMerchant).(string)
	return id
}

// RequireScope refuses requests whose token lacks scope.
func RequireScope(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			scopes, _ := c.Get(ctxScopes).([]string)
			for _, s := range scopes {
				if s == scope {
					return next(c)
				}
			}
			return ErrForbiddenScope.With("required_scope", scope)
		}
	}
}

type check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
}

// readyz answers 200 only when Postgres, an HSM session and Vault all answer.
func readyz(cfg Config) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), cfg.ReadyTimeout)
		defer cancel()
		probes := []struct {
			name string
			fn   func(context.Context) error
		}{
			{"postgres", cfg.Pool.Ping},
			{"hsm", cfg.HSM.Ping},
			{"vault", cfg.Secrets.Healthy},
		}
		status, checks := http.StatusOK, make([]check, 0, len(probes))
		for _, p := range probes {
			ch := check{Name: p.name, OK: true}
			if err := p.fn(ctx); err != nil {
				// The reason goes to the log, not to unauthenticated callers.
				ch.OK, status = false, http.StatusServiceUnavailable
				cfg.Logger.Warn("not ready", "check", p.name, "err", err,
					"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
			}
			checks = append(checks, ch)
		}
		return c.JSON(status, map[string]any{"ready": status == http.StatusOK, "checks": checks})
	}
}

// accessLog logs one JSON line per request with its request id, the route
// template (never the raw URL: ids only, but query strings could carry
// anything) and timings, and feeds the HTTP metrics.
func accessLog(log *slog.Logger, m *httpMetrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			elapsed := time.Since(start)
			// Tracing (internal/telemetry): name serve's server span by the
			// route template, never the raw path. Off, the span is a no-op.
			if span := trace.SpanFromContext(c.Request().Context()); span.IsRecording() {
				span.SetName("api " + c.Request().Method + " " + route)
				span.SetAttributes(attribute.String("http.route", route))
			}
			m.requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(status)).Inc()
			m.latency.WithLabelValues(c.Request().Method, route).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			attrs := []any{
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
				"method", c.Request().Method, "route", route, "status", status,
				"duration_ms", float64(elapsed.Microseconds()) / 1000,
			}
			var he *echo.HTTPError
			if err != nil && !(errors.As(err, &he) && he.Code < 500) {
				attrs = append(attrs, "err", err)
			}
			log.Log(c.Request().Context(), level, "http request", attrs...)
			return nil
		}
	}
}

// validRequestID accepts up to 128 characters of [A-Za-z0-9._-].
func validRequestID(id string) bool {
	if len(id) > 128 {
		return false
	}
	for _, r := range id {
		ok := r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}
