package telemetry

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel/propagation"
)

// metadataCarrier reads a job's metadata JSON as a trace-context carrier:
// its string fields (otelriver writes "traceparent" and "tracestate").
func metadataCarrier(metadata []byte) propagation.MapCarrier {
	var meta map[string]any
	if err := json.Unmarshal(metadata, &meta); err != nil {
		return propagation.MapCarrier{}
	}
	c := make(propagation.MapCarrier, len(meta))
	for k, v := range meta {
		if s, ok := v.(string); ok {
			c[k] = s
		}
	}
	return c
}

// JobFailures is a River worker middleware counting failed runs of jobs by
// kind: a returned error, a timeout or a panic (counted, then let through
// to River's recovery). A snooze is not a failure. A failure is also
// counted as discarded when it ends the job: its last attempt, or a
// cancellation (river.JobCancel).
//
//	quickpay_river_job_failures_total{kind}
//	quickpay_river_jobs_discarded_total{kind}
type JobFailures struct {
	river.MiddlewareDefaults
	failures, discarded *prometheus.CounterVec
}

// NewJobFailures registers the counters on reg.
func NewJobFailures(reg prometheus.Registerer) (*JobFailures, error) {
	m := &JobFailures{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_river_job_failures_total",
			Help: "Runs of River jobs that failed (error, timeout or panic), by job kind.",
		}, []string{"kind"}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_river_jobs_discarded_total",
			Help: "River jobs whose failure ended them (last attempt, or cancelled), by job kind.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.failures, m.discarded} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Work implements rivertype.WorkerMiddleware.
func (m *JobFailures) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) (err error) {
	panicked := true
	defer func() {
		if !panicked && (err == nil || isSnooze(err)) {
			return
		}
		m.failures.WithLabelValues(job.Kind).Inc()
		var cancel *rivertype.JobCancelError
		if job.Attempt >= job.MaxAttempts || (err != nil && errors.As(err, &cancel)) {
			m.discarded.WithLabelValues(job.Kind).Inc()
		}
	}()
	err = doInner(ctx)
	panicked = false
	return err
}

func isSnooze(err error) bool {
	var snooze *rivertype.JobSnoozeError
	return errors.As(err, &snooze)
}

var _ rivertype.WorkerMiddleware = (*JobFailures)(nil)
var _ rivertype.WorkerMiddleware = (*jobParent)(nil)
