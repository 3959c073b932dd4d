package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/clock"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/telemetry"
	"github.com/quickpay/quickpay/internal/webhooks"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/softhsm"
	"github.com/quickpay/quickpay/vaultkeys"
)

// config is what every subcommand reads: environment variables (the names
// DESIGN.md gives, written by `quickpay dev` to .quickpay/env), overridden by
// flags.
type config struct {
	DatabaseURL   string
	Listen        string
	VaultAddr     string
	VaultToken    string
	VaultRoleID   string
	VaultSecretID string
	HSMModule     string
	HSMToken      string
	HSMPINPath    string
	HSMPoolSize   int
	BanksimURL    string
	LogLevel      string
	// WebhooksPrivate lets webhooks reach loopback and private addresses
	// (dev stacks only).
	WebhooksPrivate bool
	// Charging (mandates).
	PublicURL         string        // where banks post async results; defaults to http://<listen>
	SMSURL            string        // the SMS carrier; defaults to banksim's /carrier/sms
	BankLimits        string        // CODE=RPS:CONCURRENT,…
	ChargeWorkers     int           // River workers on the charges queue
	ChargeBatch       int           // attempts per charge job (mandate.Config.JobBatch)
	RescueAfter       time.Duration // a charge job running longer is rescued (run again: query first)
	SchedulerInterval time.Duration // how often serve runs what is due
	// Clock dates the domain's work; nil is the system clock. Not a flag:
	// `charges run-due --as-of` sets it.
	Clock clock.Clock
	// MetricsListen is serve's Prometheus listener, apart from the merchant
	// API's.
	MetricsListen string
	// ConsoleListen is the operator console's listener (DESIGN.md
	// "Operator console"), apart from the merchant API's.
	ConsoleListen string
	// ConsoleURL is where operators' browsers reach the console (behind
	// a TLS proxy, say); an https URL makes its cookies Secure.
	ConsoleURL string

	// Limits are the abuse limits (limits.go).
	Limits limitsConfig

	// Tracing turns OpenTelemetry tracing on (QUICKPAY_TRACING=on): spans
	// exported by OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. Off by default, at no cost.
	Tracing bool
	// TraceSample is the share of new traces kept (QUICKPAY_TRACE_SAMPLE,
	// 0 to 1). Defaults to 1.
	TraceSample float64
	// tracing and metrics are serve's, set before open wires them in
	// (serve.go); nil for the other commands, which neither trace nor
	// export metrics.
	tracing *telemetry.Tracing
	metrics *prometheus.Registry

	// envErrs are the environment variables that failed to parse (envFlag);
	// checkEnv reports them before any command runs.
	envErrs []error
}

