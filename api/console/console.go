package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/labstack/echo/v4/middleware"
	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/quickpay/quickpay/internal/audit"
)

// CSP is every console page's Content-Security-Policy: no script at all,
// styles and images from the console itself (data: for the enrolment QR
// code), forms posting only back to it, never framed.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// Config wires the console. Every dependency is required unless it says
// otherwise: the console fails loudly rather than show a page it cannot
// fill.
type Config struct {
	Operators Operators
	Views     Views
	Audit     audit.Execer // where the console's own audit rows go (the pool)
	Merchants Merchants
	Mandates  Mandates
	Bindings  Bindings
	Webhooks  Webhooks
	Vault     Vault
	// OnceKeys keeps the one-time keys of refund forms, so that a form
	// submitted twice refunds once (api/idempotency's store).
	OnceKeys OnceKeys
	// Jobs is River's UI, served at JobsPath behind the console's login.
	// Optional: without it /jobs/ answers 404.
	Jobs http.Handler
	// Secure marks the session cookie Secure. cmd/quickpay sets it unless
	// the console listens on a loopback address (a browser would not send
	// a Secure cookie back over plain http to a non-loopback host).
	Secure bool
	// OverviewTTL is how long the overview's figures are kept before they
	// are read again. Defaults to 10s; negative reads them on every view.
	OverviewTTL time.Duration
	// PageSize is how many rows a list page shows. Defaults to 50.
	PageSize int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Location is the time zone pages show times in. Defaults to
	// Asia/Shanghai, the institution's.
	Location *time.Location
	// Now is the clock of login messages ("try again after 14:05") and
	// time filters. Defaults to time.Now.
	Now func() time.Time
}

// Console is the operator console's HTTP handler.
type Console struct {
	cfg           Config
	log           *slog.Logger
	echo          *echo.Echo
	pages         map[string]*template.Template
	overviewCache overviewCache
	cookies       cookieNames
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Operators == nil || cfg.Views == nil || cfg.Audit == nil || cfg.Merchants == nil || cfg.Mandates == nil ||
		cfg.Bindings == nil || cfg.Webhooks == nil || cfg.Vault == nil || cfg.OnceKeys == nil {
		return nil, errors.New("console: Config needs Operators, Views, Audit, Merchants, Mandates, Bindings, " +
			"Webhooks, Vault and OnceKeys")
	}
	if cfg.OverviewTTL == 0 {
		cfg.OverviewTTL = 10 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Location == nil {
		loc, err := time.LoadLocation("Asia/Shanghai")
		if err != nil {
			return nil, fmt.Errorf("console: time zone: %w", err)
		}
		cfg.Location = loc
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, log: cfg.Logger, cookies: newCookieNames(cfg.Secure)}
	c.pages = parsePages(c.funcs())
	c.echo = c.routes()
	return c, nil
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.echo.ServeHTTP(w, r) }

func (c *Console) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = c.errorHandler
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		// The console sits behind no proxy that names requests: every id is
		// its own, so none from outside reaches the logs or the audit trail.
		Skipper: func(ec echo.Context) bool {
			ec.Request().Header.Del(echo.HeaderXRequestID)
			return false
		},
	}))
	e.Use(c.accessLog, withRequestID)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}))

	pages := e.Group("", pagekit.Headers(CSP))
	pages.GET("/assets/:file", pagekit.Assets(staticFS, "static"))
	pages.GET("/login", c.loginPage)
	pages.POST("/login", c.login)

	in := pages.Group("", c.session)
	in.POST("/logout", c.logout)
	in.GET("/", c.overview)
	in.POST("/search", c.search)
	in.GET("/cards/find", c.findCardPage)
	in.POST("/cards/find", c.findCard)

	in.GET("/merchants", c.merchantList)
	in.GET("/merchants/:id", c.merchant)
	in.GET("/members/:id", c.member)
	in.GET("/cards", c.cardList)
	in.GET("/cards/:id", c.card)
	in.GET("/mandates", c.mandateList)
	in.GET("/bindings/:id", c.binding)
	in.GET("/mandates/:id", c.mandate)
	in.GET("/charges", c.chargeList)
	in.GET("/charges/:id", c.charge)
	in.GET("/refunds", c.refundList)
	in.GET("/refunds/:id", c.refund)
	in.GET("/events", c.eventList)
	in.GET("/events/:id", c.event)
	in.GET("/unknown", c.unknownList)
	in.GET("/mismatches", c.mismatchList)
	in.GET("/backlog", c.backlogList)
	in.GET("/audit", c.auditList)

	c.actions(in)

	if c.cfg.Jobs != nil {
		jobs := e.Group(JobsPath, c.jobsHeaders, c.jobsSession, c.jobsGuard)
		h := echo.WrapHandler(c.cfg.Jobs)
		jobs.Any("", h)
		jobs.Any("/*", h)
	}
	return e
}

// withRequestID puts the request id into the request's context, so that
// audit rows written under it (the console's and the domain's) name it.
func withRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		r := ec.Request()
		ec.SetRequest(r.WithContext(audit.WithRequestID(r.Context(), requestID(ec))))
		return next(ec)
	}
}

func requestID(ec echo.Context) string { return ec.Response().Header().Get(echo.HeaderXRequestID) }

// accessLog logs one line per request: its id, the route template (never
// the raw URL), the status, the operator and the time taken. Form values
// are never logged: a card search carries a card number.
func (c *Console) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		start := time.Now()
		err := next(ec)
		if err != nil {
			ec.Error(err)
		}
		route := ec.Path()
		if route == "" {
			route = "unmatched"
		}
		status := ec.Response().Status
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		attrs := []any{"request_id", requestID(ec), "method", ec.Request().Method, "route", route, "status", status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000}
		if s, ok := sessionOf(ec); ok {
			attrs = append(attrs, "operator_id", s.Operator.ID)
		}
		c.log.Log(context.WithoutCancel(ec.Request().Context()), level, "console request", attrs...)
		return nil
	}
}
