package billing

import "github.com/prometheus/client_golang/prometheus"

// metrics are the billing service's Prometheus metrics.
type metrics struct {
	claims   *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	dnsCheck *prometheus.CounterVec
	probes   *prometheus.CounterVec
	backing  *prometheus.CounterVec
	settled  prometheus.Counter
	paid     prometheus.Counter
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "topcdn", Subsystem: "billing", Name: name, Help: help}
	}
	m := &metrics{
		claims: prometheus.NewCounterVec(opts("claims_total",
			"Claims by kind (batch, record, claim, order, deposit), result (accepted, rejected) and reason."),
			[]string{"kind", "result", "reason"}),
		bytes: prometheus.NewCounterVec(opts("claimed_bytes_total",
			"Bytes claimed by kind (served, storage_read) and result (accepted, rejected)."), []string{"kind", "result"}),
		dnsCheck: prometheus.NewCounterVec(opts("dns_checks_total",
			"DNS cross-checks of batches by result (ok, rejected, deferred, skipped, unconfigured)."), []string{"result"}),
		probes: prometheus.NewCounterVec(opts("probes_total",
			"Sampling probes of edges by result (ok, wrong_content, error)."), []string{"result"}),
		backing: prometheus.NewCounterVec(opts("upstream_checks_total",
			"Upstream-read checks of an edge's records per (epoch, publisher, root) at settlement, by result (backed, deferred, paid_late, refused, skipped_unstriped, skipped_no_claims)."),
			[]string{"result"}),
		settled: prometheus.NewCounter(opts("settled_epochs_total", "Epochs settled.")),
		paid:    prometheus.NewCounter(opts("paid_total", "Tokens credited to operators by settlement.")),
		requests: prometheus.NewCounterVec(opts("requests_total",
			"HTTP requests by route and status code."), []string{"route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.claims, m.bytes, m.dnsCheck, m.probes, m.backing, m.settled, m.paid, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