// defaultChargeWorkers is how many charge jobs run at once by default;
// each sends its batch of attempts concurrently.
const defaultChargeWorkers = 8

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// flags registers the shared flags on fs with their environment defaults.
func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "database-url", env("QUICKPAY_DATABASE_URL", ""), "PostgreSQL URL (QUICKPAY_DATABASE_URL)")
	fs.StringVar(&c.Listen, "listen", env("QUICKPAY_LISTEN", "127.0.0.1:8080"), "HTTP listen address (QUICKPAY_LISTEN)")
	fs.StringVar(&c.VaultAddr, "vault-addr", env("VAULT_ADDR", ""), "HashiCorp Vault address (VAULT_ADDR)")
	fs.StringVar(&c.VaultToken, "vault-token", env("VAULT_TOKEN", ""), "Vault token, for dev (VAULT_TOKEN)")
	fs.StringVar(&c.VaultRoleID, "vault-role-id", env("VAULT_ROLE_ID", ""), "Vault AppRole role id, for production (VAULT_ROLE_ID)")
	fs.StringVar(&c.VaultSecretID, "vault-secret-id", env("VAULT_SECRET_ID", ""), "Vault AppRole secret id (VAULT_SECRET_ID)")
	fs.StringVar(&c.HSMModule, "hsm-module", env("QUICKPAY_HSM_MODULE", ""), "PKCS#11 module path (QUICKPAY_HSM_MODULE; default: SoftHSM2's)")
	fs.StringVar(&c.HSMToken, "hsm-token", env("QUICKPAY_HSM_TOKEN_LABEL", "quickpay"), "HSM token label (QUICKPAY_HSM_TOKEN_LABEL)")
	fs.StringVar(&c.HSMPINPath, "hsm-pin-path", env("QUICKPAY_HSM_PIN_PATH", "secret/quickpay/hsm"), "Vault KV v2 path of the HSM user PIN, field \"pin\" (QUICKPAY_HSM_PIN_PATH)")
	c.envFlag(fs, intFlag{&c.HSMPoolSize, 0}, "hsm-pool-size", "QUICKPAY_HSM_POOL_SIZE", "HSM sessions at most (QUICKPAY_HSM_POOL_SIZE; 0: 2 × CPUs)")
	fs.StringVar(&c.BanksimURL, "banksim-url", env("QUICKPAY_BANKSIM_URL", ""), "bank simulator URL (QUICKPAY_BANKSIM_URL)")
	c.envFlag(fs, boolFlag{&c.WebhooksPrivate}, "webhooks-allow-private", "QUICKPAY_WEBHOOKS_ALLOW_PRIVATE",
		"deliver webhooks to loopback and private addresses, for dev (QUICKPAY_WEBHOOKS_ALLOW_PRIVATE=true)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", env("QUICKPAY_METRICS_LISTEN", defaultMetricsListen),
		"Prometheus /metrics listen address, apart from the API's (QUICKPAY_METRICS_LISTEN)")
	fs.StringVar(&c.ConsoleListen, "console-listen", env("QUICKPAY_CONSOLE_LISTEN", defaultConsoleListen),
		"operator console listen address, apart from the API's (QUICKPAY_CONSOLE_LISTEN)")
	// A charge run lasts at most 30 s of bank calls (ChargeWorker.Timeout)
	// plus 15 s of settling, so a minute never rescues a live run; one that
	// died with its process runs again, querying first, within about 1.5
	// min (docs/soak.md "Settle time after a crash"). Other jobs time out
	// at half of it (River's JobTimeout) and snooze or retry.
	c.ChargeWorkers, c.RescueAfter, c.SchedulerInterval = defaultChargeWorkers, time.Minute, 30*time.Second
	c.envFlag(fs, urlFlag{&c.ConsoleURL}, "console-url", "QUICKPAY_CONSOLE_URL",
		"where browsers reach the operator console; https makes its cookies Secure (QUICKPAY_CONSOLE_URL; default: Secure unless it listens on loopback)")
	c.envFlag(fs, urlFlag{&c.PublicURL}, "public-url", "QUICKPAY_PUBLIC_URL", "base URL banks reach quickpay at, for async results (QUICKPAY_PUBLIC_URL; default http://<listen>)")
	c.envFlag(fs, urlFlag{&c.SMSURL}, "sms-url", "QUICKPAY_SMS_URL", "SMS carrier send URL (QUICKPAY_SMS_URL; default <banksim-url>/carrier/sms)")
	fs.StringVar(&c.BankLimits, "bank-limits", env("QUICKPAY_BANK_LIMITS", ""), "per-bank call limits CODE=RPS:CONCURRENT,… e.g. ICBC=200:32 (QUICKPAY_BANK_LIMITS; 0 = unlimited)")
	c.envFlag(fs, intFlag{&c.ChargeWorkers, 1}, "charge-workers", "QUICKPAY_CHARGE_WORKERS", "concurrent charge jobs (QUICKPAY_CHARGE_WORKERS)")
	c.envFlag(fs, intFlag{&c.ChargeBatch, 0}, "charge-batch", "QUICKPAY_CHARGE_BATCH", "charges one job sends at once and settles together (QUICKPAY_CHARGE_BATCH; 0: 20)")
	c.envFlag(fs, durationFlag{&c.RescueAfter}, "rescue-stuck-after", "QUICKPAY_RESCUE_STUCK_AFTER", "run a charge job again (querying first) after it has run this long, e.g. after a crash (QUICKPAY_RESCUE_STUCK_AFTER)")
	c.envFlag(fs, durationFlag{&c.SchedulerInterval}, "scheduler-interval", "QUICKPAY_SCHEDULER_INTERVAL", "how often serve runs due charges (QUICKPAY_SCHEDULER_INTERVAL)")
	c.TraceSample = 1
	c.envFlag(fs, onOffFlag{&c.Tracing}, "tracing", "QUICKPAY_TRACING",
		"on or off: OpenTelemetry traces by OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (QUICKPAY_TRACING)")
	c.envFlag(fs, ratioFlag{&c.TraceSample}, "trace-sample", "QUICKPAY_TRACE_SAMPLE",
		"share of new traces kept, 0 to 1; a sampled parent's spans are always kept (QUICKPAY_TRACE_SAMPLE)")
	c.LogLevel = "info"
	c.envFlag(fs, logLevelFlag{&c.LogLevel}, "log-level", "QUICKPAY_LOG_LEVEL", "debug, info, warn or error (QUICKPAY_LOG_LEVEL)")
	c.limitFlags(fs)
}

