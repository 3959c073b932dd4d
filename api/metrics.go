package api

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quickpay/quickpay/vaultkeys"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quickpay_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "quickpay_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// hsmCollector reads the session pool's counters at scrape time.
type hsmCollector struct {
	hsm                                                               *vaultkeys.HSM
	waits, waitSecs, errs, discarded, logins, ops, in, idle, capacity *prometheus.Desc
}

func newHSMCollector(h *vaultkeys.HSM) *hsmCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &hsmCollector{
		hsm:       h,
		waits:     d("quickpay_hsm_pool_waits_total", "Session acquisitions that waited for a free session."),
		waitSecs:  d("quickpay_hsm_pool_wait_seconds_total", "Time spent waiting for a session."),
		errs:      d("quickpay_hsm_errors_total", "HSM operations that returned an error."),
		discarded: d("quickpay_hsm_sessions_discarded_total", "Broken sessions closed and replaced."),
		logins:    d("quickpay_hsm_logins_total", "Logins to the token, first and after session loss."),
		ops:       d("quickpay_hsm_operations_total", "HSM operations that succeeded."),
		in:        d("quickpay_hsm_sessions_in_use", "Sessions running an operation now."),
		idle:      d("quickpay_hsm_sessions_idle", "Open sessions waiting in the pool."),
		capacity:  d("quickpay_hsm_sessions_max", "Pool capacity."),
	}
}

func (c *hsmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.waits, c.waitSecs, c.errs, c.discarded, c.logins, c.ops, c.in, c.idle, c.capacity} {
		ch <- d
	}
}

func (c *hsmCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.hsm.Stats()
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.Waits))
	ch <- prometheus.MustNewConstMetric(c.waitSecs, prometheus.CounterValue, s.WaitTime.Seconds())
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(s.Errors))
	ch <- prometheus.MustNewConstMetric(c.discarded, prometheus.CounterValue, float64(s.Discarded))
	ch <- prometheus.MustNewConstMetric(c.logins, prometheus.CounterValue, float64(s.Logins))
	ch <- prometheus.MustNewConstMetric(c.ops, prometheus.CounterValue, float64(s.Ops))
	ch <- prometheus.MustNewConstMetric(c.in, prometheus.GaugeValue, float64(s.InUse))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.Idle))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(s.PoolCapacity))
}

// poolCollector reads pgxpool statistics at scrape time.
type poolCollector struct {
	pool                                                    *pgxpool.Pool
	total, idle, acquired, max, acquires, waitSec, emptyAcq *prometheus.Desc
}

func newPoolCollector(p *pgxpool.Pool) *poolCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &poolCollector{
		pool:     p,
		total:    d("quickpay_db_pool_conns", "Open database connections."),
		idle:     d("quickpay_db_pool_idle_conns", "Idle database connections."),
		acquired: d("quickpay_db_pool_acquired_conns", "Connections in use."),
		max:      d("quickpay_db_pool_max_conns", "Pool capacity."),
		acquires: d("quickpay_db_pool_acquires_total", "Connection acquisitions."),
		waitSec:  d("quickpay_db_pool_acquire_wait_seconds_total", "Time spent acquiring connections."),
		emptyAcq: d("quickpay_db_pool_empty_acquires_total", "Acquisitions that waited for a connection."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.acquired, c.max, c.acquires, c.waitSec, c.emptyAcq} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(c.acquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.acquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.waitSec, prometheus.CounterValue, s.AcquireDuration().Seconds())
	ch <- prometheus.MustNewConstMetric(c.emptyAcq, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
}
