package durability

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Keeper's Prometheus metrics. They keep the origin's
// names (topcdn_origin_*): the storage side is part of the origin.
type metrics struct {
	stripedReads *prometheus.CounterVec
	stripedRoots prometheus.Counter
	flags        *prometheus.CounterVec
	audits       *prometheus.CounterVec
	repairs      *prometheus.CounterVec
	orphans      prometheus.Counter
	atRisk       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		stripedReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "striped_reads_total",
			Help: "Blocks read from storage peers, by result (ok, error).",
		}, []string{"result"}),
		stripedRoots: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "striped_roots_total",
			Help: "Published roots moved to storage peers.",
		}),
		flags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "peer_flags_total",
			Help: "Storage peers caught misbehaving, by reason and by who caught them (read, audit).",
		}, []string{"reason", "source"}),
		audits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "audits_total",
			Help: "Audits of storage peers, by result (ok, failed, unreachable, refused: no proof from a peer whose heartbeats say it is up).",
		}, []string{"result"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "repaired_shards_total",
			Help: "Shards rebuilt and placed on new peers, by result (ok, error).",
		}, []string{"result"}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "orphan_shards_deleted_total",
			Help: "Shards deleted from storage peers because no segment placed them there (left by failed jobs).",
		}),
		atRisk: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "segments_at_risk",
			Help: "Segments with fewer healthy shards than the repair threshold, at the last scan.",
		}),
	}
	for _, c := range []prometheus.Collector{m.stripedReads, m.stripedRoots, m.flags, m.audits, m.repairs,
		m.orphans, m.atRisk} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