// defaultMetricsListen keeps /metrics on loopback, off the merchant API's
// listener; 8080 is the API's, 8081 the operator console's.
const defaultMetricsListen = "127.0.0.1:8082"

// defaultConsoleListen keeps the operator console on loopback by default.
const defaultConsoleListen = "127.0.0.1:8081"

// Configuration that fails to parse stops start-up with a message naming
// the variable or flag; nothing silently becomes zero or a default. Typed
// settings are flag.Values whose Set refuses bad or nonsensical input
// (DESIGN.md: a duration needs a unit, "30s"); envFlag gives one its
// environment default. Other settings can use them the same way.

// envFlag registers v as flag name. When environment variable key is set,
// v takes it as its default; if it fails to parse, the error (naming key)
// is kept for checkEnv, which main reports before any command runs. Only
// for values that are not secrets: the message quotes the value.
func (c *config) envFlag(fs *flag.FlagSet, v flag.Value, name, key, usage string) {
	if s := os.Getenv(key); s != "" {
		if err := v.Set(s); err != nil {
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: %w", key, s, err))
		}
	}
	fs.Var(v, name, usage)
}

// checkEnv reads every variable the shared flags read and reports each that
// fails to parse.
func checkEnv() error {
	var c config
	c.flags(flag.NewFlagSet("env", flag.ContinueOnError))
	if len(c.envErrs) > 0 {
		return fmt.Errorf("configuration: %w", errors.Join(c.envErrs...))
	}
	return nil
}

// intFlag is an integer of at least min.
type intFlag struct {
	p   *int
	min int
}

func (f intFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.Itoa(*f.p)
}

func (f intFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not a whole number")
	}
	if n < f.min {
		return fmt.Errorf("must be at least %d", f.min)
	}
	*f.p = n
	return nil
}

// durationFlag is a positive Go duration with a unit ("30s", "5m").
type durationFlag struct{ p *time.Duration }

func (f durationFlag) String() string {
	if f.p == nil {
		return ""
	}
	return f.p.String()
}

func (f durationFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return errors.New("a duration needs a unit, e.g. 30s or 5m")
		}
		return errors.New("not a duration such as 30s or 5m")
	}
	if d <= 0 {
		return errors.New("must be more than zero")
	}
	*f.p = d
	return nil
}

// boolFlag is true or false (strconv.ParseBool's spellings); given
// without a value, the flag means true.
type boolFlag struct{ p *bool }

func (f boolFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.FormatBool(*f.p)
}

func (f boolFlag) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not true or false")
	}
	*f.p = b
	return nil
}

