package origin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/prom"
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
	nameChanges   *prometheus.CounterVec
	nameWaiters   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests:      prom.CounterVec("origin", "api_requests_total", "API requests by route and status code.", "route", "code"),
		duration:      prom.HistogramVec("origin", "api_request_duration_seconds", "API request latency by route.", prometheus.ExponentialBuckets(0.0005, 4, 10), "route"),
		uploads:       prom.CounterVec("origin", "uploads_total", "CAR uploads by result (ok, rejected, error) and, for the others than ok, reason (unauthorized, forbidden, payment_required, conflict, over_quota, too_large, bad_request, incomplete_dag, too_many_links, dag_too_deep, dag_too_large, busy, canceled, ...).", "result", "reason"),
		uploadBlocks:  prom.Counter("origin", "upload_blocks_total", "Blocks received in accepted CAR uploads."),
		uploadBytes:   prom.Counter("origin", "upload_bytes_total", "Block bytes received in accepted CAR uploads."),
		newBlocks:     prom.Counter("origin", "stored_blocks_total", "Blocks newly written to the block store."),
		records:       prom.CounterVec("origin", "ipns_records_total", "IPNS records received, by result (accepted, unchanged, rejected).", "result"),
		corruptBlocks: prom.Counter("origin", "corrupt_blocks_total", "Blocks read from disk that did not match their CID."),
		nameChanges:   prom.CounterVec("origin", "name_changes_total", "Changes appended to the name-change stream, by kind (record, purge).", "kind"),
		nameWaiters:   prom.Gauge("origin", "name_waiters", "Requests on the name-change stream in progress, most of them long-polls waiting for a change."),
	}
	if err := prom.Register(reg, m.requests, m.duration, m.uploads, m.uploadBlocks, m.uploadBytes, m.newBlocks, m.records, m.corruptBlocks,
		m.nameChanges, m.nameWaiters); err != nil {
		return nil, err
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
