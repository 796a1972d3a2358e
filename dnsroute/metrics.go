package dnsroute

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/prom"
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

	challenges       *prometheus.CounterVec
	challengeRecords prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const sub = "dnsroute"
	m := &metrics{
		queries:       prom.CounterVec(sub, "queries_total", "DNS queries answered, by query type and response code.", "type", "rcode"),
		answers:       prom.CounterVec(sub, "answers_total", "Times an edge was handed out in an answer, by edge peer ID.", "edge"),
		duration:      prom.HistogramVec(sub, "query_duration_seconds", "Time to answer a query, by transport.", []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025}, "transport"),
		edges:         prom.GaugeVec(sub, "edges", "Edges known, by state (healthy, unhealthy).", "state"),
		names:         prom.Gauge(sub, "names", "Published names served, as last read from the origin."),
		heartbeats:    prom.CounterVec(sub, "heartbeats_total", "Edge heartbeats received, by result (ok, invalid, forged, stale, replayed, refused).", "result"),
		probes:        prom.CounterVec(sub, "probes_total", "Active health probes of edges, by result (ok, error).", "result"),
		rrl:           prom.CounterVec(sub, "rrl_total", "UDP responses withheld by response rate limiting, by action (drop, slip).", "action"),
		polls:         prom.CounterVec(sub, "polls_total", "Polls of the origin's names and billing's suspensions and forfeits, by source (origin, billing, forfeits) and result.", "source", "result"),
		cacheHits:     prom.Counter(sub, "response_cache_hits_total", "UDP queries answered from ready-to-send response bytes."),
		contentProbes: prom.CounterVec(sub, "content_probes_total", "Content probes of edges (a published root's block, checked against its CID), by result (ok, error, lied).", "result"),
		quarantines:   prom.CounterVec(sub, "quarantines_total", "Edges quarantined for serving wrong bytes, by who caught them (probe, billing).", "source"),
		quarantined:   prom.Gauge(sub, "quarantined_edges", "Edges in quarantine, registered or not."),
		demandDropped: prom.Counter(sub, "demand_units_dropped_total", "Client units not counted as demand because an epoch's table was full."),
		challenges: prom.CounterVec(sub, "acme_challenges_total", "ACME challenge records asked for, by op (add, delete, other) and result "+
			"(ok, forged, refused, not_ready, out_of_zone, no_dnslink, no_delegation, unpublished, limited, invalid).", "op", "result"),
		challengeRecords: prom.Gauge(sub, "acme_challenge_records", "ACME challenge TXT records set."),
	}
	m.udpDuration = m.duration.WithLabelValues("udp")
	if err := prom.Register(reg, m.queries, m.answers, m.duration, m.edges, m.names, m.heartbeats, m.probes, m.rrl, m.polls, m.cacheHits, m.contentProbes, m.quarantines, m.quarantined, m.demandDropped,
		m.challenges, m.challengeRecords); err != nil {
		return nil, err
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
