package main

import (
	"flag"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigParseErrors: every typed setting, from its variable or its
// flag, either parses to what was meant or stops start-up with a message
// naming it. Before, strconv.Atoi and time.ParseDuration errors were
// dropped: QUICKPAY_SCHEDULER_INTERVAL=30 became 0 (serve then panicked in
// time.NewTicker) and QUICKPAY_CHARGE_WORKERS=eight ran one worker.
func TestConfigParseErrors(t *testing.T) {
	tests := []struct {
		key, flag string
		good      string
		got       func(*config) any
		want      any
		bad       []string
	}{
		{"QUICKPAY_SCHEDULER_INTERVAL", "scheduler-interval", "45s",
			func(c *config) any { return c.SchedulerInterval }, 45 * time.Second, []string{"30", "0s", "-1m", "soon"}},
		{"QUICKPAY_RESCUE_STUCK_AFTER", "rescue-stuck-after", "10m",
			func(c *config) any { return c.RescueAfter }, 10 * time.Minute, []string{"300", "0", "-5m", "5 minutes"}},
		{"QUICKPAY_CHARGE_WORKERS", "charge-workers", "12",
			func(c *config) any { return c.ChargeWorkers }, 12, []string{"eight", "0", "-3", "2.5"}},
		{"QUICKPAY_CHARGE_BATCH", "charge-batch", "50",
			func(c *config) any { return c.ChargeBatch }, 50, []string{"many", "-1", "1e3"}},
		{"QUICKPAY_HSM_POOL_SIZE", "hsm-pool-size", "4",
			func(c *config) any { return c.HSMPoolSize }, 4, []string{"four", "-2"}},
		{"QUICKPAY_WEBHOOKS_ALLOW_PRIVATE", "webhooks-allow-private", "true",
			func(c *config) any { return c.WebhooksPrivate }, true, []string{"yes", "on"}},
		{"QUICKPAY_LOG_LEVEL", "log-level", "warn",
			func(c *config) any { return c.LogLevel }, "warn", []string{"loud", "verbose"}},
		{"QUICKPAY_PUBLIC_URL", "public-url", "https://qp.example.com",
			func(c *config) any { return c.PublicURL }, "https://qp.example.com", []string{"qp.example.com", "ftp://qp.example.com", "https://"}},
		{"QUICKPAY_SMS_URL", "sms-url", "http://127.0.0.1:9090/carrier/sms",
			func(c *config) any { return c.SMSURL }, "http://127.0.0.1:9090/carrier/sms", []string{"127.0.0.1:9090/carrier/sms", "carrier"}},
		{"QUICKPAY_TRUSTED_PROXIES", "trusted-proxies", "10.0.0.0/8,2001:db8::/48",
			func(c *config) any { return len(c.Limits.TrustedProxies) }, 2, []string{"0.0.0.0/0", "::/0", "10.0.0.0/7", "2001::/16"}},
	}
	for _, tt := range tests {
		t.Run(tt.key+" parses", func(t *testing.T) {
			t.Setenv(tt.key, tt.good)
			if err := checkEnv(); err != nil {
				t.Fatalf("%s=%s: %v", tt.key, tt.good, err)
			}
			var c config
			if err := parseFlags(&c); err != nil {
				t.Fatal(err)
			}
			if got := tt.got(&c); got != tt.want {
				t.Fatalf("%s=%s gave %v, want %v", tt.key, tt.good, got, tt.want)
			}
		})
		for _, bad := range tt.bad {
			t.Run(tt.key+"="+bad+" is refused", func(t *testing.T) {
				t.Setenv(tt.key, bad)
				err := checkEnv()
				if err == nil || !strings.Contains(err.Error(), tt.key) {
					t.Fatalf("checkEnv with %s=%q = %v, want an error naming it", tt.key, bad, err)
				}
			})
			t.Run("--"+tt.flag+"="+bad+" is refused", func(t *testing.T) {
				var c config
				err := parseFlags(&c, "--"+tt.flag+"="+bad)
				if err == nil || !strings.Contains(err.Error(), tt.flag) {
					t.Fatalf("--%s=%q: %v, want an error naming the flag", tt.flag, bad, err)
				}
			})
		}
	}

	t.Run("defaults", func(t *testing.T) {
		var c config
		if err := parseFlags(&c); err != nil {
			t.Fatal(err)
		}
		if c.SchedulerInterval != 30*time.Second || c.RescueAfter != time.Minute ||
			c.ChargeWorkers != defaultChargeWorkers || c.LogLevel != "info" || c.MetricsListen != defaultMetricsListen {
			t.Fatalf("defaults: %+v", c)
		}
	})
	t.Run("a flag overrides its variable", func(t *testing.T) {
		t.Setenv("QUICKPAY_CHARGE_WORKERS", "3")
		var c config
		if err := parseFlags(&c, "--charge-workers", "5"); err != nil || c.ChargeWorkers != 5 {
			t.Fatalf("workers = %d, %v; want 5", c.ChargeWorkers, err)
		}
	})
	t.Run("a bool flag without a value is true", func(t *testing.T) {
		var c config
		if err := parseFlags(&c, "--webhooks-allow-private"); err != nil || !c.WebhooksPrivate {
			t.Fatalf("allow private = %v, %v; want true", c.WebhooksPrivate, err)
		}
	})
}

func parseFlags(c *config, args ...string) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.flags(fs)
	return fs.Parse(args)
}

