package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/devstack"
	"github.com/quickpay/quickpay/internal/dev/pgcluster"
	"github.com/quickpay/quickpay/softhsm"
	"github.com/quickpay/quickpay/vaultkeys"
)

// cmdDev brings up the whole local stack and keeps it up until Ctrl-C:
// Postgres (QUICKPAY_DATABASE_URL, or a private cluster in .quickpay/pg —
// as root, kept in the postgres user's home and linked from .quickpay/pg when
// that user cannot enter the checkout: package pgcluster), a
// SoftHSM2 token in .quickpay/softhsm, a real Vault server holding the HSM
// PIN, migrations and keys, banksim, and `quickpay serve`. It writes
// .quickpay/env for other terminals and removes it on exit. A second run
// reuses the cluster and the token.
func cmdDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("quickpay dev", flag.ContinueOnError)
	dir := fs.String("dir", ".quickpay", "state directory")
	listen := fs.String("listen", env("QUICKPAY_LISTEN", "127.0.0.1:8080"), "API listen address; a free port is used when it is taken (QUICKPAY_LISTEN)")
	metricsListen := fs.String("metrics-listen", env("QUICKPAY_METRICS_LISTEN", defaultMetricsListen),
		"serve's /metrics listen address; a free port is used when it is taken (QUICKPAY_METRICS_LISTEN)")
	consoleListen := fs.String("console-listen", env("QUICKPAY_CONSOLE_LISTEN", defaultConsoleListen),
		"the operator console's listen address; a free port is used when it is taken (QUICKPAY_CONSOLE_LISTEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	state, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	step := func(format string, a ...any) { fmt.Printf("▸ "+format+"\n", a...) }
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()

	// 1. PostgreSQL.
	dbURL := os.Getenv("QUICKPAY_DATABASE_URL")
	if dbURL == "" {
		pgDir := filepath.Join(state, "pg")
		step("postgres: private cluster in %s", pgDir)
		cl, err := pgcluster.Start(ctx, pgDir)
		if err != nil {
			return err
		}
		if cl.Dir != pgDir {
			step("postgres: its data is in %s (linked from %s): the postgres user may not enter this checkout's folders, which keep their modes", cl.Dir, pgDir)
		}
		stops = append(stops, func() { step("stopping postgres"); _ = cl.Stop() })
		if _, err := cl.EnsureDatabase(ctx, "quickpay"); err != nil {
			return err
		}
		dbURL = cl.URL("quickpay")
	} else {
		step("postgres: %s", redactURL(dbURL))
	}

	// 2. SoftHSM2 token; its PINs stay in the state dir (dev only) so a
	// second run can unlock the same token.
	hsmDir := filepath.Join(state, "softhsm")
	pins, err := devPINs(filepath.Join(hsmDir, "pins.json"))
	if err != nil {
		return err
	}
	labels := vaultkeys.FirstLabels()
	tok, err := softhsm.Provision(ctx, softhsm.Config{
		Dir: hsmDir, TokenLabel: "quickpay", UserPIN: pins.User, SOPIN: pins.SO, Keys: labels,
	})
	if err != nil {
		return err
	}
	step("softhsm: token %q (%s)", tok.Label, tok.ConfPath)

	// 3. Vault, with the HSM PIN in it.
	vault, err := devstack.StartVault(ctx, "")
	if err != nil {
		return err
	}
	stops = append(stops, func() { step("stopping vault"); _ = vault.Stop() })
	secrets, err := vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{Addr: vault.Addr, Token: vault.Token})
	if err != nil {
		return err
	}
	defer secrets.Close()
	if err := secrets.Write(ctx, "secret/quickpay/hsm", map[string]any{"pin": pins.User}); err != nil {
		return err
	}
	step("vault: %s (HSM PIN at secret/quickpay/hsm)", vault.Addr)

	// 4. Migrations and keys.
	c := config{DatabaseURL: dbURL, VaultAddr: vault.Addr, VaultToken: vault.Token, HSMModule: tok.Module,
		HSMToken: tok.Label, HSMPINPath: "secret/quickpay/hsm", LogLevel: "warn"}
	pool, err := db.Open(ctx, db.Config{URL: dbURL})
	if err != nil {
		return err
	}
	err = db.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}
	d, err := c.open(ctx, c.logger(), false)
	if err != nil {
		return err
	}
	defer d.close() // closed below, before serve opens the token; this covers early returns
	if err := d.vault.Ensure(ctx); err != nil {
		return err
	}
	step("migrations applied; keys %s ready", strings.Join(labels, ", "))

	// 5. banksim.
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	banksimBin := filepath.Join(filepath.Dir(exe), "banksim")
	if _, err := os.Stat(banksimBin); err != nil {
		return fmt.Errorf("banksim binary not found next to quickpay (%s): build both with `make run`", banksimBin)
	}
	bs, line, err := devstack.StartProc("banksim", exec.Command(banksimBin, "--listen", "127.0.0.1:0"), 30*time.Second)
	if err != nil {
		return err
	}
	stops = append(stops, func() { step("stopping banksim"); _ = bs.Stop() })
	banksimURL := strings.TrimSpace(line)
	// serve's address is chosen now: the banks post their notices to it.
	addr, err := pickAddr(*listen)
	if err != nil {
		return err
	}
	baseURL := "http://" + addr
	if err := setupBanks(ctx, banksimURL, secrets, d.hsm, true, notifyTo(baseURL)); err != nil {
		return err
	}
	demo, err := ensureDemoMerchant(ctx, filepath.Join(state, "demo-merchant.json"), d.pool)
	if err != nil {
		return fmt.Errorf("demo merchant: %w", err)
	}
	d.close()
	step("banksim: %s (bank credentials in vault at secret/quickpay/banks/<code>)", banksimURL)

	// 6. quickpay serve.
	metricsAddr, err := pickAddr(*metricsListen)
	if err != nil {
		return err
	}
	if metricsAddr == addr { // both asked for port 0, or the same port
		if metricsAddr, err = pickAddr("127.0.0.1:0"); err != nil {
			return err
		}
	}
	consoleAddr, err := pickAddr(*consoleListen)
	if err != nil {
		return err
	}
	if consoleAddr == addr || consoleAddr == metricsAddr {
		if consoleAddr, err = pickAddr("127.0.0.1:0"); err != nil {
			return err
		}
	}
	// Every address a process started from the env file needs: serve's
	// own, and the one banks call back at (`charges run-due` tells async
	// banks its public URL; without it, it would say http://127.0.0.1:8080).
	serveEnv := map[string]string{
		"QUICKPAY_URL":                baseURL,
		"QUICKPAY_LISTEN":             addr,
		"QUICKPAY_PUBLIC_URL":         baseURL,
		"QUICKPAY_METRICS_LISTEN":     metricsAddr,
		"QUICKPAY_CONSOLE_LISTEN":     consoleAddr,
		"QUICKPAY_CONSOLE_URL":        "http://" + consoleAddr,
		"QUICKPAY_DATABASE_URL":       dbURL,
		"QUICKPAY_BANKSIM_URL":        banksimURL,
		"VAULT_ADDR":                  vault.Addr,
		"VAULT_TOKEN":                 vault.Token,
		"SOFTHSM2_CONF":               tok.ConfPath,
		"QUICKPAY_HSM_MODULE":         tok.Module,
		"QUICKPAY_HSM_TOKEN_LABEL":    tok.Label,
		"QUICKPAY_DEMO_CLIENT_ID":     demo.ClientID,
		"QUICKPAY_DEMO_CLIENT_SECRET": demo.ClientSecret,
		// Local receivers are the point in dev.
		"QUICKPAY_WEBHOOKS_ALLOW_PRIVATE": "true",
	}
	cmd := exec.Command(exe, "serve", "--listen", addr, "--metrics-listen", metricsAddr, "--console-listen", consoleAddr)
	cmd.Env = os.Environ()
	for k, v := range serveEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	serve, err := startServe(ctx, cmd, baseURL)
	if err != nil {
		return err
	}
	stops = append(stops, func() { step("stopping quickpay serve"); _ = serve.Stop() })

	envPath := filepath.Join(state, "env")
	if err := writeEnv(envPath, serveEnv); err != nil {
		return err
	}
	stops = append(stops, func() { _ = os.Remove(envPath) })

	fmt.Printf(`
quickpay is running at %[1]s

  curl %[1]s/readyz
  curl http://%[4]s/metrics     (metrics: their own loopback listener, not the API's)

The operator console is at http://%[5]s; create an operator first (it prints the
password and a TOTP URI for an authenticator app, once):

  go run ./cmd/quickpay operators create --name admin --role admin

In another terminal, use the CLI against this stack:

  set -a; . %[2]s; set +a
  go run ./cmd/quickpay keys list

Ctrl-C stops everything; the next `+"`make run`"+` reuses the data in %[3]s.
`, baseURL, envPath, state, metricsAddr, consoleAddr)
	printDemoCardholders()
	if link, err := demoSessionLink(ctx, baseURL, demo); err != nil {
		fmt.Printf("\n(no hosted binding link: %v)\n", err)
	} else {
		fmt.Printf(`
Bind a card as a cardholder would, in a browser on this machine (the hosted page; the link
works once, for 30 minutes): type a demo cardholder's elements above, then the bank's code
from banksim's inbox (curl -s '%[2]s/sim/sms?phone=<phone>'):

  %[1]s
`, link, banksimURL)
	}
	printWalkthrough(baseURL, banksimURL, demo)

	select {
	case <-ctx.Done():
		fmt.Println()
		return nil
	case <-serve.Done():
		return fmt.Errorf("quickpay serve exited: %v", serve.Err())
	case <-bs.Done():
		return fmt.Errorf("banksim exited: %v", bs.Err())
	case <-vault.Done():
		return fmt.Errorf("vault exited: %v", vault.Err())
	}
}

