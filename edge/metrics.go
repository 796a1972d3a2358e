package edge

import "github.com/prometheus/client_golang/prometheus"

// metrics are the edge's own Prometheus metrics; boxo's gateway adds its
// ipfs_http_* metrics to the same registry.
type metrics struct {
	hits     *prometheus.CounterVec
	misses   prometheus.Counter
	upstream prometheus.Histogram
	// fallbacks counts names answered from what the edge kept instead of
	// what the origin said (nameRecords, source.lookupDNSLink).
	fallbacks *prometheus.CounterVec

	responseHits prometheus.CounterFunc // reads Edge.responseHits
}

func newMetrics(reg prometheus.Registerer, e *Edge) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "edge", Name: "cache_hits_total",
			Help: "Blocks served from a cache tier (memory, disk).",
		}, []string{"tier"}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "edge", Name: "cache_misses_total",
			Help: "Blocks fetched upstream (storage peers or origin).",
		}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "topcdn", Subsystem: "edge", Name: "upstream_fetch_seconds",
			Help:    "Time to fetch and verify one block upstream.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "edge", Name: "name_fallbacks_total",
			Help: "Names answered from the edge's last valid answer instead of the origin's, by kind (ipns, dnslink) and reason (origin_unavailable, origin_not_found, rollback).",
		}, []string{"kind", "reason"}),
	}
	m.responseHits = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "topcdn", Subsystem: "edge", Name: "response_cache_hits_total",
		Help: "Requests answered from ready-to-send cached responses.",
	}, func() float64 { return float64(e.responseHits.Load()) })
	respBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "topcdn", Subsystem: "edge", Name: "response_cache_bytes",
		Help: "Bytes of ready-to-send responses cached in memory.",
	}, func() float64 { return float64(e.resp.size()) })
	cacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "topcdn", Subsystem: "edge", Name: "memory_cache_bytes",
		Help: "Bytes of blocks in the memory cache.",
	}, func() float64 { _, b := e.mem.size(); return float64(b) })
	for _, c := range []prometheus.Collector{m.hits, m.misses, m.upstream, m.fallbacks, cacheBytes, m.responseHits, respBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
