package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/api/idempotency"
	"github.com/quickpay/quickpay/bankadapters"
	"github.com/quickpay/quickpay/bankadapters/channels"
	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/bankadapters/formrsa"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/dev/sim"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/limits"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/internal/telemetry"
	"github.com/quickpay/quickpay/internal/webhooks"
)

// BenchmarkBindings measures complete bindings over real HTTP against the
// whole server (auth, idempotency, binding, HSM, Postgres) and a zero-latency
// in-process banksim: POST /v1/bindings, read the code from banksim's inbox,
// POST /v1/bindings/{id}/confirm. Each client takes one token first and
// reuses it, as merchants do (a token lives 15 minutes); the token call is
// reported separately. Reported: bindings/s, p50 and p99 of each call, and
// HSM operations per binding.
func BenchmarkBindings(b *testing.B) {
	bb := newBindingBench(b, testenv.StackConfig{})
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { bb.measure(b, clients, nil) })
	}
}

// BenchmarkBindingsSlowBank measures the isolation of banks: complete
// bindings/s at ICBC (16 clients) with every bank healthy (slow=none), and
// while 48 more clients bind cards at CCB, which answers every call after
// 2 s (slow=CCB): about 24 confirms wait on CCB at any moment. The ratio
// slow=CCB / slow=none, in one run, is the figure: a slow bank must not
// queue the healthy banks' calls.
func BenchmarkBindingsSlowBank(b *testing.B) {
	bb := newBindingBench(b, testenv.StackConfig{SimMaxHold: 2 * time.Second})
	b.Run("slow=none", func(b *testing.B) { bb.measure(b, 16, nil) })
	b.Run("slow=CCB", func(b *testing.B) { bb.measure(b, 16, bb.slowBank("CCB", 48)) })
}

// BenchmarkBindingsTracing measures what tracing costs: complete
// bindings/s at 16 clients with tracing off, then on (every span sampled,
// exported by OTLP over HTTP to a local sink that reads and drops it),
// each an API over the same stack, in one run. The ratio on / off is the
// figure; off is what BenchmarkBindings measures.
func BenchmarkBindingsTracing(b *testing.B) {
	st := testenv.NewStackWith(b, testenv.StackConfig{})
	var exported atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		exported.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(sink.Close)
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(sink.URL+"/v1/traces"))
	if err != nil {
		b.Fatal(err)
	}
	tracing, err := telemetry.Start(ctx, telemetry.Config{Enabled: true, SampleRatio: 1, Exporter: exp})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	off, on := bindingBenchOn(b, st, nil), bindingBenchOn(b, st, tracing)
	b.Run("tracing=off", func(b *testing.B) { off.measure(b, 16, nil) })
	b.Run("tracing=on", func(b *testing.B) {
		before := exported.Load()
		on.measure(b, 16, nil)
		if err := tracing.ForceFlush(context.Background()); err != nil {
			b.Fatal(err)
		}
		if exported.Load() == before {
			b.Fatal("no span reached the OTLP sink")
		}
		// The warm-up's bindings are exported too.
		b.ReportMetric(float64(exported.Load()-before)/float64(b.N+benchWarmup), "otlp-bytes/binding")
	})
}

// bindingBench is the server and banks the binding benchmarks share.
type bindingBench struct {
	st               *testenv.Stack
	url              string
	client           *http.Client
	clientID, secret string
	gen              *conformance.Gen
}

// newBindingBench starts the whole API over a new stack's banks.
func newBindingBench(b *testing.B, cfg testenv.StackConfig) *bindingBench {
	return bindingBenchOn(b, testenv.NewStackWith(b, cfg), nil)
}

