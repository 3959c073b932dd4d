package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/telemetry"
)

// TestTracingConfig: QUICKPAY_TRACING is on or off, and on needs an OTLP
// endpoint; QUICKPAY_TRACE_SAMPLE is 0 to 1. Anything else stops start-up
// naming the variable.
func TestTracingConfig(t *testing.T) {
	for _, tt := range []struct {
		env      map[string]string
		refusal  string // "" when it parses
		on       bool
		sample   float64
		describe string
	}{
		{map[string]string{}, "", false, 1, "off by default, sampling all"},
		{map[string]string{"QUICKPAY_TRACING": "off"}, "", false, 1, "off"},
		{map[string]string{"QUICKPAY_TRACING": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "", true, 1, "on with an endpoint"},
		{map[string]string{"QUICKPAY_TRACING": "on", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
			"QUICKPAY_TRACE_SAMPLE": "0.25"}, "", true, 0.25, "on with a traces endpoint, a quarter sampled"},
		{map[string]string{"QUICKPAY_TRACING": "yes"}, "QUICKPAY_TRACING", false, 1, "a value other than on or off"},
		{map[string]string{"QUICKPAY_TRACING": "true"}, "QUICKPAY_TRACING", false, 1, "true is not on"},
		{map[string]string{"QUICKPAY_TRACING": "on"}, "OTEL_EXPORTER_OTLP_ENDPOINT", false, 1, "on without an endpoint"},
		{map[string]string{"QUICKPAY_TRACE_SAMPLE": "1.5"}, "QUICKPAY_TRACE_SAMPLE", false, 1, "a ratio above 1"},
		{map[string]string{"QUICKPAY_TRACE_SAMPLE": "half"}, "QUICKPAY_TRACE_SAMPLE", false, 1, "a ratio that is no number"},
	} {
		t.Run(tt.describe, func(t *testing.T) {
			for _, k := range []string{"QUICKPAY_TRACING", "QUICKPAY_TRACE_SAMPLE", "OTEL_EXPORTER_OTLP_ENDPOINT",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
				t.Setenv(k, tt.env[k])
			}
			err := checkEnv()
			if tt.refusal != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refusal) {
					t.Fatalf("checkEnv = %v, want a refusal naming %s", err, tt.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var c config
			c.flags(flag.NewFlagSet("serve", flag.ContinueOnError))
			if c.Tracing != tt.on || c.TraceSample != tt.sample {
				t.Fatalf("tracing %v sample %v, want %v %v", c.Tracing, c.TraceSample, tt.on, tt.sample)
			}
		})
	}
	t.Run("the flag is refused too", func(t *testing.T) {
		t.Setenv("QUICKPAY_TRACING", "")
		var c config
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.flags(fs)
		if err := fs.Parse([]string{"--tracing", "maybe"}); err == nil || !strings.Contains(err.Error(), "tracing") {
			t.Fatalf("--tracing maybe: %v", err)
		}
	})
}

// serveWorld is serve's server built in this process, as cmdServe builds
// it, over a test stack's banksim, with its River workers running.
type serveWorld struct {
	st       *testenv.Stack
	srv      *server
	url      string
	clientID string
	secret   string
	merchant string
}

func newServeWorld(t *testing.T, tracing *telemetry.Tracing) *serveWorld {
	t.Helper()
	ctx := context.Background()
	st := testenv.NewStack(t)
	// serve reads the channels at the default prefix.
	for _, code := range st.Banks.Codes() {
		ch, err := st.Secrets.Read(ctx, st.BanksPrefix+"/"+code)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Secrets.Write(ctx, "secret/quickpay/banks/"+code, ch); err != nil {
			t.Fatal(err)
		}
	}
	vault, tok := testenv.Vault(t), testenv.SoftHSM(t)
	var c config
	if err := newFlags("serve", &c).Parse([]string{"--database-url", testenv.DatabaseURL(t), "--vault-addr", vault.Addr,
		"--vault-token", vault.Token, "--hsm-token", tok.Label, "--banksim-url", st.SimURL,
		"--webhooks-allow-private"}); err != nil {
		t.Fatal(err)
	}
	c.tracing, c.metrics = tracing, prometheus.NewRegistry()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	s, err := c.newServer(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.d.close)
	if err := s.d.river.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.d.river.Stop(stop)
	})
	api := httptest.NewServer(s.api)
	t.Cleanup(api.Close)
	store, err := merchants.NewStore(merchants.Config{Pool: s.d.pool})
	if err != nil {
		t.Fatal(err)
	}
	m, secret, err := store.Create(ctx, "observed", []string{merchants.ScopeBind})
	if err != nil {
		t.Fatal(err)
	}
	return &serveWorld{st: st, srv: s, url: api.URL, clientID: m.ClientID, secret: secret, merchant: m.ID}
}