func (f boolFlag) IsBoolFlag() bool { return true }

// urlFlag is an absolute http or https URL with a host.
type urlFlag struct{ p *string }

func (f urlFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}

func (f urlFlag) Set(s string) error {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http or https URL such as https://quickpay.example.com")
	}
	*f.p = strings.TrimSpace(s)
	return nil
}

// onOffFlag is "on" or "off". On needs an OTLP endpoint in the
// environment: traces with nowhere to go are refused, not dropped.
type onOffFlag struct{ p *bool }

func (f onOffFlag) String() string {
	if f.p == nil || !*f.p {
		return "off"
	}
	return "on"
}

func (f onOffFlag) Set(s string) error {
	switch strings.TrimSpace(s) {
	case "on":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return errors.New("on needs OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
		}
		*f.p = true
	case "off":
		*f.p = false
	default:
		return errors.New("not on or off")
	}
	return nil
}

// ratioFlag is a number from 0 to 1.
type ratioFlag struct{ p *float64 }

func (f ratioFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.FormatFloat(*f.p, 'g', -1, 64)
}

func (f ratioFlag) Set(s string) error {
	r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(r >= 0 && r <= 1) {
		return errors.New("not a number from 0 to 1")
	}
	*f.p = r
	return nil
}

// logLevelFlag is one of slog's level names.
type logLevelFlag struct{ p *string }

func (f logLevelFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}

func (f logLevelFlag) Set(s string) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		return errors.New("not debug, info, warn or error")
	}
	*f.p = s
	return nil
}

func (c *config) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// The vault makes the idempotency layer's keyed request fingerprints.
var _ idempotency.Hasher = (*vaultkeys.Vault)(nil)

// deps are the connections a command needs; close releases them.
type deps struct {
	pool    *pgxpool.Pool
	secrets *vaultkeys.Secrets
	hsm     *vaultkeys.HSM
	vault   *vaultkeys.Vault
	river   *river.Client[pgx.Tx]
	idem    *idempotency.Store
	hooks   *webhooks.Service
	limiter *limits.Limiter

	// The domain, built by openDomain.
	banks    *channels.Registry
	bindings *binding.Service
	mandates *mandate.Service
	chargeW  *mandate.ChargeWorker
	queryW   *mandate.QueryWorker
	refundW  *mandate.RefundWorker
	settleW  *mandate.SettlementWorker
}

// close releases everything; calling it again does nothing.
func (d *deps) close() {
	if d.hsm != nil {
		_ = d.hsm.Close()
		d.hsm = nil
	}
	if d.secrets != nil {
		d.secrets.Close()
		d.secrets = nil
	}
	if d.pool != nil {
		d.pool.Close()
		d.pool = nil
	}
}

