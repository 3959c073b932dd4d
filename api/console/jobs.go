package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/quickpay/quickpay/api/pagekit"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/operators"
)

// JobsPath is where River's UI is served inside the console.
const JobsPath = "/jobs"

// JobsCSP is River's UI's Content-Security-Policy: looser than the pages'
// only as far as its bundled single-page app needs. Its scripts are files
// of the console's origin (script-src 'self': no inline script and no
// eval; the bundle's one Function("") is a feature probe of its schema
// library, which falls back when refused). Its components set inline
// styles, so style-src adds 'unsafe-inline' (styles only: no script runs
// from them). It reads its JSON API on the same origin (connect-src
// 'self') and shows its own icons (img-src 'self' data:). Nothing from
// another origin, never framed.
const JobsCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// JobsChangeRole is the role that may change jobs and queues in River's
// UI (cancel, retry, delete a job; pause, resume, update a queue): those
// touch charges and refunds in flight. Every role may look.
const JobsChangeRole = operators.RoleAdmin

// NewJobs returns River's UI over client, mounted at JobsPath, with its
// background services started under ctx (they stop with it). Job
// arguments are hidden in its lists by default.
func NewJobs(ctx context.Context, client *river.Client[pgx.Tx], log *slog.Logger) (http.Handler, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints:                riverui.NewEndpoints(client, nil),
		JobListHideArgsByDefault: true,
		Logger:                   log,
		Prefix:                   JobsPath,
	})
	if err != nil {
		return nil, fmt.Errorf("console: river ui: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return nil, fmt.Errorf("console: start river ui: %w", err)
	}
	return h, nil
}

// jobsHeaders sets River's UI's headers (JobsCSP).
func (c *Console) jobsHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		pagekit.SetHeaders(ec.Response().Header(), JobsCSP)
		return next(ec)
	}
}

// jobsGuard lets every operator read River's UI and only JobsChangeRole
// change anything. River's UI sends no console CSRF token: a change is
// taken only from a script of this origin (Sec-Fetch-Site same-origin
// and an Origin of this host, which a form or script elsewhere cannot
// forge) with a JSON body (which a form cannot send), on top of the
// SameSite=Strict session cookie. Each change is audited (console.jobs).
func (c *Console) jobsGuard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		r := ec.Request()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return next(ec)
		}
		s, _ := sessionOf(ec)
		if !s.Operator.Role.AtLeast(JobsChangeRole) {
			return ec.JSON(http.StatusForbidden, map[string]string{"message": "changing jobs needs the " + string(JobsChangeRole) + " role"})
		}
		if !sameOrigin(r) || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			return ec.JSON(http.StatusForbidden, map[string]string{"message": "cross-origin or non-JSON request refused"})
		}
		// Run to the end, audit row included, whatever the browser does.
		return detach(func(ec echo.Context) error {
			if err := next(ec); err != nil {
				return err
			}
			outcome := audit.OutcomeOK
			if ec.Response().Status >= 400 {
				outcome = audit.OutcomeFailed
			}
			return c.record(ec, "", "console.jobs", strings.TrimPrefix(r.URL.Path, JobsPath),
				map[string]any{"method": r.Method, "status": ec.Response().Status, "outcome": outcome})
		})(ec)
	}
}

// sameOrigin reports whether r came from a script of the console's own
// origin.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	o, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && o.Host != "" && o.Host == r.Host
}
