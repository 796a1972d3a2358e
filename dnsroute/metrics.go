package dnsroute

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus metrics; see README.md.
type metrics struct {
	queries  *prometheus.CounterVec
	answers  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// udpDuration is duration's "udp" child, resolved once for the
	// response-cache path.
	udpDuration prometheus.Observer
	edges       *prometheus.GaugeVec
	names       prometheus.Gauge
	heartbeats  *prometheus.CounterVec
	probes      *prometheus.CounterVec
	rrl         *prometheus.CounterVec
	polls       *prometheus.CounterVec
	cacheHits   prometheus.Counter

	contentProbes *prometheus.CounterVec
	quarantines   *prometheus.CounterVec
	quarantined   prometheus.Gauge
	demandDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "topcdn", "dnsroute"
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "queries_total", Help: "DNS queries answered, by query type and response code."},
			[]string{"type", "rcode"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "answers_total", Help: "Times an edge was handed out in an answer, by edge peer ID."},
			[]string{"edge"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "query_duration_seconds", Help: "Time to answer a query, by transport.",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025}},
			[]string{"transport"}),
		edges: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "edges", Help: "Edges known, by state (healthy, unhealthy)."},
			[]string{"state"}),
		names: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "names", Help: "Published names served, as last read from the origin."}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "heartbeats_total", Help: "Edge heartbeats received, by result (ok, invalid, forged, stale, replayed, refused)."},
			[]string{"result"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "probes_total", Help: "Active health probes of edges, by result (ok, error)."},
			[]string{"result"}),
		rrl: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rrl_total", Help: "UDP responses withheld by response rate limiting, by action (drop, slip)."},
			[]string{"action"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "polls_total", Help: "Polls of the origin's names and billing's suspensions and forfeits, by source (origin, billing, forfeits) and result."},
			[]string{"source", "result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "response_cache_hits_total", Help: "UDP queries answered from ready-to-send response bytes."}),
		contentProbes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "content_probes_total", Help: "Content probes of edges (a published root's block, checked against its CID), by result (ok, error, lied)."},
			[]string{"result"}),
		quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "quarantines_total", Help: "Edges quarantined for serving wrong bytes, by who caught them (probe, billing)."},
			[]string{"source"}),
		quarantined: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "quarantined_edges", Help: "Edges in quarantine, registered or not."}),
		demandDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "demand_units_dropped_total", Help: "Client units not counted as demand because an epoch's table was full."}),
	}
	m.udpDuration = m.duration.WithLabelValues("udp")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.answers, m.duration, m.edges, m.names,
			m.heartbeats, m.probes, m.rrl, m.polls, m.cacheHits, m.contentProbes, m.quarantines, m.quarantined, m.demandDropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// typeLabel is the metric label of a query type: its mnemonic for the
// types the router serves, "other" for the rest, so the label set stays
// small whatever clients send.
func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeSOA, dns.TypeNS, dns.TypeANY,
		dns.TypeCNAME, dns.TypeMX, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeCAA, dns.TypePTR, dns.TypeSRV, dns.TypeDS, dns.TypeDNSKEY:
		return dns.TypeToString[t]
	}
	return "other"
}

// rcodeLabel is the metric label of a response code.
func rcodeLabel(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "other"
}