// bindingBenchOn starts the whole API over st's banks with serve's
// metrics (bank calls, codes, abuse limits, HTTP, HSM and pool) and, when
// tracing is not nil, serve's tracing: a traced pool of its own, the bank
// client, the handler.
func bindingBenchOn(b *testing.B, st *testenv.Stack, tracing *telemetry.Tracing) *bindingBench {
	ctx := context.Background()
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	pool := st.Pool
	if tracing.On() {
		var err error
		if pool, err = db.Open(ctx, db.Config{URL: testenv.DatabaseURL(b), Tracer: tracing.QueryTracer()}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(pool.Close)
	}
	observer, err := bankadapters.NewObserver(reg, tracing.Provider())
	if err != nil {
		b.Fatal(err)
	}
	opts := bankadapters.CallOptions{Timeout: 5 * time.Second}
	if tracing.On() {
		opts.HTTPClient = bankadapters.DefaultHTTPClient()
		opts.HTTPClient.Transport = tracing.Transport(opts.HTTPClient.Transport, "bank")
	}
	banks, err := channels.Open(ctx, channels.Config{Secrets: st.Secrets, Prefix: st.BanksPrefix, BaseURL: st.SimURL,
		Signer:  func(code string) formrsa.Signer { return st.HSM.BankSigner(code) },
		Options: opts, Observer: observer})
	if err != nil {
		b.Fatal(err)
	}
	otp, err := binding.NewOTPMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	store, err := merchants.NewStore(merchants.Config{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	m, secret, err := store.Create(ctx, "bench", []string{merchants.ScopeBind})
	if err != nil {
		b.Fatal(err)
	}
	auth, err := api.NewAuth(api.AuthConfig{Merchants: store, Vault: st.Vault, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	idem, err := idempotency.New(idempotency.Config{Pool: pool, Hasher: st.Vault, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Vault: st.Vault, Jobs: noJobs{}})
	if err != nil {
		b.Fatal(err)
	}
	limiter, err := limits.New(pool)
	if err != nil {
		b.Fatal(err)
	}
	if err := limiter.Observe(reg); err != nil {
		b.Fatal(err)
	}
	// The abuse limits at their defaults, as serve runs them: every binding
	// is a fresh card and phone, so none is refused, and each pays the checks.
	svc, err := binding.New(binding.Config{Pool: pool, Vault: st.Vault, Banks: banks, Logger: quiet,
		Emit: hooks.Queue, Limiter: limiter, Limits: binding.DefaultLimits(), OTPMetrics: otp})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(tracing.Handler(api.New(api.Config{Pool: pool, HSM: st.HSM, Secrets: st.Secrets, Logger: quiet,
		Auth: auth, Idempotency: idem.Middleware(api.MerchantID), Metrics: reg,
		Areas: []api.Area{&api.Bindings{Service: svc}, &api.Webhooks{Service: hooks, Merchants: store}}}), "api"))
	b.Cleanup(srv.Close)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	client := &http.Client{Transport: tr}
	return &bindingBench{st: st, url: srv.URL, client: client, clientID: m.ClientID, secret: secret, gen: conformance.NewGen()}
}

// account opens a fresh debit account at bank, before the clock runs.
func (bb *bindingBench) account(b *testing.B, info conformance.BankInfo) conformance.Account {
	a, err := bb.gen.Account(info, "debit", 100_000)
	if err != nil {
		b.Fatal(err)
	}
	if err := bb.st.Sim.PutAccount(sim.Account{BankCode: a.BankCode, CardNumber: a.CardNumber, CardType: a.CardType,
		HolderName: a.HolderName, IDNumber: a.IDNumber, Phone: a.Phone, Balance: a.Balance}); err != nil {
		b.Fatal(err)
	}
	return a
}

// bind runs one complete binding of a: apply, read the code from banksim's
// inbox, confirm. lat, when not nil, collects each call's latency.
func (bb *bindingBench) bind(ctx context.Context, token string, a conformance.Account, lat *latencies) error {
	record := func(call string, t0 time.Time) {
		if lat != nil {
			lat.add(call, time.Since(t0))
		}
	}
	var bnd struct{ ID string }
	t0 := time.Now()
	st1, err := postJSON(bb.client, bb.url+"/v1/bindings", token, "", map[string]string{
		"external_user_id": "u-" + a.Phone, "holder_name": a.HolderName, "id_number": a.IDNumber,
		"card_number": a.CardNumber, "phone": a.Phone}, &bnd)
	record("apply", t0)
	if err != nil || st1 != http.StatusCreated {
		return fmt.Errorf("apply: %d %v", st1, err)
	}
	t1 := time.Now()
	texts, err := bb.st.SimCtl.SMS(ctx, a.Phone)
	record("read_code", t1)
	if err != nil || len(texts) == 0 {
		return fmt.Errorf("no code: %v", err)
	}
	var out struct{ Status string }
	t2 := time.Now()
	st2, err := postJSON(bb.client, bb.url+"/v1/bindings/"+bnd.ID+"/confirm", token, "", map[string]string{"otp": texts[0].Code}, &out)
	record("confirm", t2)
	if err != nil || st2 != http.StatusOK || out.Status != "bound" {
		return fmt.Errorf("confirm: %d %v", st2, err)
	}
	return nil
}

// token takes an access token (bcrypt is deliberately slow: outside the
// clock).
func (bb *bindingBench) token(b *testing.B, lat *latencies) string {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	t0 := time.Now()
	st, err := postJSON(bb.client, bb.url+"/v1/oauth/token", "", "", map[string]string{
		"grant_type": "client_credentials", "client_id": bb.clientID, "client_secret": bb.secret}, &tok)
	lat.add("token", time.Since(t0))
	if err != nil || st != http.StatusOK {
		b.Errorf("token: %d %v", st, err)
	}
	return tok.AccessToken
}

// slowBank returns a background load for measure: clients binding cards at
// bank code, every call of which banksim answers after the stack's
// SimMaxHold. It runs from the clock's start to its stop.
func (bb *bindingBench) slowBank(code string, clients int) func(b *testing.B) (stop func()) {
	return func(b *testing.B) func() {
		ctx, cancel := context.WithCancel(context.Background())
		info, err := bb.st.SimCtl.Bank(ctx, code)
		if err != nil {
			b.Fatal(err)
		}
		for _, op := range []string{"bind_apply", "bind_resend", "bind_confirm"} {
			if _, err := bb.st.Sim.AddFault(sim.Fault{BankCode: code, Operation: op, Mode: sim.FaultTimeout, Apply: true}); err != nil {
				b.Fatal(err)
			}
		}
		// Enough accounts for the run: each client binds one card per
		// 4 s at most.
		accts := make(chan conformance.Account, clients*32)
		for range cap(accts) {
			accts <- bb.account(b, info)
		}
		var wg sync.WaitGroup
		var slowDone atomic.Int64
		for range clients {
			tok := bb.token(b, &latencies{})
			wg.Go(func() {
				for ctx.Err() == nil {
					select {
					case a := <-accts:
						if bb.bind(ctx, tok, a, nil) == nil {
							slowDone.Add(1)
						}
					default:
						return
					}
				}
			})
		}
		return func() {
			cancel()
			bb.st.Sim.ClearFaults(code, "")
			wg.Wait()
			b.ReportMetric(float64(slowDone.Load()), "slow-bank-bindings")
		}
	}
}

// measure runs b.N complete bindings at ICBC from clients at once, each
// client with its own token; slow, when not nil, starts a background load
// with the clock and stops it after.
func (bb *bindingBench) measure(b *testing.B, clients int, slow func(b *testing.B) (stop func())) {
	ctx := context.Background()
	st := bb.st
	info, err := st.SimCtl.Bank(ctx, "ICBC")
	if err != nil {
		b.Fatal(err)
	}
	// One fresh account per binding, opened before the clock runs.
	accts := make(chan conformance.Account, b.N+benchWarmup)
	for range b.N + benchWarmup {
		accts <- bb.account(b, info)
	}
	var lat latencies
	tokens := make(chan string, clients+runtime.GOMAXPROCS(0)*clients)
	var opsBefore = st.HSM.Stats().Ops
	var done atomic.Int64
	run := func(token string) error {
		if err := bb.bind(ctx, token, <-accts, &lat); err != nil {
			return err
		}
		done.Add(1)
		return nil
	}
	// Tokens first (bcrypt is deliberately slow), outside the clock.
	procs := max(1, clients/runtime.GOMAXPROCS(0))
	for range procs * runtime.GOMAXPROCS(0) {
		tokens <- bb.token(b, &lat)
	}
	// Warm up at the same concurrency: connections opened, statements
	// prepared and planned on each, heap grown. Steady state is what
	// a server runs in; without this, short runs measure start-up.
	var warm sync.WaitGroup
	var warmErr atomic.Value
	left := atomic.Int64{}
	left.Store(benchWarmup)
	for range clients {
		warm.Add(1)
		go func() {
			defer warm.Done()
			tok := <-tokens
			defer func() { tokens <- tok }()
			for left.Add(-1) >= 0 {
				if err := run(tok); err != nil {
					warmErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	warm.Wait()
	if err, _ := warmErr.Load().(error); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	lat.forget("apply", "read_code", "confirm")
	// Statistics, as autovacuum keeps them on a running server. The
	// tables grew from empty in the warm-up, faster than autovacuum
	// looks (once a minute): without them the connections' cached
	// plans, made for empty tables, walk a merchant-wide index for
	// a card or a binding (docs/decisions.md, "Plans cached before
	// statistics").
	if _, err := st.Pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	done.Store(0)
	opsBefore = st.HSM.Stats().Ops

	var stopSlow func()
	if slow != nil {
		stopSlow = slow(b)
	}
	b.ResetTimer()
	start := time.Now()
	if clients == 1 {
		tok := <-tokens
		for range b.N {
			if err := run(tok); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(procs)
		b.RunParallel(func(pb *testing.PB) {
			tok := <-tokens
			for pb.Next() {
				if err := run(tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if stopSlow != nil {
		stopSlow()
	}
	n := float64(done.Load())
	b.ReportMetric(n/elapsed.Seconds(), "bindings/s")
	b.ReportMetric(float64(st.HSM.Stats().Ops-opsBefore)/n, "hsm-ops/binding")
	for _, call := range []string{"token", "apply", "read_code", "confirm"} {
		p50, p99 := lat.percentiles(call)
		b.ReportMetric(p50, call+"-p50-ms")
		b.ReportMetric(p99, call+"-p99-ms")
	}
	b.ReportMetric(0, "ns/op") // bindings/s is the figure; ns/op would mix in parallelism
}

// benchWarmup is how many bindings BenchmarkBindings runs, at the measured
// concurrency, before its clock starts.
const benchWarmup = 500

type noJobs struct{}

// InsertTx and InsertManyFastTx drop delivery jobs: the benchmark
// registers no endpoint, so Emit enqueues none; they only satisfy the
// interface.
func (noJobs) InsertTx(context.Context, pgx.Tx, river.JobArgs, *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	return nil, nil
}

func (noJobs) InsertManyFastTx(context.Context, pgx.Tx, []river.InsertManyParams) (int, error) {
	return 0, nil
}

func postJSON(c *http.Client, url, token, idemKey string, body, out any) (int, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

// latencies collects durations per call name.
type latencies struct {
	mu sync.Mutex
	m  map[string][]time.Duration
}

// forget drops what was collected for calls (the warm-up's).
func (l *latencies) forget(calls ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range calls {
		delete(l.m, c)
	}
}

func (l *latencies) add(call string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]time.Duration{}
	}
	l.m[call] = append(l.m[call], d)
}

// percentiles returns p50 and p99 in milliseconds.
func (l *latencies) percentiles(call string) (float64, float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := slices.Clone(l.m[call])
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / 1e6 }
	return at(0.50), at(0.99)
}