// TestEnvFileDrivesConfig: what `quickpay dev` writes to .quickpay/env,
// sourced by a shell as README says, gives a command started from it the
// stack's addresses, not the defaults (before, QUICKPAY_LISTEN and
// QUICKPAY_PUBLIC_URL were not written and `charges run-due` told async
// banks to call back at http://127.0.0.1:8080).
func TestEnvFileDrivesConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	vars := map[string]string{
		"QUICKPAY_URL": "http://127.0.0.1:39001", "QUICKPAY_LISTEN": "127.0.0.1:39001",
		"QUICKPAY_PUBLIC_URL": "http://127.0.0.1:39001", "QUICKPAY_METRICS_LISTEN": "127.0.0.1:39002",
		"QUICKPAY_WEBHOOKS_ALLOW_PRIVATE": "true", "VAULT_TOKEN": "it's quoted",
	}
	if err := writeEnv(path, vars); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-c", `set -a; . "$1"; set +a; env -0`, "bash", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	sourced := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			sourced[k] = v
		}
	}
	for k, v := range vars {
		if sourced[k] != v {
			t.Errorf("sourced %s = %q, want %q", k, sourced[k], v)
		}
		t.Setenv(k, sourced[k])
	}
	var c config
	if err := parseFlags(&c); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:39001" || c.PublicURL != "http://127.0.0.1:39001" || c.MetricsListen != "127.0.0.1:39002" || !c.WebhooksPrivate {
		t.Fatalf("config from the env file: listen %s, public URL %s, metrics %s, allow private %v",
			c.Listen, c.PublicURL, c.MetricsListen, c.WebhooksPrivate)
	}
}

// TestHTTPServerTimeouts: serve's listeners bound every phase of a
// connection (a zero timeout is none), and a handler's longest wait, a
// bank call bounded at 10s, fits in the write bound.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := newHTTPServer(nil)
	for name, d := range map[string]time.Duration{"read-header": srv.ReadHeaderTimeout, "read": srv.ReadTimeout,
		"write": srv.WriteTimeout, "idle": srv.IdleTimeout} {
		if d <= 0 {
			t.Errorf("%s timeout is %v: unbounded", name, d)
		}
	}
	if srv.WriteTimeout <= 10*time.Second || srv.ReadHeaderTimeout > srv.ReadTimeout {
		t.Errorf("write %v must outlast a 10s bank call; read-header %v must fit in read %v", srv.WriteTimeout, srv.ReadHeaderTimeout, srv.ReadTimeout)
	}
}
