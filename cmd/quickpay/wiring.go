package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/vaultkeys"
)

var _ binding.Vault = (*vaultkeys.Vault)(nil)
var _ binding.Banks = (*channels.Registry)(nil)

// openBanks builds the bank adapters from their channel settings in Vault.
func (c *config) openBanks(ctx context.Context, d *deps, log *slog.Logger) (*channels.Registry, error) {
	reg, err := channels.Open(ctx, channels.Config{
		Secrets: d.secrets, BaseURL: c.BanksimURL,
		Signer:  func(code string) formrsa.Signer { return d.hsm.BankSigner(code) },
		Options: bankadapters.CallOptions{Timeout: 10 * time.Second, Logger: log},
	})
	if err != nil {
		return nil, fmt.Errorf("%w (with banksim: `quickpay banks connect-sim`; `make run` does it)", err)
	}
	return reg, nil
}

// apiConfig composes the HTTP API over d: auth, the bindings area and,
// as they land, the others.
func (c *config) apiConfig(ctx context.Context, d *deps, log *slog.Logger) (api.Config, error) {
	store, err := merchants.NewStore(merchants.Config{Pool: d.pool})
	if err != nil {
		return api.Config{}, err
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: d.vault, Logger: log})
	if err != nil {
		return api.Config{}, err
	}
	banks, err := c.openBanks(ctx, d, log)
	if err != nil {
		return api.Config{}, err
	}
	bindings, err := binding.New(binding.Config{Pool: d.pool, Vault: d.vault, Banks: banks, Logger: log,
		Emit: func(ctx context.Context, tx pgx.Tx, merchantID, eventType string, data any) error {
			_, err := d.hooks.Emit(ctx, tx, merchantID, eventType, data)
			return err
		}})
	if err != nil {
		return api.Config{}, err
	}
	return api.Config{
		Pool: d.pool, HSM: d.hsm, Secrets: d.secrets, Logger: log,
		Auth:        auth,
		Idempotency: d.idem.Middleware(api.MerchantID),
		Areas:       []api.Area{&api.Bindings{Service: bindings}, &api.Webhooks{Service: d.hooks}},
	}, nil
}
