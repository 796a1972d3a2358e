package origin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// metrics are the origin's own Prometheus metrics; boxo's gateway adds its
// ipfs_http_* metrics to the same registry.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	uploads       *prometheus.CounterVec
	uploadBlocks  prometheus.Counter
	uploadBytes   prometheus.Counter
	newBlocks     prometheus.Counter
	records       *prometheus.CounterVec
	corruptBlocks prometheus.Counter
	stripedReads  *prometheus.CounterVec
	stripedRoots  prometheus.Counter
	flags         *prometheus.CounterVec
	audits        *prometheus.CounterVec
	repairs       *prometheus.CounterVec
	orphans       prometheus.Counter
	atRisk        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "api_requests_total",
			Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "api_request_duration_seconds",
			Help:    "API request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "uploads_total",
			Help: "CAR uploads by result (ok, rejected, error) and, for the others than ok, reason (unauthorized, forbidden, payment_required, conflict, over_quota, too_large, bad_request, incomplete_dag, busy, canceled, ...).",
		}, []string{"result", "reason"}),
		uploadBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "upload_blocks_total",
			Help: "Blocks received in accepted CAR uploads.",
		}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "upload_bytes_total",
			Help: "Block bytes received in accepted CAR uploads.",
		}),
		newBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "stored_blocks_total",
			Help: "Blocks newly written to the block store.",
		}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "ipns_records_total",
			Help: "IPNS records received, by result (accepted, unchanged, rejected).",
		}, []string{"result"}),
		corruptBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "topcdn", Subsystem: "origin", Name: "corrupt_blocks_total",
			Help: "Blocks read from disk that did not match their CID.",
		}),
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
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.uploads, m.uploadBlocks,
		m.uploadBytes, m.newBlocks, m.records, m.corruptBlocks, m.stripedReads, m.stripedRoots,
		m.flags, m.audits, m.repairs, m.orphans, m.atRisk} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// countUpload counts one upload request by its outcome.
func (m *metrics) countUpload(res *originapi.UploadResult, err error) {
	switch {
	case err == nil:
		m.uploads.WithLabelValues("ok", "").Inc()
		m.uploadBlocks.Add(float64(res.Blocks))
		m.uploadBytes.Add(float64(res.Bytes))
		m.newBlocks.Add(float64(res.NewBlocks))
	case httpkit.StatusOf(err) < 500:
		m.uploads.WithLabelValues("rejected", reasonOf(err)).Inc()
	default:
		m.uploads.WithLabelValues("error", reasonOf(err)).Inc()
	}
}
