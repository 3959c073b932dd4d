package telemetry_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/telemetry"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestOffInstallsNothing(t *testing.T) {
	t.Parallel()
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Enabled: false, SampleRatio: 1})
	if err != nil || tr != nil {
		t.Fatalf("Start off = %v, %v; want nil, nil", tr, err)
	}
	h := http.NewServeMux()
	if got, ok := tr.Handler(h, "api").(*http.ServeMux); !ok || got != h {
		t.Error("off: the handler is wrapped")
	}
	rt := http.DefaultTransport
	if tr.Transport(rt, "bank") != rt {
		t.Error("off: the transport is wrapped")
	}
	if tr.QueryTracer() != nil {
		t.Error("off: a pgx tracer is returned")
	}
	if tr.RiverMiddleware() != nil {
		t.Error("off: River middleware is returned")
	}
	if tr.Provider() != nil || tr.On() {
		t.Error("off: a tracer provider is returned")
	}
}

func TestStartRefusesASampleRatioOutOfRange(t *testing.T) {
	t.Parallel()
	for _, r := range []float64{-0.1, 1.5} {
		if _, err := telemetry.Start(context.Background(), telemetry.Config{Enabled: true, SampleRatio: r,
			Exporter: tracetest.NewInMemoryExporter()}); err == nil {
			t.Errorf("ratio %v: started", r)
		}
	}
}

func TestSpansHoldNoPathOrQuery(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Enabled: true, SampleRatio: 1, Exporter: exp, Synchronous: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			t.Error("a trace header reached the remote end")
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer backend.Close()
	client := &http.Client{Transport: tr.Transport(nil, "webhook")}
	api := httptest.NewServer(tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, backend.URL+"/hook?token=s3cret-value", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		w.WriteHeader(http.StatusAccepted)
	}), "api"))
	defer api.Close()
	req, _ := http.NewRequest(http.MethodGet, api.URL+"/hosted/tok-s3cret-value", nil)
	// A caller's trace context is not taken up.
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the server's and the client's", len(spans))
	}
	for _, s := range spans {
		if s.SpanContext.TraceID() != spans[0].SpanContext.TraceID() {
			t.Error("the client span is in another trace")
		}
		if s.SpanContext.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
			t.Error("the caller's trace id was taken up")
		}
		for _, a := range s.Attributes {
			if v := a.Value.Emit(); len(v) > 0 && (strings.Contains(v, "s3cret") || strings.Contains(v, "/hook") || strings.Contains(v, "/hosted")) {
				t.Errorf("span %q holds %s=%s", s.Name, a.Key, v)
			}
		}
	}
	names := map[string]bool{spans[0].Name: true, spans[1].Name: true}
	if !names["api GET"] || !names["webhook POST"] {
		t.Errorf("span names %v, want api GET and webhook POST", names)
	}
}

// failArgs is a job that fails as its Mode says.
type failArgs struct {
	Mode string `json:"mode"`
}

func (failArgs) Kind() string { return "telemetry_fail" }

type failWorker struct {
	river.WorkerDefaults[failArgs]
	snoozed *sync.Map // job ids snoozed once
}

func (w failWorker) Work(_ context.Context, j *river.Job[failArgs]) error {
	switch j.Args.Mode {
	case "error":
		return errors.New("failed on purpose")
	case "panic":
		panic("panicked on purpose")
	case "snooze":
		if _, again := w.snoozed.LoadOrStore(j.ID, true); again {
			return nil
		}
		return river.JobSnooze(time.Millisecond)
	case "ok":
		return nil
	default:
		return errors.New("unknown mode")
	}
}

func TestJobFailuresCountedByKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	reg := prometheus.NewRegistry()
	failures, err := telemetry.NewJobFailures(reg)
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, failWorker{snoozed: &sync.Map{}})
	done := make(chan struct{}, 8)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:        map[string]river.QueueConfig{"telemetry": {MaxWorkers: 2}},
		Workers:       workers,
		Middleware:    []rivertype.Middleware{failures},
		FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Stop(context.Background()) })
	go func() {
		for e := range events {
			if e.Kind == river.EventKindJobCompleted || e.Job.State == rivertype.JobStateDiscarded {
				done <- struct{}{}
			}
		}
	}()
	for _, mode := range []string{"error", "panic", "snooze", "ok"} {
		if _, err := client.Insert(ctx, failArgs{Mode: mode}, &river.InsertOpts{Queue: "telemetry", MaxAttempts: 1}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(20 * time.Second)
	for range 4 {
		select {
		case <-done:
		case <-deadline:
			t.Fatal("jobs did not finish within 20 s")
		}
	}
	value := func(name string) float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name {
				for _, m := range f.GetMetric() {
					if m.GetLabel()[0].GetValue() == "telemetry_fail" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	// The error and the panic; the snooze and the success are not failures.
	if got := value("quickpay_river_job_failures_total"); got != 2 {
		t.Errorf("failures = %v, want 2", got)
	}
	if got := value("quickpay_river_jobs_discarded_total"); got != 2 {
		t.Errorf("discarded = %v, want 2 (each failed its only attempt)", got)
	}
}
