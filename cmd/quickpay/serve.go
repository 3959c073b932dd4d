package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/opsview"
	"github.com/quickpay/quickpay/internal/telemetry"
	"github.com/quickpay/quickpay/softhsm"
	"github.com/quickpay/quickpay/vaultkeys"
)

func cmdMigrate(ctx context.Context, args []string) error {
	var c config
	if err := newFlags("migrate", &c).Parse(args); err != nil {
		return err
	}
	pool, err := db.Open(ctx, db.Config{URL: c.DatabaseURL})
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := db.Migrate(ctx, pool); err != nil {
		return err
	}
	fmt.Println("migrations applied")
	return nil
}

// cmdServe runs the API and the River workers until SIGINT or SIGTERM, then
// drains: the listener closes, in-flight requests finish (up to 20s), and
// running jobs finish or are cancelled.
func cmdServe(ctx context.Context, args []string) error {
	var c config
	if err := newFlags("serve", &c).Parse(args); err != nil {
		return err
	}
	log := c.logger()

	pool, err := db.Open(ctx, db.Config{URL: c.DatabaseURL})
	if err != nil {
		return err
	}
	if err := db.Migrate(ctx, pool); err != nil {
		pool.Close()
		return err
	}
	pool.Close()

	tracing, err := telemetry.Start(ctx, telemetry.Config{Enabled: c.Tracing, SampleRatio: c.TraceSample})
	if err != nil {
		return err
	}
	defer func() {
		// Last, after the workers: their spans are exported too.
		flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := tracing.Shutdown(flush); err != nil {
			log.Error("tracing shutdown", "err", err)
		}
	}()
	c.tracing, c.metrics = tracing, prometheus.NewRegistry()
	s, err := c.newServer(ctx, log)
	if err != nil {
		return err
	}
	d, cfg := s.d, s.cfg
	defer d.close()
	startDevFaults(ctx, d.hsm, log)
	if err := d.river.Start(ctx); err != nil {
		return fmt.Errorf("start workers: %w", err)
	}
	schedCtx, stopScheduler := context.WithCancel(ctx)
	defer stopScheduler()
	go runScheduler(schedCtx, d.mandates, c.SchedulerInterval, log)
	// Metrics first, so that once the API answers both are up.
	mln, err := net.Listen("tcp", c.MetricsListen)
	if err != nil {
		return fmt.Errorf("listen on %s (--metrics-listen, QUICKPAY_METRICS_LISTEN): %w", c.MetricsListen, err)
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		mln.Close()
		return fmt.Errorf("listen on %s (--listen, QUICKPAY_LISTEN): %w", c.Listen, err)
	}
	console, err := c.consoleHandler(ctx, d, cfg, log)
	if err != nil {
		mln.Close()
		ln.Close()
		return err
	}
	cln, err := net.Listen("tcp", c.ConsoleListen)
	if err != nil {
		mln.Close()
		ln.Close()
		return fmt.Errorf("listen on %s (--console-listen, QUICKPAY_CONSOLE_LISTEN): %w", c.ConsoleListen, err)
	}
	srv, msrv, csrv := newHTTPServer(s.api), newHTTPServer(api.MetricsHandler(cfg.Metrics)), newHTTPServer(console)
	serveErr := make(chan error, 3)
	go func() { serveErr <- srv.Serve(ln) }()
	go func() { serveErr <- msrv.Serve(mln) }()
	go func() { serveErr <- csrv.Serve(cln) }()
	log.Info("quickpay serving", "addr", "http://"+ln.Addr().String(), "metrics", "http://"+mln.Addr().String()+"/metrics",
		"console", "http://"+cln.Addr().String(), "tracing", tracing.On())

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		_ = srv.Close()
		_ = msrv.Close()
		_ = csrv.Close()
		return err
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Error("http shutdown", "err", err)
	}
	_ = msrv.Shutdown(shutdown)
	_ = csrv.Shutdown(shutdown)
	if err := d.river.Stop(shutdown); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("workers shutdown", "err", err)
	}
	return nil
}

// server is what serve runs: its connections and workers, the merchant
// API's configuration and handler.
type server struct {
	d   *deps
	cfg api.Config
	// api is the merchant API: api.New's handler, inside a server span
	// when tracing is on, and nothing else when it is off.
	api http.Handler
}

