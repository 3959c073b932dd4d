// Command devvault runs a real HashiCorp Vault 1.21 server core on loopback for
// quickpay's local stack and tests, where no Vault package or Docker engine is
// available.
//
// It is Vault's own core (vault.NewCore) on in-memory storage, initialized with
// one unseal share and unsealed at start, serving Vault's real HTTP API. It
// mounts KV v2 at secret/ and enables AppRole at auth/approle, like
// `vault server -dev` does. Everything is lost when it stops.
//
// On start it prints one JSON line to stdout:
//
//	{"addr":"http://127.0.0.1:8200","token":"hvs.…"}
//
// and serves until SIGINT or SIGTERM.
//
// With -storage-dir DIR it is instead a Vault on file storage in DIR, as
// `vault server` with a file backend is: uninitialized at its first start,
// sealed at every start, and it initializes nothing (whoever starts it
// initializes and unseals it over Vault's HTTP API). It prints
// {"addr":"…"} only. This is the local stand-in for docker-compose.yml's
// vault service, so that the compose stack's dev-only init and unseal step
// (cmd/quickpay/docker/vaultunseal) runs twice against one storage, the
// second time as after `down`/`up`.
//
// This lives in its own Go module because Vault's server packages need
// dependency replacements that quickpay's main module must not carry.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/helper/testhelpers/corehelpers"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/sdk/physical/file"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to serve on")
	logLevel := flag.String("log-level", "error", "Vault log level (trace, debug, info, warn, error)")
	dir := flag.String("storage-dir", "", "serve a Vault on file storage in this directory, uninitialized or sealed, as `vault server` does")
	flag.Parse()

	if err := run(*listen, *dir, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "devvault:", err)
		os.Exit(1)
	}
}

func run(listen, dir, logLevel string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "devvault",
		Level:  hclog.LevelFromString(logLevel),
		Output: os.Stderr,
	})

	var storage physical.Backend
	var err error
	if dir != "" {
		storage, err = file.NewFileBackend(map[string]string{"path": dir}, logger)
	} else {
		storage, err = inmem.NewInmem(nil, logger)
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           storage,
		Logger:             logger,
		BuiltinRegistry:    corehelpers.NewMockBuiltinRegistry(),
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
	})
	if err != nil {
		return fmt.Errorf("vault core: %w", err)
	}
	defer core.Shutdown()

	if dir != "" {
		return serve(ctx, core, listen, "")
	}
	init, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig:  &vault.SealConfig{SecretShares: 1, SecretThreshold: 1},
		RecoveryConfig: nil,
	})
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if _, err := core.Unseal(init.SecretShares[0]); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}

	return serve(ctx, core, listen, init.RootToken)
}

// serve answers Vault's HTTP API for core on listen until ctx ends. Given
// the root token of a core it initialized, it first mounts what
// `vault server -dev` mounts and prints the token with the address.
func serve(ctx context.Context, core *vault.Core, listen, rootToken string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := "http://" + ln.Addr().String()
	srv := &http.Server{
		Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
			Core:           core,
			ListenerConfig: &configutil.Listener{Address: "127.0.0.1"},
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	announce := map[string]string{"addr": addr}
	if rootToken != "" {
		// Like `vault server -dev`: KV v2 at secret/ and AppRole enabled.
		if err := setup(ctx, addr, rootToken); err != nil {
			return err
		}
		announce["token"] = rootToken
	}
	line, _ := json.Marshal(announce)
	fmt.Println(string(line))

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func setup(ctx context.Context, addr, token string) error {
	calls := []struct{ path, body string }{
		{"/v1/sys/mounts/secret", `{"type":"kv","options":{"version":"2"}}`},
		{"/v1/sys/auth/approle", `{"type":"approle"}`},
	}
	for _, c := range calls {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+c.path, bytes.NewBufferString(c.body))
		if err != nil {
			return err
		}
		req.Header.Set("X-Vault-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("setup %s: %w", c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("setup %s: status %d", c.path, resp.StatusCode)
		}
	}
	return nil
}
