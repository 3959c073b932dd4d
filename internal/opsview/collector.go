package opsview

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector defaults.
const (
	// DefaultCollectTimeout bounds one read of the database at scrape time.
	DefaultCollectTimeout = 2 * time.Second
	// DefaultCollectCache is how long a read serves scrapes: scrapes more
	// frequent than this (several Prometheus servers, a refreshing
	// dashboard) cost the database nothing.
	DefaultCollectCache = 10 * time.Second
)

// bankDayZone is the banks' day (Asia/Shanghai, no daylight saving time):
// the day whose charges and refunds the Collector counts.
var bankDayZone = time.FixedZone("Asia/Shanghai", 8*60*60)

// CollectorConfig configures a Collector.
type CollectorConfig struct {
	// Timeout bounds one read. Defaults to DefaultCollectTimeout.
	Timeout time.Duration
	// CacheFor is how long a read is served again. Defaults to
	// DefaultCollectCache.
	CacheFor time.Duration
}

// Collector is a prometheus.Collector of business gauges read from the
// database at scrape time: the current bank day's charges and refunds,
// unknown attempts, the webhook backlog, open reconciliation mismatches
// and River's jobs. A read is bounded by Timeout and served for CacheFor;
// a read that fails serves the last good values, and
// quickpay_opsview_read_ok says 0. Labels are closed, small sets (statuses,
// failure codes, queues, job kinds): never a merchant or an id.
type Collector struct {
	r   *Reader
	cfg CollectorConfig

	mu     sync.Mutex
	readAt time.Time
	last   []prometheus.Metric
	ok     bool
}

var (
	descCharges = prometheus.NewDesc("quickpay_charges",
		"Charges due on the current bank day (Asia/Shanghai), by status and failure code (\"\" for none).",
		[]string{"status", "failure_code"}, nil)
	descChargesHeld = prometheus.NewDesc("quickpay_charges_held",
		"Charges held for operators (the bank answered another amount), whatever their day.", nil, nil)
	descRefunds = prometheus.NewDesc("quickpay_refunds",
		"Refunds created on the current bank day (Asia/Shanghai), by status.", []string{"status"}, nil)
	descRefundsPending = prometheus.NewDesc("quickpay_refunds_pending",
		"Refunds whose outcome is not known yet, whatever their day.", nil, nil)
	descUnknown = prometheus.NewDesc("quickpay_unknown_attempts",
		"Charge attempts whose outcome is unknown (waiting for a query or the bank's statement).", nil, nil)
	descUnknownAge = prometheus.NewDesc("quickpay_unknown_attempt_oldest_age_seconds",
		"Age of the oldest charge attempt whose outcome is unknown; 0 when none.", nil, nil)
	descBacklog = prometheus.NewDesc("quickpay_webhook_backlog_events",
		fmt.Sprintf("Events a webhook delivery job that has not completed names, with no 2xx answer recorded, among the oldest jobs' first %d events (quickpay_webhook_backlog_capped says more wait).", MaxBacklogCount), nil, nil)
	descBacklogCapped = prometheus.NewDesc("quickpay_webhook_backlog_capped",
		fmt.Sprintf("1 when the webhook backlog holds more events than the %d read for quickpay_webhook_backlog_events.", MaxBacklogCount), nil, nil)
	descBacklogAge = prometheus.NewDesc("quickpay_webhook_oldest_undelivered_age_seconds",
		"Age of the oldest event of the webhook backlog; 0 when none.", nil, nil)
	descMismatches = prometheus.NewDesc("quickpay_reconciliation_mismatches_open",
		"Reconciliation mismatches in the latest run of their bank and bank day.", nil, nil)
	descJobs = prometheus.NewDesc("quickpay_river_jobs",
		"River jobs by queue and state (every state but completed).", []string{"queue", "state"}, nil)
	descJobErrors = prometheus.NewDesc("quickpay_river_jobs_errored",
		"River jobs whose last run failed: retryable (to run again) and discarded (given up), by kind.",
		[]string{"kind", "state"}, nil)
	descReadOK = prometheus.NewDesc("quickpay_opsview_read_ok",
		"1 when the last read of these gauges succeeded, 0 when it failed (the values shown are older).", nil, nil)
)

