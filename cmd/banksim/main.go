// Command banksim is the simulated outside world: the issuing banks'
// quick-pay and withholding interfaces (ICBC and CMB speak json-hmac, CCB
// form-rsa; CMB answers charges asynchronously) and the SMS carrier
// (DESIGN.md, "banksim contract"; the wire contract is docs/banksim.md; the
// simulation lives in package internal/dev/sim).
//
// Usage:
//
//	banksim [--listen 127.0.0.1:0] [--config file.json] [--remote-control] [--log-level info]
//
// It prints its base URL (http://host:port) as the first line on stdout,
// logs to stderr, and serves until SIGINT or SIGTERM, then shuts down
// gracefully. GET /healthz answers {"status":"ok"}.
//
// The config file seeds the banks:
//
//	{"merchants": [{"bank_code": "ICBC", "merchant_no": "…", "hmac_secret": "…", "notify_url": "…"},
//	               {"bank_code": "CCB", "merchant_no": "…", "public_key_pem": "…"}],
//	 "accounts":  [{…same fields as POST /sim/accounts…}],
//	 "async_delay": "200ms"}
//
// A merchant's optional notify_url is where its bank posts
// agreement_terminated notices. The /sim/* test-control endpoints answer
// loopback clients only, unless --remote-control is given (e.g. banksim in
// a container driven by tests on the host).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quickpay/quickpay/internal/dev/sim"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	config := flag.String("config", "", "JSON file with merchants, accounts and async_delay")
	remote := flag.Bool("remote-control", false, "serve /sim/* test control to non-loopback clients too")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	if err := run(*listen, *config, *remote, *level); err != nil {
		fmt.Fprintln(os.Stderr, "banksim:", err)
		os.Exit(1)
	}
}

// fileConfig is the --config file.
type fileConfig struct {
	Merchants  []sim.Merchant `json:"merchants"`
	Accounts   []sim.Account  `json:"accounts"`
	AsyncDelay string         `json:"async_delay"`
}

// loadConfig reads the --config file into a sim.Config ("" gives the
// defaults).
func loadConfig(path string) (sim.Config, error) {
	var cfg sim.Config
	if path == "" {
		return cfg, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if fc.AsyncDelay != "" {
		d, err := time.ParseDuration(fc.AsyncDelay)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("config %s: async_delay: want a positive duration such as \"200ms\"", path)
		}
		cfg.AsyncDelay = d
	}
	cfg.Merchants, cfg.Accounts = fc.Merchants, fc.Accounts
	return cfg, nil
}

func run(listen, config string, remote bool, level string) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg, err := loadConfig(config)
	if err != nil {
		return err
	}
	cfg.RemoteControl = remote
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	defer s.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if _, err := fmt.Printf("http://%s\n", ln.Addr()); err != nil {
		return err
	}
	// Every timeout set; the write bound outlasts a "timeout" fault's hold
	// (sim.Config.MaxHold, 60s), which must reach the caller's own timeout.
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	cfg.Logger.Info("banksim serving", "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	cfg.Logger.Info("banksim shutting down")
	// Close first: it releases "timeout" fault holds, which would otherwise
	// keep Shutdown waiting.
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