// open connects to Postgres, Vault and the HSM. With workers, the River
// client also works jobs (serve); without, it only inserts them (CLI).
func (c *config) open(ctx context.Context, log *slog.Logger, workers bool) (*deps, error) {
	d := &deps{}
	var err error
	if d.pool, err = db.Open(ctx, db.Config{URL: c.DatabaseURL, Tracer: c.tracing.QueryTracer()}); err != nil {
		return nil, err
	}
	if d.secrets, err = vaultkeys.NewSecrets(ctx, vaultkeys.SecretsConfig{
		Addr: c.VaultAddr, Token: c.VaultToken, RoleID: c.VaultRoleID, SecretID: c.VaultSecretID, Logger: log,
	}); err != nil {
		d.close()
		return nil, err
	}
	module := c.HSMModule
	if module == "" {
		if module, err = softhsm.FindModule(); err != nil {
			d.close()
			return nil, fmt.Errorf("%w (or set QUICKPAY_HSM_MODULE)", err)
		}
	}
	if os.Getenv("SOFTHSM2_CONF") == "" && strings.Contains(module, "softhsm") {
		d.close()
		return nil, errors.New("SOFTHSM2_CONF is not set: source .quickpay/env from a running `make run`, or point it at your softhsm2.conf")
	}
	if d.hsm, err = vaultkeys.OpenHSM(ctx, vaultkeys.HSMConfig{
		Module: module, TokenLabel: c.HSMToken, PIN: d.secrets.PIN(c.HSMPINPath, "pin"), PoolSize: c.HSMPoolSize,
	}); err != nil {
		d.close()
		return nil, err
	}
	// The vault enqueues re-encryption on rotation through the River client,
	// whose workers need the vault: jobs closes the loop.
	jobs := &lateInserter{}
	if d.vault, err = vaultkeys.New(vaultkeys.Config{
		Pool: d.pool, HSM: d.hsm, Jobs: jobs, Columns: encryptedColumns(),
	}); err != nil {
		d.close()
		return nil, err
	}
	if d.idem, err = idempotency.New(idempotency.Config{Pool: d.pool, Hasher: d.vault, Sealer: d.vault, Logger: log}); err != nil {
		d.close()
		return nil, err
	}
	if d.limiter, err = limits.New(d.pool); err != nil {
		d.close()
		return nil, err
	}
	if c.metrics != nil {
		if err := d.limiter.Observe(c.metrics); err != nil {
			d.close()
			return nil, err
		}
	}
	// Tracing's middleware first: the job's parent is in its context
	// before anything else runs.
	rc := &river.Config{Logger: log, Middleware: c.tracing.RiverMiddleware()}
	if c.metrics != nil && workers {
		failures, err := telemetry.NewJobFailures(c.metrics)
		if err != nil {
			d.close()
			return nil, err
		}
		rc.Middleware = append(rc.Middleware, failures)
	}
	var traceWebhooks func(http.RoundTripper) http.RoundTripper
	if c.tracing.On() {
		traceWebhooks = func(rt http.RoundTripper) http.RoundTripper { return c.tracing.Transport(rt, "webhook") }
	}
	if workers {
		deliver, err := webhooks.NewDeliverWorker(webhooks.WorkerConfig{
			Pool: d.pool, Vault: d.vault, Logger: log, AllowPrivateNetworks: c.WebhooksPrivate, WrapTransport: traceWebhooks,
			// A run of a delivery job ends before River would rescue it.
			JobTimeout: min(4*time.Minute, c.RescueAfter/2),
		})
		if err != nil {
			d.close()
			return nil, err
		}
		rc.Workers = river.NewWorkers()
		river.AddWorker(rc.Workers, &vaultkeys.ReencryptWorker{Vault: d.vault})
		river.AddWorker(rc.Workers, deliver)
		river.AddWorker(rc.Workers, &idempotency.CleanupWorker{Store: d.idem})
		river.AddWorker(rc.Workers, &limits.CleanupWorker{Limiter: d.limiter})
		// The charge workers get their service in openDomain.
		d.chargeW, d.queryW = &mandate.ChargeWorker{}, &mandate.QueryWorker{}
		river.AddWorker(rc.Workers, d.chargeW)
		river.AddWorker(rc.Workers, d.queryW)
		d.refundW, d.settleW = &mandate.RefundWorker{}, &mandate.SettlementWorker{}
		river.AddWorker(rc.Workers, d.refundW)
		river.AddWorker(rc.Workers, d.settleW)
		rc.PeriodicJobs = []*river.PeriodicJob{idempotency.PeriodicCleanup(), limits.PeriodicCleanup()}
		if p := mandate.PeriodicSettlement(); p != nil {
			rc.PeriodicJobs = append(rc.PeriodicJobs, p)
		}
		rc.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: 10},
			webhooks.Queue:     {MaxWorkers: 10},
			mandate.Queue:      {MaxWorkers: max(1, c.ChargeWorkers)},
		}
		// River wants jobs to time out before they count as stuck. Charge
		// jobs keep their own bound (mandate.ChargeWorker.Timeout).
		rc.RescueStuckJobsAfter = c.RescueAfter
		rc.JobTimeout = min(time.Minute, c.RescueAfter/2)
		tuneFetch(rc)
	}
	if d.river, err = river.NewClient(riverpgxv5.New(d.pool), rc); err != nil {
		d.close()
		return nil, fmt.Errorf("river client: %w", err)
	}
	jobs.client = d.river
	if d.hooks, err = webhooks.New(webhooks.Config{Pool: d.pool, Vault: d.vault, Jobs: d.river,
		AllowPrivateNetworks: c.WebhooksPrivate}); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// lateInserter forwards to a River client created after its user.
