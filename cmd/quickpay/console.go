package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/console"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/vaultkeys"
)

var (
	_ console.Operators = (*operators.Store)(nil)
	_ console.Views     = (*opsview.Reader)(nil)
	_ console.Merchants = (*merchants.Store)(nil)
	_ console.Mandates  = (*mandate.Service)(nil)
	_ console.Bindings  = (*binding.Service)(nil)
	_ console.Webhooks  = (*webhooks.Service)(nil)
	_ console.Vault     = (*vaultkeys.Vault)(nil)
	_ console.OnceKeys  = (*idempotency.Store)(nil)
)

// consoleHandler builds the operator console (package api/console) over d,
// served by serve on --console-listen, with River's UI inside it. Its
// cookies are Secure as consoleSecure says.
func (c *config) consoleHandler(ctx context.Context, d *deps, _ api.Config, log *slog.Logger) (http.Handler, error) {
	store, err := merchants.NewStore(merchants.Config{Pool: d.pool, Limiter: d.limiter, TokenFailures: c.Limits.TokenFailures,
		SourceFailures: c.Limits.SourceFailures})
	if err != nil {
		return nil, err
	}
	ops, err := operators.NewStore(operators.Config{Pool: d.pool, Sealer: d.vault, Clock: c.Clock})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	jobs, err := console.NewJobs(ctx, d.river, log)
	if err != nil {
		return nil, err
	}
	cfg := console.Config{
		Operators: ops, Views: opsview.New(d.pool), Audit: d.pool, Merchants: store,
		Mandates: d.mandates, Bindings: d.bindings, Webhooks: d.hooks, Vault: d.vault, OnceKeys: d.idem,
		Jobs: jobs, Secure: consoleSecure(c.ConsoleListen, c.ConsoleURL), Logger: log,
	}
	if c.Clock != nil {
		cfg.Views, cfg.Now = opsview.New(d.pool, opsview.WithClock(c.Clock)), c.Clock.Now
	}
	return console.New(cfg)
}

// consoleSecure reports whether the console's cookies are Secure: as the
// scheme of the URL browsers reach it at (an https proxy in front of a
// console on loopback), or, without one, unless it listens on loopback.
func consoleSecure(listen, publicURL string) bool {
	if publicURL != "" {
		return strings.HasPrefix(publicURL, "https://")
	}
	return !loopbackAddr(listen)
}

// loopbackAddr reports whether addr (host:port) names a loopback host.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return binding.IsLoopbackHost(host)
}