// newServer opens serve's connections and composes the API over them,
// with c.metrics (when set) receiving every collector and c.tracing (when
// on) on the pool, River, the bank and webhook clients and the handler.
// The River client is not started.
func (c *config) newServer(ctx context.Context, log *slog.Logger) (*server, error) {
	d, err := c.open(ctx, log, true)
	if err != nil {
		return nil, err
	}
	if err := d.vault.Ensure(ctx); err != nil {
		d.close()
		return nil, err
	}
	cfg, err := c.apiConfig(ctx, d, log)
	if err != nil {
		d.close()
		return nil, err
	}
	cfg.Metrics = c.metrics
	if c.metrics != nil {
		views := opsview.New(d.pool)
		if c.Clock != nil {
			views = opsview.New(d.pool, opsview.WithClock(c.Clock))
		}
		if err := c.metrics.Register(opsview.NewCollector(views, opsview.CollectorConfig{})); err != nil {
			d.close()
			return nil, err
		}
	}
	return &server{d: d, cfg: cfg, api: c.tracing.Handler(api.New(cfg), "api")}, nil
}

// HTTP server timeouts. A request's headers and body are small (bodies are
// capped by the API) and come at once; a handler's longest wait is a bank
// call, bounded at 10s, plus HSM and database work. An idle keep-alive
// connection is closed after a while.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
)

// newHTTPServer is an http.Server for h with every timeout set, so that a
// slow or silent client cannot hold a connection and its goroutine forever.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout}
}

func cmdKeys(ctx context.Context, args []string) error {
	const keysUsage = "usage: quickpay keys list | rotate data|fp|jwt | retire data|fp|jwt --min-version N | provision-softhsm --dir DIR"
	if len(args) == 0 {
		return errors.New(keysUsage)
	}
	var c config
	fs := newFlags("keys "+args[0], &c)
	asJSON := fs.Bool("json", false, "print JSON")
	minVersion := fs.Int("min-version", 0, "retire: the oldest version decryption still accepts")
	actor := fs.String("actor", "cli:"+env("USER", "operator"), "who is acting, for the audit trail")
	hsmDir := fs.String("dir", "", "provision-softhsm: token directory")
	sub, rest := args[0], args[1:]
	var purpose vaultkeys.Purpose
	if sub == "rotate" || sub == "retire" {
		if len(rest) == 0 {
			return errors.New(keysUsage)
		}
		p, err := vaultkeys.ParsePurpose(rest[0])
		if err != nil {
			return err
		}
		purpose, rest = p, rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if sub == "provision-softhsm" {
		return provisionSoftHSM(ctx, c, *hsmDir)
	}
	d, err := c.open(ctx, c.logger(), false)
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.vault.Ensure(ctx); err != nil {
		return err
	}

	switch sub {
	case "list":
		keys, err := d.vault.List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(os.Stdout).Encode(keys)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "PURPOSE\tVERSION\tLABEL\tSTATE\tCREATED")
		for _, k := range keys {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", k.Purpose, k.Version, k.Label, k.State, k.CreatedAt.Format(time.RFC3339))
		}
		return w.Flush()
	case "rotate":
		pol, err := d.vault.Rotate(ctx, purpose, *actor)
		if err != nil {
			return err
		}
		fmt.Printf("%s is now current; rows are re-encrypted in the background by `quickpay serve`\n",
			vaultkeys.Label(purpose, pol.Current))
		return nil
	case "retire":
		if *minVersion < 1 {
			return errors.New("retire needs --min-version N")
		}
		if err := d.vault.SetMinDecryption(ctx, purpose, *minVersion, *actor); err != nil {
			return err
		}
		fmt.Printf("%s keys below v%s no longer decrypt\n", purpose, strconv.Itoa(*minVersion))
		return nil
	}
	return errors.New(keysUsage)
}

// provisionSoftHSM sets up a SoftHSM2 token for a container or a machine
// without `quickpay dev` (docker-compose uses it): the PINs come from Vault,
// or are generated and stored there on first run.
func provisionSoftHSM(ctx context.Context, c config, dir string) error {
	if dir == "" {
		return errors.New("provision-softhsm needs --dir")
	}
	secrets, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{
		Addr: c.VaultAddr, Token: c.VaultToken, RoleID: c.VaultRoleID, SecretID: c.VaultSecretID,
	})
	if err != nil {
		return err
	}
	defer secrets.Close()
	data, err := secrets.Read(ctx, c.HSMPINPath)
	if err != nil && !errors.Is(err, vaultkeys.ErrSecretNotFound) {
		return err
	}
	pin, _ := data["pin"].(string)
	so, _ := data["so_pin"].(string)
	if pin == "" || so == "" {
		pin, so = randomPIN(), randomPIN()
		if err := secrets.Write(ctx, c.HSMPINPath, map[string]any{"pin": pin, "so_pin": so}); err != nil {
			return err
		}
	}
	tok, err := softhsm.Provision(ctx, softhsm.Config{
		Dir: dir, TokenLabel: c.HSMToken, UserPIN: pin, SOPIN: so, Keys: vaultkeys.FirstLabels(),
	})
	if err != nil {
		return err
	}
	fmt.Printf("SOFTHSM2_CONF=%s\n", tok.ConfPath)
	return nil
}
