package edge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/prom"
	"github.com/topcdn/topcdn/namestream"
)

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

	// changes counts pushed name changes by kind and what became of them
	// (applied; same or stale: the edge already had it or a newer one);
	// stream counts the follower's pages and its rejected changes.
	changes *prometheus.CounterVec
	stream  *namestream.Metrics

	// permissions counts AllowCertificate's answers by result.
	permissions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, e *Edge) (*metrics, error) {
	m := &metrics{
		hits:        prom.CounterVec("edge", "cache_hits_total", "Blocks served from a cache tier (memory, disk).", "tier"),
		misses:      prom.Counter("edge", "cache_misses_total", "Blocks fetched upstream (storage peers or origin)."),
		upstream:    prom.Histogram("edge", "upstream_fetch_seconds", "Time to fetch and verify one block upstream.", prometheus.ExponentialBuckets(0.0005, 4, 10)),
		fallbacks:   prom.CounterVec("edge", "name_fallbacks_total", "Names answered from the edge's last valid answer instead of the origin's, by kind (ipns, dnslink) and reason (origin_unavailable, origin_not_found, rollback).", "kind", "reason"),
		permissions: prom.CounterVec("edge", "tls_permission_total", "On-demand certificate permission checks, by result: allowed; refused as in_zone, bad_host, no_dnslink, unpublished, no_delegation, cached_deny (refused within the last minute), limited (rate limits: no lookup made), off (no resolver); error (no verdict: DNS or the origin failed).", "result"),
		changes:     prom.CounterVec("edge", "name_changes_total", "Name changes pushed by the origin's stream, by kind (record, purge, reset) and result (applied; same or stale: a record the edge had, or older than one it had).", "kind", "result"),
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
	if err := prom.Register(reg, m.hits, m.misses, m.upstream, m.fallbacks, cacheBytes, m.responseHits, respBytes, m.changes, m.permissions); err != nil {
		return nil, err
	}
	m.stream = namestream.NewMetrics(reg, "edge", func() bool { up, _, _ := e.NameStream(); return up })
	return m, nil
}
