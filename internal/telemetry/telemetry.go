// Package telemetry is quickpay's OpenTelemetry tracing and the River job
// metrics: a tracer provider from configuration, and the pieces that put
// it on each edge (the API's handler, the database pool, the River client,
// the bank and webhook HTTP clients).
//
// # Off costs nothing
//
// Tracing is off unless configured on. Off, Start returns a nil *Tracing
// and every method of a nil *Tracing gives back what it was handed: the
// handler itself, the transport itself, no query tracer, no River
// middleware. Nothing is wrapped, so the hot paths run the code they ran
// before tracing existed, not a no-op provider's.
//
// # What spans hold
//
// Spans name operations, never values: a server span has the method and
// the status, not the URL path (the hosted page's path carries its session
// token); a client span has the method, the host and the status, not the
// path or query (a merchant's webhook URL may carry a secret); SQL spans
// have the statement text, whose values are bind parameters and are not
// recorded. Trace context is neither read from requests (a merchant does
// not choose our trace ids or force sampling) nor sent to banks or
// merchants; it goes into a River job's metadata, so the job's span is a
// child of the request that enqueued it.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config says whether and how to trace.
type Config struct {
	// Enabled turns tracing on. Off (the default) installs nothing.
	Enabled bool
	// ServiceName is the resource's service.name. Defaults to "quickpay".
	ServiceName string
	// SampleRatio is the share of new traces kept, 0 to 1; a span whose
	// parent is sampled is always kept (parent-based). cmd/quickpay
	// defaults it to 1.
	SampleRatio float64
	// Exporter receives the spans. Defaults to OTLP over HTTP, configured
	// by the standard OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (and the exporter's other OTEL_
	// variables). Tests pass an in-memory exporter.
	Exporter sdktrace.SpanExporter
	// Synchronous exports each span as it ends instead of in batches:
	// for tests, which read the exporter right after a request.
	Synchronous bool
}

// Tracing is a running tracer provider. A nil *Tracing is tracing off.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// Start builds the tracer provider cfg describes, or returns nil when
// tracing is off. Errors: a sample ratio outside [0, 1], the exporter's.
func Start(ctx context.Context, cfg Config) (*Tracing, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if !(cfg.SampleRatio >= 0 && cfg.SampleRatio <= 1) {
		return nil, fmt.Errorf("telemetry: sample ratio %v is not within 0 and 1", cfg.SampleRatio)
	}
	name := cfg.ServiceName
	if name == "" {
		name = "quickpay"
	}
	exp := cfg.Exporter
	if exp == nil {
		var err error
		if exp, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
		}
	}
	export := sdktrace.WithBatcher(exp)
	if cfg.Synchronous {
		export = sdktrace.WithSyncer(exp)
	}
	tp := sdktrace.NewTracerProvider(export,
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))))
	return &Tracing{provider: tp}, nil
}

// On reports whether t traces.
func (t *Tracing) On() bool { return t != nil }

// Provider is the tracer provider, or nil when off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.provider
}

// Shutdown exports what is buffered and stops the provider, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// instrumentation is the tracer name of the spans this package starts.
const instrumentation = "github.com/quickpay/quickpay/internal/telemetry"

// Handler returns h with a server span around each request, named
// "<name> <method>", or h itself when off. Trace context in the request is
// ignored: every request starts its own trace.
func (t *Tracing) Handler(h http.Handler, name string) http.Handler {
	if t == nil {
		return h
	}
	tr := t.provider.Tracer(instrumentation)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tr.Start(r.Context(), name+" "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithNewRoot(), trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport returns rt with a client span around each round trip, named
// "<name> <method>", or rt itself when off. No trace header is sent. A nil
// rt is http.DefaultTransport.
func (t *Tracing) Transport(rt http.RoundTripper, name string) http.RoundTripper {
	if t == nil {
		return rt
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &transport{next: rt, name: name, tracer: t.provider.Tracer(instrumentation)}
}

type transport struct {
	next   http.RoundTripper
	name   string
	tracer trace.Tracer
}

func (c *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, span := c.tracer.Start(r.Context(), c.name+" "+r.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", r.Method),
			attribute.String("server.address", r.URL.Hostname())))
	defer span.End()
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		// Transport errors name the host and the cause, not the query.
		span.SetStatus(codes.Error, "no answer")
		span.SetAttributes(attribute.String("error.type", errorType(err)))
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	return resp, nil
}

// errorType is a transport failure's class, without its text.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	default:
		return "transport"
	}
}

// QueryTracer is a pgx tracer making a span of each statement (its text,
// no parameters), or nil when off.
func (t *Tracing) QueryTracer() pgx.QueryTracer {
	if t == nil {
		return nil
	}
	return otelpgx.NewTracer(otelpgx.WithTracerProvider(t.provider), otelpgx.WithMeterProvider(noop.NewMeterProvider()),
		otelpgx.WithTrimSQLInSpanName(), otelpgx.WithDisableConnectionDetailsInAttributes())
}

// RiverMiddleware traces River: a span for each insert, with the trace
// context put in the job's metadata, and one for each run of a job, child
// of the span that enqueued it. Nil when off.
func (t *Tracing) RiverMiddleware() []rivertype.Middleware {
	if t == nil {
		return nil
	}
	return []rivertype.Middleware{&jobParent{}, otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
		EnableTracePropagation: true, EnableWorkSpanJobKindSuffix: true,
		TracerProvider: t.provider, MeterProvider: noop.NewMeterProvider(),
	})}
}

// jobParent makes the trace context otelriver put in a job's metadata the
// parent of the job's work span (otelriver only links to it), so a request
// and the jobs it enqueued are one trace. It runs before otelriver's work
// middleware.
type jobParent struct{ river.MiddlewareDefaults }

func (*jobParent) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	if len(job.Metadata) > 0 {
		ctx = propagation.TraceContext{}.Extract(ctx, metadataCarrier(job.Metadata))
	}
	return doInner(ctx)
}

// ForceFlush exports every span ended so far (bounded at 5 s).
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return t.provider.ForceFlush(ctx)
}