// tuneFetch sets how eagerly River's producers fetch: River waits
// FetchCooldown (default 100 ms) between fetches of at most the free
// worker slots, which caps a queue at MaxWorkers per cooldown (320 jobs/s
// for 32 workers). Due charges come in runs of thousands.
func tuneFetch(rc *river.Config) {
	rc.FetchCooldown = 5 * time.Millisecond
	rc.FetchPollInterval = 500 * time.Millisecond
}

type lateInserter struct{ client *river.Client[pgx.Tx] }

func (l *lateInserter) InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	return l.client.InsertTx(ctx, tx, args, opts)
}

func (l *lateInserter) InsertManyFastTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) (int, error) {
	return l.client.InsertManyFastTx(ctx, tx, params)
}

// encryptedColumns lists every column holding vaultkeys ciphertext, for
// re-encryption after a data or fp rotation.
func encryptedColumns() []vaultkeys.Column {
	bindingCol := func(ct, fp, domain, field string) vaultkeys.Column {
		return vaultkeys.Column{Table: "bindings", Key: "id", Ciphertext: ct, Fingerprint: fp, FPDomain: domain,
			AAD: func(id, m string) []byte { return binding.BindingAAD(m, id, field) }}
	}
	memberCol := func(ct, fp, domain, field string) vaultkeys.Column {
		return vaultkeys.Column{Table: "members", Key: "id", Ciphertext: ct, Fingerprint: fp, FPDomain: domain,
			AAD: func(id, m string) []byte { return binding.MemberAAD(m, id, field) }}
	}
	return []vaultkeys.Column{
		bindingCol("pan_ct", "pan_fp", binding.DomainPAN, "pan"),
		bindingCol("holder_name_ct", "holder_name_fp", binding.DomainName, "holder_name"),
		bindingCol("id_number_ct", "id_number_fp", binding.DomainIDNumber, "id_number"),
		bindingCol("phone_ct", "", "", "phone"),
		// A refused binding's agreement, kept until the bank releases it.
		bindingCol("agreement_ct", "", "", "agreement"),
		memberCol("name_ct", "name_fp", binding.DomainName, "name"),
		memberCol("id_number_ct", "id_number_fp", binding.DomainIDNumber, "id_number"),
		memberCol("phone_ct", "", "", "phone"),
		// A card's number is its binding's ciphertext, bound to the binding id.
		{Table: "cards", Key: "binding_id", Ciphertext: "pan_ct", Fingerprint: "pan_fp", FPDomain: binding.DomainPAN,
			AAD: func(bindingID, m string) []byte { return binding.BindingAAD(m, bindingID, "pan") }},
		{Table: "cards", Key: "id", Ciphertext: "agreement_ct", Fingerprint: "agreement_fp", FPDomain: binding.DomainAgreement,
			AAD: func(id, m string) []byte { return binding.CardAgreementAAD(m, id) }},
		// A bank's notice: keyed by its bank, not a merchant. Its
		// agreement_fp is the notice's de-duplication key and stays as
		// written.
		{Table: "bank_notices", Key: "id", Merchant: "bank_code", Ciphertext: "agreement_ct",
			AAD: func(id, bank string) []byte { return binding.BankNoticeAAD(bank, id) }},
		webhooks.EncryptedColumn(),
		// An operator's TOTP secret, bound to its operator id (no merchant).
		operators.EncryptedColumn(),
	}
}
