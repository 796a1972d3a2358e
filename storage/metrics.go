package storage

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/prom"
)

// metrics are the peer's Prometheus metrics.
type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	reads          *prometheus.CounterVec
	readBytes      prometheus.Counter
	writes         *prometheus.CounterVec
	deletes        *prometheus.CounterVec
	audits         *prometheus.CounterVec
	ordersRejected *prometheus.CounterVec
	heartbeats     *prometheus.CounterVec
}

// newMetrics registers the peer's metrics on reg; the gauges read st.
func newMetrics(reg prometheus.Registerer, st *store) (*metrics, error) {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "topcdn", Subsystem: "storage", Name: name, Help: help}
	}
	gauge := func(name, help string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "topcdn", Subsystem: "storage", Name: name, Help: help,
		}, f)
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(opts("requests_total",
			"HTTP requests by route and status code."), []string{"route", "code"}),
		duration: prom.HistogramVec("storage", "request_duration_seconds", "HTTP request latency by route.", prometheus.ExponentialBuckets(0.0005, 4, 10), "route"),
		reads: prometheus.NewCounterVec(opts("reads_total",
			"Read orders by result (ok, rejected, error)."), []string{"result"}),
		readBytes: prometheus.NewCounter(opts("read_bytes_total",
			"Shard bytes served to readers.")),
		writes: prometheus.NewCounterVec(opts("writes_total",
			"Shard uploads by result (ok, exists, rejected, error)."), []string{"result"}),
		deletes: prometheus.NewCounterVec(opts("deletes_total",
			"Delete orders by result (ok, rejected, error)."), []string{"result"}),
		audits: prometheus.NewCounterVec(opts("audits_total",
			"Audits answered by result (ok, rejected, error)."), []string{"result"}),
		ordersRejected: prometheus.NewCounterVec(opts("orders_rejected_total",
			"Orders refused, by reason (missing, malformed, signature, signer, peer, shard, expired, range, size, replay)."),
			[]string{"reason"}),
		heartbeats: prometheus.NewCounterVec(opts("heartbeats_total",
			"Heartbeats sent to the origin by result (ok, error)."), []string{"result"}),
	}
	stat := func(pick func(capacity, used, free int64, shards int) int64) func() float64 {
		return func() float64 { return float64(pick(st.stats())) }
	}
	collectors := []prometheus.Collector{m.requests, m.duration, m.reads, m.readBytes, m.writes,
		m.deletes, m.audits, m.ordersRejected, m.heartbeats,
		gauge("shards", "Shards held.",
			stat(func(_, _, _ int64, n int) int64 { return int64(n) })),
		gauge("used_bytes", "Bytes the held shards take.",
			stat(func(_, used, _ int64, _ int) int64 { return used })),
		gauge("capacity_bytes", "Bytes lent for shards.",
			stat(func(capacity, _, _ int64, _ int) int64 { return capacity })),
		gauge("free_bytes", "Bytes left for new shards (capacity less used and uploads in flight).",
			stat(func(_, _, free int64, _ int) int64 { return free })),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// result is the result label of an outcome: ok, rejected (the client's
// fault) or error (the peer's).
func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case httpkit.StatusOf(err) < http.StatusInternalServerError:
		return "rejected"
	default:
		return "error"
	}
}
