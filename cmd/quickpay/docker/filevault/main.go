// Command filevault runs a real HashiCorp Vault 1.21 server core on loopback
// over file storage, uninitialized and sealed at its first start and sealed at
// every later one, as `vault server` with a file backend is. It is the local
// stand-in for docker-compose.yml's vault service, so that the compose stack's
// dev-only init and unseal step (cmd/quickpay/docker/vaultunseal) can be run
// twice against one storage directory, the second time as after `down`/`up`.
//
// Unlike internal/dev/devvault it initializes nothing: whoever starts it
// initializes and unseals it over Vault's HTTP API.
//
// On start it prints one JSON line to stdout, {"addr":"http://127.0.0.1:port"},
// and serves until SIGINT or SIGTERM.
//
// It lives in its own Go module, with devvault's dependency replacements,
// because Vault's server packages need replacements quickpay's main module
// must not carry.
package main

import (
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
	"github.com/hashicorp/vault/sdk/physical/file"
	"github.com/hashicorp/vault/vault"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to serve on")
	dir := flag.String("storage-dir", "", "directory of Vault's file storage (required)")
	logLevel := flag.String("log-level", "error", "Vault log level (trace, debug, info, warn, error)")
	flag.Parse()

	if err := run(*listen, *dir, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "filevault:", err)
		os.Exit(1)
	}
}

func run(listen, dir, logLevel string) error {
	if dir == "" {
		return errors.New("-storage-dir is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "filevault",
		Level:  hclog.LevelFromString(logLevel),
		Output: os.Stderr,
	})
	storage, err := file.NewFileBackend(map[string]string{"path": dir}, logger)
	if err != nil {
		return fmt.Errorf("file storage: %w", err)
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

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
			Core:           core,
			ListenerConfig: &configutil.Listener{Address: "127.0.0.1"},
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	line, _ := json.Marshal(map[string]string{"addr": "http://" + ln.Addr().String()})
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
