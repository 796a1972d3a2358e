package origin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// metrics are the origin's own Prometheus metrics; its storage side
// (durability) and boxo's gateway add theirs to the same registry.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	uploads       *prometheus.CounterVec
	uploadBlocks  prometheus.Counter
	uploadBytes   prometheus.Counter
	newBlocks     prometheus.Counter
	records       *prometheus.CounterVec
	corruptBlocks prometheus.Counter
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
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.uploads, m.uploadBlocks,
		m.uploadBytes, m.newBlocks, m.records, m.corruptBlocks} {
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