// startServe starts `quickpay serve` and waits until /readyz answers 200.
func startServe(ctx context.Context, cmd *exec.Cmd, baseURL string) (*devstack.Proc, error) {
	p, err := devstack.StartBackground("quickpay serve", cmd)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(baseURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("quickpay serve exited at start: %v", p.Err())
		case <-ctx.Done():
			_ = p.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.Stop()
			return nil, errors.New("quickpay serve not ready within 60s")
		}
	}
}

type devPINSet struct {
	User string `json:"user_pin"`
	SO   string `json:"so_pin"`
}

func devPINs(path string) (devPINSet, error) {
	var p devPINSet
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &p); err != nil || p.User == "" || p.SO == "" {
			return p, fmt.Errorf("%s is damaged; remove %s to start the token afresh", path, filepath.Dir(path))
		}
		return p, nil
	}
	p = devPINSet{User: randomPIN(), SO: randomPIN()}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return p, err
	}
	b, _ := json.Marshal(p)
	return p, os.WriteFile(path, b, 0o600)
}

// writeEnv writes every one of vars in shell syntax: DESIGN.md's names
// first, in a stable order, then the rest sorted.
func writeEnv(path string, vars map[string]string) error {
	order := []string{"QUICKPAY_URL", "QUICKPAY_DATABASE_URL", "QUICKPAY_BANKSIM_URL", "VAULT_ADDR", "VAULT_TOKEN",
		"SOFTHSM2_CONF", "QUICKPAY_HSM_MODULE", "QUICKPAY_HSM_TOKEN_LABEL", "QUICKPAY_DEMO_CLIENT_ID", "QUICKPAY_DEMO_CLIENT_SECRET",
		"QUICKPAY_CONSOLE_URL"}
	var rest []string
	for k := range vars {
		if !slices.Contains(order, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	var b strings.Builder
	b.WriteString("# written by `quickpay dev` while the local stack runs; removed when it stops\n")
	for _, k := range append(order, rest...) {
		v, ok := vars[k]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "%s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// pickAddr returns addr if it names a port that is free now, else a free
// loopback port.
func pickAddr(addr string) (string, error) {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func redactURL(u string) string {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// randomPIN returns 16 hex digits from crypto/rand.
func randomPIN() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
