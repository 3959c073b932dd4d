package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/sms"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/vaultkeys"
)

var _ binding.Vault = (*vaultkeys.Vault)(nil)
var _ binding.Banks = (*channels.Registry)(nil)
var _ mandate.Cards = (*binding.Service)(nil)
var _ mandate.Hasher = (*vaultkeys.Vault)(nil)
var _ mandate.Jobs = (*river.Client[pgx.Tx])(nil)

// openBanks builds the bank adapters from their channel settings in Vault.
func (c *config) openBanks(ctx context.Context, d *deps, log *slog.Logger) (*channels.Registry, error) {
	limits, err := bankadapters.ParseLimits(c.BankLimits)
	if err != nil {
		return nil, err
	}
	opts := bankadapters.CallOptions{Timeout: 10 * time.Second, Logger: log}
	if c.tracing.On() {
		opts.HTTPClient = bankadapters.DefaultHTTPClient()
		opts.HTTPClient.Transport = c.tracing.Transport(opts.HTTPClient.Transport, "bank")
	}
	var observer *bankadapters.Observer
	if c.metrics != nil {
		if observer, err = bankadapters.NewObserver(c.metrics, c.tracing.Provider()); err != nil {
			return nil, err
		}
	}
	reg, err := channels.Open(ctx, channels.Config{
		Limits:  limits,
		Secrets: d.secrets, BaseURL: c.BanksimURL,
		Signer:   func(code string) formrsa.Signer { return d.hsm.BankSigner(code) },
		Options:  opts,
		Observer: observer,
	})
	if err != nil {
		return nil, fmt.Errorf("%w (with banksim: `quickpay banks connect-sim`; `make run` does it)", err)
	}
	return reg, nil
}

// openDomain builds the domain services over d: the bank channels, bindings
// and mandates, whose charge workers (registered by open) it completes.
func (c *config) openDomain(ctx context.Context, d *deps, log *slog.Logger) error {
	banks, err := c.openBanks(ctx, d, log)
	if err != nil {
		return err
	}
	smsURL := c.SMSURL
	if smsURL == "" && c.BanksimURL != "" {
		smsURL = strings.TrimRight(c.BanksimURL, "/") + "/carrier/sms"
	}
	carrier, err := sms.New(sms.Config{URL: smsURL})
	if err != nil {
		return err
	}
	publicURL := c.PublicURL
	if publicURL == "" {
		publicURL = "http://" + c.Listen
	}
	var otp *binding.OTPMetrics
	if c.metrics != nil {
		if otp, err = binding.NewOTPMetrics(c.metrics); err != nil {
			return err
		}
	}
	var mandates *mandate.Service
	bindings, err := binding.New(binding.Config{Pool: d.pool, Vault: d.vault, Banks: banks, Clock: c.Clock, Logger: log,
		Emit: d.hooks.Queue, Limiter: d.limiter, Limits: c.Limits.Binding, OTPMetrics: otp,
		CardEnded: func(ctx context.Context, tx pgx.Tx, merchantID, cardID, status string) error {
			return mandates.CancelForCard(ctx, tx, merchantID, cardID, status)
		}})
	if err != nil {
		return err
	}
	mandates, err = mandate.New(mandate.Config{
		Pool: d.pool, Cards: bindings, Hasher: d.vault, Banks: banks, SMS: carrier, Jobs: d.river, Emit: d.hooks.EmitAll,
		Logger: log, JobBatch: c.ChargeBatch, Clock: c.Clock, PhoneLimit: bindings, OTPMetrics: otp,
		NotifyURL: func(code string) string { return api.CallbackURL(publicURL, code) },
	})
	if err != nil {
		return err
	}
	if d.chargeW != nil {
		d.chargeW.Service, d.queryW.Service = mandates, mandates
		d.refundW.Service, d.settleW.Service = mandates, mandates
	}
	d.banks, d.bindings, d.mandates = banks, bindings, mandates
	return nil
}

// apiConfig composes the HTTP API over d (openDomain first).
func (c *config) apiConfig(ctx context.Context, d *deps, log *slog.Logger) (api.Config, error) {
	store, err := merchants.NewStore(merchants.Config{Pool: d.pool, Limiter: d.limiter, TokenFailures: c.Limits.TokenFailures,
		SourceFailures: c.Limits.SourceFailures})
	if err != nil {
		return api.Config{}, err
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: d.vault, Logger: log, TrustedProxies: c.Limits.TrustedProxies})
	if err != nil {
		return api.Config{}, err
	}
	rateLimit, err := api.NewRateLimit(api.RateLimitConfig{Ceilings: store})
	if err != nil {
		return api.Config{}, err
	}
	if d.bindings == nil {
		if err := c.openDomain(ctx, d, log); err != nil {
			return api.Config{}, err
		}
	}
	bindings := d.bindings
	return api.Config{
		Pool: d.pool, HSM: d.hsm, Secrets: d.secrets, Logger: log,
		Auth:        auth,
		Idempotency: d.idem.Middleware(api.MerchantID),
		RateLimit:   rateLimit.Middleware(),
		Areas: []api.Area{&api.Bindings{Service: bindings}, &api.Webhooks{Service: d.hooks, Merchants: store},
			&api.Mandates{Service: d.mandates, Banks: d.banks}, &api.Settlement{Files: d.mandates, Logger: log},
			&api.Sessions{Bindings: bindings, Mandates: d.mandates, Merchants: store, PublicURL: c.PublicURL,
				Clock: c.Clock, Logger: log}},
	}, nil
}
