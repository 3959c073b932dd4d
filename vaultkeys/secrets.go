package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Errors from Secrets, each with a message that says what to do.
var (
	ErrVaultUnreachable = errors.New("vault is unreachable")
	ErrVaultSealed      = errors.New("vault is sealed")
	ErrSecretNotFound   = errors.New("secret not found in vault")
	ErrVaultDenied      = errors.New("vault denied access")
)

// SecretsConfig configures the HashiCorp Vault client.
type SecretsConfig struct {
	// Addr is Vault's address (VAULT_ADDR). Required.
	Addr string
	// Token authenticates directly (dev; VAULT_TOKEN). Used when RoleID is empty.
	Token string
	// RoleID and SecretID log in with AppRole (production).
	RoleID, SecretID string
	// AppRoleMount is the AppRole auth mount. Defaults to "approle".
	AppRoleMount string
	// Timeout bounds each Vault request. Defaults to 10s.
	Timeout time.Duration
	// Logger receives renewal events. Defaults to slog.Default().
	Logger *slog.Logger
}

// Secrets reads and writes KV v2 secrets in HashiCorp Vault and keeps its
// token alive: a renewable token is renewed before it expires; an AppRole
// login is repeated when renewal ends.
type Secrets struct {
	cfg    SecretsConfig
	client *vault.Client
	log    *slog.Logger

	stop     context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// NewSecrets connects to Vault and authenticates.
func NewSecrets(ctx context.Context, cfg SecretsConfig) (*Secrets, error) {
	if cfg.Addr == "" {
		return nil, errors.New("vault address is empty: set VAULT_ADDR (`make run` writes it to .quickpay/env)")
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	vc := vault.DefaultConfig()
	vc.Address = cfg.Addr
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 1
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearNamespace()
	s := &Secrets{cfg: cfg, client: client, log: cfg.Logger, done: make(chan struct{})}

	var auth *vault.Secret
	switch {
	case cfg.RoleID != "":
		auth, err = s.appRoleLogin(ctx)
	case cfg.Token != "":
		client.SetToken(cfg.Token)
		auth, err = client.Auth().Token().LookupSelfWithContext(ctx)
	default:
		err = errors.New("no vault credentials: set VAULT_TOKEN, or an AppRole role id and secret id")
	}
	if err != nil {
		return nil, s.explain(ctx, "authenticate", err)
	}

	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	go s.keepAlive(rctx, auth)
	return s, nil
}

func (s *Secrets) appRoleLogin(ctx context.Context) (*vault.Secret, error) {
	sec, err := s.client.Logical().WriteWithContext(ctx, "auth/"+s.cfg.AppRoleMount+"/login", map[string]any{
		"role_id": s.cfg.RoleID, "secret_id": s.cfg.SecretID,
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Auth == nil {
		return nil, errors.New("approle login returned no token")
	}
	s.client.SetToken(sec.Auth.ClientToken)
	return sec, nil
}

// keepAlive renews the token while it is renewable and logs in again with
// AppRole when renewal stops. A root or non-expiring token needs nothing.
func (s *Secrets) keepAlive(ctx context.Context, auth *vault.Secret) {
	defer close(s.done)
	for {
		renewable, _ := auth.TokenIsRenewable()
		ttl, _ := auth.TokenTTL()
		if !renewable || ttl == 0 {
			if s.cfg.RoleID == "" {
				return
			}
		}
		if renewable && ttl > 0 {
			w, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: auth})
			if err != nil {
				s.log.Error("vault token renewal", "err", err)
				return
			}
			go w.Start()
		watch:
			for {
				select {
				case <-ctx.Done():
					w.Stop()
					return
				case err := <-w.DoneCh():
					if err != nil {
						s.log.Warn("vault token renewal stopped", "err", err)
					}
					break watch
				case <-w.RenewCh():
					s.log.Debug("vault token renewed")
				}
			}
		}
		if s.cfg.RoleID == "" {
			s.log.Error("vault token can no longer be renewed; restart with a fresh VAULT_TOKEN")
			return
		}
		for {
			var err error
			if auth, err = s.appRoleLogin(ctx); err == nil {
				break
			}
			s.log.Error("vault approle login", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// Close stops token renewal.
func (s *Secrets) Close() {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			s.stop()
			<-s.done
		}
	})
}

// Client is the underlying vault/api client, for tools and tests.
func (s *Secrets) Client() *vault.Client { return s.client }

// splitPath turns "secret/quickpay/hsm" into mount "secret" and path
// "quickpay/hsm".
func splitPath(p string) (mount, path string, err error) {
	mount, path, ok := strings.Cut(strings.Trim(p, "/"), "/")
	if !ok || mount == "" || path == "" {
		return "", "", fmt.Errorf("vault path %q: want <kv mount>/<path>", p)
	}
	return mount, path, nil
}

// Read returns the data of the KV v2 secret at path ("secret/quickpay/hsm").
func (s *Secrets) Read(ctx context.Context, path string) (map[string]any, error) {
	mount, p, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	sec, err := s.client.KVv2(mount).Get(ctx, p)
	if err != nil {
		return nil, s.explain(ctx, "read "+path, err)
	}
	return sec.Data, nil
}

// ReadString returns one string field of the KV v2 secret at path.
func (s *Secrets) ReadString(ctx context.Context, path, key string) (string, error) {
	data, err := s.Read(ctx, path)
	if err != nil {
		return "", err
	}
	v, ok := data[key].(string)
	if !ok || v == "" {
		return "", fmt.Errorf("%w: vault secret %s at %s has no field %q (write it with `vault kv put %s %s=…`)",
			ErrSecretNotFound, path, s.cfg.Addr, key, path, key)
	}
	return v, nil
}

// Write stores data as a new version of the KV v2 secret at path.
func (s *Secrets) Write(ctx context.Context, path string, data map[string]any) error {
	mount, p, err := splitPath(path)
	if err != nil {
		return err
	}
	if _, err := s.client.KVv2(mount).Put(ctx, p, data); err != nil {
		return s.explain(ctx, "write "+path, err)
	}
	return nil
}

// Healthy reports whether Vault answers and is unsealed.
func (s *Secrets) Healthy(ctx context.Context) error {
	h, err := s.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return s.explain(ctx, "health", err)
	}
	if h.Sealed {
		return fmt.Errorf("%w: vault at %s is sealed: unseal it", ErrVaultSealed, s.cfg.Addr)
	}
	return nil
}

// PIN returns a PINSource that reads field key of the secret at path each
// time the HSM logs in.
func (s *Secrets) PIN(path, key string) PINSource { return vaultPIN{s, path, key} }

type vaultPIN struct {
	s         *Secrets
	path, key string
}

func (p vaultPIN) PIN(ctx context.Context) (string, error) { return p.s.ReadString(ctx, p.path, p.key) }

// explain turns a vault/api error into one of this file's errors with a
// message an operator can act on. It never includes secret values: vault/api
// errors carry only status codes and Vault's messages.
func (s *Secrets) explain(ctx context.Context, op string, err error) error {
	addr := s.cfg.Addr
	var uerr *url.Error
	var nerr *net.OpError
	if errors.As(err, &nerr) || (errors.As(err, &uerr) && !errors.Is(err, context.Canceled)) {
		return fmt.Errorf("%w: %s: vault at %s does not answer (is it running? `make run` starts one; check VAULT_ADDR): %v",
			ErrVaultUnreachable, op, addr, err)
	}
	if errors.Is(err, vault.ErrSecretNotFound) {
		return fmt.Errorf("%w: %s: no such secret in vault at %s", ErrSecretNotFound, op, addr)
	}
	var rerr *vault.ResponseError
	if errors.As(err, &rerr) {
		switch rerr.StatusCode {
		case 503:
			if st, serr := s.client.Sys().SealStatusWithContext(ctx); serr == nil && st.Sealed {
				return fmt.Errorf("%w: %s: vault at %s is sealed: unseal it (`vault operator unseal`)", ErrVaultSealed, op, addr)
			}
		case 403:
			return fmt.Errorf("%w: %s: vault at %s refused the token (expired, or its policy lacks this path)", ErrVaultDenied, op, addr)
		case 404:
			return fmt.Errorf("%w: %s: vault at %s has no such secret or mount", ErrSecretNotFound, op, addr)
		}
	}
	return fmt.Errorf("vault %s: %w", op, err)
}