// NewCollector returns a Collector reading through r. Register it on
// serve's registry: prometheus.MustRegister(opsview.NewCollector(reader,
// opsview.CollectorConfig{})).
func NewCollector(r *Reader, cfg CollectorConfig) *Collector {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCollectTimeout
	}
	if cfg.CacheFor <= 0 {
		cfg.CacheFor = DefaultCollectCache
	}
	return &Collector{r: r, cfg: cfg}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCharges, descChargesHeld, descRefunds, descRefundsPending,
		descUnknown, descUnknownAge, descBacklog, descBacklogCapped, descBacklogAge, descMismatches, descJobs, descJobErrors,
		descReadOK} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.r.clock.Now()
	if c.readAt.IsZero() || now.Sub(c.readAt) >= c.cfg.CacheFor || now.Before(c.readAt) {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
		ms, err := c.read(ctx, now)
		cancel()
		c.readAt, c.ok = now, err == nil
		if err == nil {
			c.last = ms
		}
	}
	for _, m := range c.last {
		ch <- m
	}
	ok := 0.0
	if c.ok {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(descReadOK, prometheus.GaugeValue, ok)
}

// read reads every gauge.
func (c *Collector) read(ctx context.Context, now time.Time) ([]prometheus.Metric, error) {
	var ms []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ms = append(ms, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	d := now.In(bankDayZone)
	today := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, bankDayZone)

	type count struct {
		a, b string
		n    int64
	}
	scan2 := func(row pgx.CollectableRow) (count, error) {
		var x count
		return x, row.Scan(&x.a, &x.b, &x.n)
	}
	charges, err := all(ctx, c.r, "charge gauges", scan2,
		`SELECT status, coalesce(failure_code, ''), count(*) FROM charges
		  WHERE charge_date = $1::date GROUP BY 1, 2`, dateOf(today))
	if err != nil {
		return nil, err
	}
	for _, x := range charges {
		gauge(descCharges, float64(x.n), x.a, x.b)
	}
	refunds, err := all(ctx, c.r, "refund gauges", scan2,
		`SELECT status, '', count(*) FROM refunds
		  WHERE created_at >= $1 AND created_at < $2 GROUP BY 1`, today, today.AddDate(0, 0, 1))
	if err != nil {
		return nil, err
	}
	for _, x := range refunds {
		gauge(descRefunds, float64(x.n), x.a)
	}
	var held, pending int64
	if err := c.r.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM charges WHERE status = 'held'),
		(SELECT count(*) FROM refunds WHERE status = 'pending')`).Scan(&held, &pending); err != nil {
		return nil, err
	}
	gauge(descChargesHeld, float64(held))
	gauge(descRefundsPending, float64(pending))

	g, err := c.r.gauges(ctx, now)
	if err != nil {
		return nil, err
	}
	gauge(descUnknown, float64(g.unknown))
	gauge(descUnknownAge, g.oldestUnknown.Seconds())
	gauge(descBacklog, float64(g.backlog))
	gauge(descBacklogAge, g.oldestUndelivered.Seconds())
	capped := 0.0
	if g.backlogCapped {
		capped = 1
	}
	gauge(descBacklogCapped, capped)
	gauge(descMismatches, float64(g.openMismatches))

	jobs, err := all(ctx, c.r, "river job gauges", scan2,
		`SELECT queue, state::text, count(*) FROM river_job WHERE state <> 'completed' GROUP BY 1, 2`)
	if err != nil {
		return nil, err
	}
	for _, x := range jobs {
		gauge(descJobs, float64(x.n), x.a, x.b)
	}
	errored, err := all(ctx, c.r, "river job errors", scan2,
		`SELECT kind, state::text, count(*) FROM river_job WHERE state IN ('retryable', 'discarded') GROUP BY 1, 2`)
	if err != nil {
		return nil, err
	}
	for _, x := range errored {
		gauge(descJobErrors, float64(x.n), x.a, x.b)
	}
	return ms, nil
}