// TestTracingOffInstallsNothing: with tracing off, serve's handler is the
// API's own and the pool has no tracer.
func TestTracingOffInstallsNothing(t *testing.T) {
	w := newServeWorld(t, nil)
	if _, ok := w.srv.api.(*echo.Echo); !ok {
		t.Errorf("the API handler is a %T, want the plain *echo.Echo", w.srv.api)
	}
	if tr := w.srv.d.pool.Config().ConnConfig.Tracer; tr != nil {
		t.Errorf("the pool has a tracer %T", tr)
	}
}

// TestOneTraceFromRequestToJobAndBank: a confirm over the API calls the
// bank, writes the binding and enqueues the merchant's webhook; the job
// delivers it. The request's server span, its SQL, the bank call and its
// HTTP exchange, the River insert, the job's run and the webhook POST are
// one trace.
func TestOneTraceFromRequestToJobAndBank(t *testing.T) {
	ctx := context.Background()
	spans := tracetest.NewInMemoryExporter()
	tracing, err := telemetry.Start(ctx, telemetry.Config{Enabled: true, SampleRatio: 1, Exporter: spans, Synchronous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	w := newServeWorld(t, tracing)

	delivered := make(chan struct{}, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusNoContent)
		delivered <- struct{}{}
	}))
	t.Cleanup(receiver.Close)
	if _, err := w.srv.d.hooks.SetEndpoint(ctx, w.merchant, receiver.URL+"/hooks", nil); err != nil {
		t.Fatal(err)
	}
	info, err := w.st.SimCtl.Bank(ctx, "ICBC")
	if err != nil {
		t.Fatal(err)
	}
	a, err := conformance.NewGen().Account(info, "debit", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.SimCtl.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Timeout: 30 * time.Second}
	var tokenOut struct {
		AccessToken string `json:"access_token"`
	}
	if st, err := postJSON(client, w.url+"/v1/oauth/token", "", "", map[string]string{"grant_type": "client_credentials",
		"client_id": w.clientID, "client_secret": w.secret}, &tokenOut); err != nil || st != http.StatusOK {
		t.Fatalf("token: %d %v", st, err)
	}
	var bnd struct{ ID string }
	if st, err := postJSON(client, w.url+"/v1/bindings", tokenOut.AccessToken, "", map[string]string{
		"external_user_id": "traced", "holder_name": a.HolderName, "id_number": a.IDNumber,
		"card_number": a.CardNumber, "phone": a.Phone}, &bnd); err != nil || st != http.StatusCreated {
		t.Fatalf("apply: %d %v", st, err)
	}
	texts, err := w.st.SimCtl.SMS(ctx, a.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("no code: %v", err)
	}
	var out struct{ Status string }
	if st, err := postJSON(client, w.url+"/v1/bindings/"+bnd.ID+"/confirm", tokenOut.AccessToken, "",
		map[string]string{"otp": texts[0].Code}, &out); err != nil || st != http.StatusOK || out.Status != "bound" {
		t.Fatalf("confirm: %d %v %s", st, err, out.Status)
	}
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("the webhook was not delivered within 30 s")
	}

	// The confirm's trace is the one holding the bank's bind_confirm.
	var confirm trace.TraceID
	for _, s := range spans.GetSpans() {
		if s.Name == "bank bind_confirm" {
			confirm = s.SpanContext.TraceID()
		}
	}
	if !confirm.IsValid() {
		t.Fatalf("no span of the bank's bind_confirm among %s", spanNames(spans.GetSpans()))
	}
	want := map[string]func(s tracetest.SpanStub) bool{
		"the API's server span": func(s tracetest.SpanStub) bool {
			return strings.HasPrefix(s.Name, "api POST") && s.SpanKind == trace.SpanKindServer
		},
		"a SQL statement": func(s tracetest.SpanStub) bool {
			return s.InstrumentationScope.Name == "github.com/exaring/otelpgx"
		},
		"the bank call":               func(s tracetest.SpanStub) bool { return s.Name == "bank bind_confirm" },
		"the bank's HTTP exchange":    func(s tracetest.SpanStub) bool { return s.Name == "bank POST" },
		"the River insert":            func(s tracetest.SpanStub) bool { return s.Name == "river.insert_many" },
		"the delivery job's run":      func(s tracetest.SpanStub) bool { return s.Name == "river.work/webhook_deliver" },
		"the webhook's HTTP exchange": func(s tracetest.SpanStub) bool { return s.Name == "webhook POST" },
	}
	// The job's span ends after its POST is answered: wait for it.
	var missing []string
	poll(t, 10*time.Second, "the confirm's trace to hold its server, SQL, bank, River and webhook spans", func() bool {
		missing = missing[:0]
		for what, match := range want {
			found := false
			for _, s := range spans.GetSpans() {
				if s.SpanContext.TraceID() == confirm && match(s) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, what)
			}
		}
		return len(missing) == 0
	})
}

