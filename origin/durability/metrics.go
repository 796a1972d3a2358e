package durability

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/prom"
)

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
	repairSkips  *prometheus.CounterVec
	// Coordination across origins (lease.go).
	leaseHeld      *prometheus.GaugeVec
	leaseTakeovers *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		stripedReads: prom.CounterVec("origin", "striped_reads_total", "Blocks read from storage peers, by result (ok, error).", "result"),
		stripedRoots: prom.Counter("origin", "striped_roots_total", "Published roots moved to storage peers."),
		flags:        prom.CounterVec("origin", "peer_flags_total", "Storage peers caught misbehaving, by reason and by who caught them (read, audit).", "reason", "source"),
		audits:       prom.CounterVec("origin", "audits_total", "Audits of storage peers, by result (ok, failed, unreachable, refused: no proof from a peer whose heartbeats say it is up).", "result"),
		repairs:      prom.CounterVec("origin", "repaired_shards_total", "Shards rebuilt and placed on new peers, by result (ok, error).", "result"),
		orphans:      prom.Counter("origin", "orphan_shards_deleted_total", "Shards deleted from storage peers because no segment placed them there (left by failed jobs)."),
		atRisk:       prom.Gauge("origin", "segments_at_risk", "Segments with fewer healthy shards than the repair threshold, at the last scan."),
		repairSkips:  prom.CounterVec("origin", "repairs_skipped_total", "Repairs of segments at risk not attempted, by reason (backoff: failed before and not due yet; not_enough_shards: fewer than k healthy shards, nothing read).", "reason"),
		leaseHeld:    prom.GaugeVec("origin", "lease_held", "1 while this origin holds the lease of a background job (audit, repair, sweep), else 0.", "name"),
		leaseTakeovers: prom.CounterVec("origin", "lease_takeovers_total",
			"Leases of background jobs this origin took over from another whose lease lapsed unreleased (it stopped, or lost the database).", "name"),
	}
	if err := prom.Register(reg, m.stripedReads, m.stripedRoots, m.flags, m.audits, m.repairs, m.orphans, m.atRisk, m.repairSkips,
		m.leaseHeld, m.leaseTakeovers); err != nil {
		return nil, err
	}
	return m, nil
}
