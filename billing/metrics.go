package billing

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/prom"
)

// metrics are the billing service's Prometheus metrics.
type metrics struct {
	claims   *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	evidence *prometheus.CounterVec
	bounds   *prometheus.CounterVec
	probes   *prometheus.CounterVec
	backing  *prometheus.CounterVec
	settled  prometheus.Counter
	paid     prometheus.Counter
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const sub = "billing"
	m := &metrics{
		claims:   prom.CounterVec(sub, "claims_total", "Claims by kind (batch, record, claim, order, deposit), result (accepted, rejected) and reason.", "kind", "result", "reason"),
		bytes:    prom.CounterVec(sub, "claimed_bytes_total", "Bytes claimed by kind (served, storage_read) and result (accepted, rejected).", "kind", "result"),
		evidence: prom.CounterVec(sub, "evidence_reads_total", "Reads of the DNS router's evidence (epoch counters, demand, probe bytes) by result (ok, error).", "result"),
		bounds:   prom.CounterVec(sub, "edge_bound_bytes_total", "Edge bytes at settlement by what bounded them: paid, or the reason of the refused excess (not_admitted, no_counter, over_demand, over_counter, no_demand_evidence).", "result"),
		probes:   prom.CounterVec(sub, "probes_total", "Sampling probes of edges by result (ok, wrong_content, error).", "result"),
		backing:  prom.CounterVec(sub, "upstream_checks_total", "Upstream-read checks of an edge's records per (epoch, publisher, root) at settlement, by result (backed, deferred, paid_late, refused, skipped_unstriped, skipped_no_claims).", "result"),
		settled:  prom.Counter(sub, "settled_epochs_total", "Epochs settled."),
		paid:     prom.Counter(sub, "paid_total", "Tokens credited to operators by settlement."),
		requests: prom.CounterVec(sub, "requests_total", "HTTP requests by route and status code.", "route", "code"),
	}
	if err := prom.Register(reg, m.claims, m.bytes, m.evidence, m.bounds, m.probes, m.backing, m.settled, m.paid, m.requests); err != nil {
		return nil, err
	}
	return m, nil
}