func spanNames(spans tracetest.SpanStubs) string {
	names := make([]string, 0, len(spans))
	for _, s := range spans {
		names = append(names, s.Name+"@"+s.SpanContext.TraceID().String()[:8])
	}
	return strings.Join(names, ", ")
}

var _ sdktrace.SpanExporter = (*tracetest.InMemoryExporter)(nil)

// registeredMetric finds a metric's name where code registers it:
// CounterOpts/HistogramOpts Name, prometheus.NewDesc, or api's d helper.
var registeredMetric = regexp.MustCompile(`(?:Name:\s*|NewDesc\(|\bd\()"(quickpay_[a-z0-9_]+)"`)

// usedMetric is a quickpay metric named in a rule or a panel.
var usedMetric = regexp.MustCompile(`quickpay_[a-z0-9_]+`)

// TestAlertsAndDashboardNameRegisteredMetrics: every metric the alert
// rules and the Grafana dashboard query is one the code registers, and
// every metric the code registers has a panel.
func TestAlertsAndDashboardNameRegisteredMetrics(t *testing.T) {
	t.Parallel()
	registered := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".quickpay" || d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range registeredMetric.FindAllStringSubmatch(string(src), -1) {
			registered[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(registered) < 30 || !registered["quickpay_bank_calls_total"] || !registered["quickpay_hsm_sessions_max"] {
		t.Fatalf("found only %d registered metrics: %v", len(registered), registered)
	}
	known := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && registered[base] {
				return true
			}
		}
		return false
	}
	dashboard, err := os.ReadFile("../../docs/observability/grafana/dashboards/quickpay.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dashboard, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, q := range p.Targets {
			for _, name := range usedMetric.FindAllString(q.Expr, -1) {
				queried[name] = true
				if !known(name) {
					t.Errorf("panel %q queries %s, which no code registers", p.Title, name)
				}
			}
		}
	}
	rules, err := os.ReadFile("../../docs/observability/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, name := range usedMetric.FindAllString(line, -1) {
			if !known(name) {
				t.Errorf("alerts.yml names %s, which no code registers", name)
			}
		}
	}
	for name := range registered {
		found := false
		for q := range queried {
			if q == name || strings.TrimSuffix(q, "_bucket") == name {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is registered but no dashboard panel shows it", name)
		}
	}
}
