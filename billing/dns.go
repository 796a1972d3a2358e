package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// EdgeInfo is what the DNS router says of an edge (GET /api/v1/edges),
// with what DNSDirectory tracks of it across polls.
type EdgeInfo struct {
	dnsrouteapi.EdgeInfo

	// MaxBytes is the highest Bytes ever seen for the edge, across polls
	// and restarts of the edge (its counter starts again at 0); ByteRate
	// is the highest rate (bytes/s) seen between two of its heartbeats.
	// DNSDirectory fills them in; a directory that leaves them zero gets
	// Bytes as the high-water mark and no rate.
	MaxBytes uint64  `json:"-"`
	ByteRate float64 `json:"-"`
	// Restarted is the time of the last heartbeat DNSDirectory saw with a
	// lower counter than the one before it: the edge restarted then.
	Restarted time.Time `json:"-"`
}

// EdgeDirectory lists the edges the DNS router knows.
type EdgeDirectory interface {
	Edges(ctx context.Context) ([]EdgeInfo, error)
}

// DNSDirectory reads GET {router}/api/v1/edges. It remembers, per edge,
// the highest byte counter its heartbeats ever reported and the highest
// rate at which that counter grew, for the heartbeat check.
type DNSDirectory struct {
	base   string
	client *http.Client

	mu   sync.Mutex
	seen map[string]*heartbeatTrack
}

// heartbeatTrack is what a DNSDirectory remembers of an edge's counters.
type heartbeatTrack struct {
	max  uint64    // highest Bytes ever seen; never lowered
	last uint64    // Bytes at the last heartbeat seen
	at   time.Time // that heartbeat's time (the router's clock)
	rate float64   // highest Δbytes/Δt seen between heartbeats, bytes/s
	// restarted is the time of the last heartbeat with a lower counter.
	restarted time.Time
}

// observe folds e's heartbeat into t.
func (t *heartbeatTrack) observe(e EdgeInfo) {
	t.max = max(t.max, e.Bytes)
	if !e.LastHeartbeat.After(t.at) {
		return // the same heartbeat again, or an older one
	}
	if !t.at.IsZero() && e.Bytes > t.last {
		t.rate = max(t.rate, float64(e.Bytes-t.last)/e.LastHeartbeat.Sub(t.at).Seconds())
	}
	// A lower counter is a restarted edge: the next growth is measured
	// from it, and max keeps what the earlier process served.
	if !t.at.IsZero() && e.Bytes < t.last {
		t.restarted = e.LastHeartbeat
	}
	t.last, t.at = e.Bytes, e.LastHeartbeat
}

// NewDNSDirectory returns an EdgeDirectory over the router at base.
func NewDNSDirectory(base string, client *http.Client) *DNSDirectory {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &DNSDirectory{base: strings.TrimRight(base, "/"), client: client, seen: map[string]*heartbeatTrack{}}
}

// Edges implements EdgeDirectory.
func (d *DNSDirectory) Edges(ctx context.Context) ([]EdgeInfo, error) {
	var edges []EdgeInfo
	if err := httpkit.GetJSON(ctx, d.client, d.base+"/api/v1/edges", 16<<20, &edges); err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]*heartbeatTrack{}
	}
	for i := range edges {
		e := &edges[i]
		if e.LastHeartbeat.IsZero() {
			continue // a router that does not report heartbeats
		}
		t := d.seen[e.Peer]
		if t == nil {
			t = &heartbeatTrack{}
			d.seen[e.Peer] = t
		}
		t.observe(*e)
		e.MaxBytes, e.ByteRate, e.Restarted = t.max, t.rate, t.restarted
	}
	return edges, nil
}

// dnsEdges returns the router's edges by peer ID, cached for 5 s, or nil
// and false when no router is configured or it cannot be reached.
func (l *Ledger) dnsEdges(ctx context.Context) (map[string]EdgeInfo, bool) {
	return l.dnsEdgesWithin(ctx, 5*time.Second)
}

// dnsEdgesWithin is dnsEdges with a cache no older than maxAge (0: ask
// the router).
func (l *Ledger) dnsEdgesWithin(ctx context.Context, maxAge time.Duration) (map[string]EdgeInfo, bool) {
	if l.opts.DNS == nil {
		return nil, false
	}
	l.dnsMu.Lock()
	defer l.dnsMu.Unlock()
	if l.dnsCache != nil && l.opts.now().Sub(l.dnsAt) < maxAge {
		return l.dnsCache, true
	}
	list, err := l.opts.DNS.Edges(ctx)
	if err != nil {
		l.log.Warn("DNS router unreachable: cross-check skipped", zap.Error(err))
		return nil, false
	}
	m := make(map[string]EdgeInfo, len(list))
	for _, e := range list {
		m[e.Peer] = e
	}
	l.dnsCache, l.dnsAt = m, l.opts.now()
	return m, true
}

// checkDNS judges a batch's claimed total against the router's view:
//
//   - an edge the router never handed out (unlisted, or zero answers) may
//     claim at most DNSFreeBytes per batch;
//   - a listed edge whose heartbeats report its byte counter may claim,
//     for the batch's (edge, epoch) with its other parts, at most what
//     checkHeartbeats allows.
//
// Honest edges in a small devnet are handed out or serve little; a router
// that cannot be reached skips the check rather than fail honest edges.
func (l *Ledger) checkDNS(ctx context.Context, edge string, b *billingapi.Batch, digest string) error {
	total := claimed(b.Records)
	edges, ok := l.dnsEdges(ctx)
	switch {
	case l.opts.DNS == nil:
		l.metrics.dnsCheck.WithLabelValues("unconfigured").Inc()
		return nil
	case !ok:
		l.metrics.dnsCheck.WithLabelValues("skipped").Inc()
		return nil
	}
	e, listed := edges[edge]
	if (!listed || e.Answers == 0) && total > l.opts.DNSFreeBytes {
		l.metrics.dnsCheck.WithLabelValues("rejected").Inc()
		return reject(billingapi.ReasonDNSImplausible, "edge claims %d bytes but the DNS router never handed it out (listed %v, answers %d); at most %d bytes accepted",
			total, listed, e.Answers, l.opts.DNSFreeBytes)
	}
	if listed {
		switch err := l.checkHeartbeats(ctx, edge, b, digest, total, e); {
		case reasonOf(err) != "":
			l.metrics.dnsCheck.WithLabelValues("rejected").Inc()
			return err
		case errors.Is(err, errHeartbeatBehind):
			l.metrics.dnsCheck.WithLabelValues("deferred").Inc()
			return err
		case err != nil:
			return err
		}
	}
	l.metrics.dnsCheck.WithLabelValues("ok").Inc()
	return nil
}

// HeartbeatSlackBytes is the fixed part of the heartbeat check's slack.
const HeartbeatSlackBytes = 1 << 20

// defaultHeartbeatInterval is assumed for an edge whose interval the
// router does not give (the edge's own default).
const defaultHeartbeatInterval = 10 * time.Second

// errHeartbeatBehind defers a batch the edge's heartbeats do not cover
// yet: billing answers 503 and the edge sends it again.
var errHeartbeatBehind = fmt.Errorf("%w: the edge's heartbeats are behind its batch", errTransient)

// checkHeartbeats bounds what an edge claims for an epoch by what its
// heartbeats say it sent. Its Reporter runs in the process whose byte
// counter the heartbeats carry, and counts a response before recording
// it, so every batch it sends is at most that counter. The claim (this
// batch plus the accepted bytes of the epoch's other parts) may exceed
// the highest counter ever seen (MaxBytes, kept across restarts) by
//
//	2 × ByteRate × (time since the last heartbeat + one heartbeat interval) + 1 MiB
//
// for what the edge served since its last heartbeat. Above that, the
// batch is refused as implausible_vs_heartbeats only when the last
// heartbeat came at least skew (5 s) after billing first received this
// batch, and the edge did not restart from restartMargin before that:
// that counter then includes every response of it (the process that
// sent the batch signed it before). Otherwise the batch is deferred (the
// heartbeats may not show a burst yet; the edge resends); a batch whose
// process restarted around it stays deferred, never paid nor refused.
//
// The check is skipped when the router gives no heartbeat time (an older
// router) or the edge never reported a byte (an older edge, or one that
// had served nothing at its last heartbeat).
func (l *Ledger) checkHeartbeats(ctx context.Context, edge string, b *billingapi.Batch, digest string, total int64, e EdgeInfo) error {
	if e.LastHeartbeat.IsZero() || max(e.MaxBytes, e.Bytes) == 0 {
		return nil
	}
	earlier, err := l.epochBytes(ctx, edge, b.Epoch)
	if err != nil {
		return err
	}
	sum := addBytes(total, earlier)
	what, ok := l.heartbeatBound(e, b.Epoch, sum, total, earlier)
	if ok {
		l.forgetSeen(digest)
		return nil
	}
	first := l.firstSeen(digest)
	covered := func(e EdgeInfo) bool {
		return !e.LastHeartbeat.Before(first.Add(skew)) && e.Restarted.Before(first.Add(-restartMargin))
	}
	if !covered(e) {
		// Perhaps a newer heartbeat than the cached one covers it.
		if edges, found := l.dnsEdgesWithin(ctx, 0); found {
			if fresh, listed := edges[edge]; listed && !fresh.LastHeartbeat.IsZero() {
				e = fresh
				if what, ok = l.heartbeatBound(e, b.Epoch, sum, total, earlier); ok {
					l.forgetSeen(digest)
					return nil
				}
			}
		}
	}
	if !covered(e) {
		why := "after the last heartbeat (" + e.LastHeartbeat.UTC().Format(time.RFC3339) + ")"
		if !e.Restarted.Before(first.Add(-restartMargin)) {
			why = "around a restart of the edge (" + e.Restarted.UTC().Format(time.RFC3339) + "): its heartbeats may not count it"
		}
		return fmt.Errorf("billing: %w: %s; billing first received this batch at %s, %s: send it again",
			errHeartbeatBehind, what, first.UTC().Format(time.RFC3339), why)
	}
	l.forgetSeen(digest)
	return reject(billingapi.ReasonImplausibleHeartbeats, "%s", what)
}

// heartbeatBound reports whether sum bytes claimed for epoch are within
// what e's heartbeats allow, and if not, why.
func (l *Ledger) heartbeatBound(e EdgeInfo, epoch, sum, total, earlier int64) (string, bool) {
	high := max(e.MaxBytes, e.Bytes)
	interval := time.Duration(e.IntervalMS) * time.Millisecond
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	age := max(l.opts.now().Sub(e.LastHeartbeat), 0)
	slack := 2*e.ByteRate*(age+interval).Seconds() + HeartbeatSlackBytes
	bound := float64(high) + slack
	if float64(sum) <= bound {
		return "", true
	}
	return fmt.Sprintf("edge claims %d bytes for epoch %d (this batch %d, its other parts %d) but its heartbeats report at most %d bytes sent; "+
		"with %.0f bytes of slack (rate %.0f B/s, last heartbeat %s ago, interval %s) at most %.0f bytes are plausible",
		sum, epoch, total, earlier, high, slack, e.ByteRate, age.Round(time.Millisecond), interval, bound), false
}

// restartMargin: a batch first received less than this after the edge
// restarted may come from the process before (a Reporter posts for up to
// 30 s, and flushes for 10 s at shutdown), which the heartbeats after the
// restart do not count.
const restartMargin = time.Minute

// maxDeferred bounds how many deferred batches billing remembers.
const maxDeferred = 10000

// firstSeen returns when billing first received the batch with digest
// while deferring it (now, the first time).
func (l *Ledger) firstSeen(digest string) time.Time {
	now := l.opts.now()
	l.dnsMu.Lock()
	defer l.dnsMu.Unlock()
	if t, ok := l.deferred[digest]; ok {
		return t
	}
	if l.deferred == nil || len(l.deferred) >= maxDeferred {
		// Forgetting only defers a batch longer.
		l.deferred = map[string]time.Time{}
	}
	l.deferred[digest] = now
	return now
}

// forgetSeen drops a batch judged.
func (l *Ledger) forgetSeen(digest string) {
	l.dnsMu.Lock()
	delete(l.deferred, digest)
	l.dnsMu.Unlock()
}

// epochBytes returns the accepted bytes of the parts of (edge, epoch)
// stored so far.
func (l *Ledger) epochBytes(ctx context.Context, edge string, epoch int64) (int64, error) {
	var parts int64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM batches WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&parts); err != nil {
		return 0, fmt.Errorf("billing: %w: epoch bytes: %w", errTransient, err)
	}
	if parts == 0 {
		return 0, nil
	}
	var n sql.NullInt64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT CAST(sum(bytes) AS BIGINT) FROM records WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&n); err != nil {
		return 0, fmt.Errorf("billing: %w: epoch bytes: %w", errTransient, err)
	}
	return n.Int64, nil
}

// Prober fetches an object from an edge and checks its bytes. It returns
// a *RejectError with ReasonWrongContent when the edge served bytes that
// do not match the CID, and another error when it could not tell.
type Prober interface {
	Probe(ctx context.Context, edgeURL, c string) error
}

// HTTPProber fetches GET {edge}/ipfs/{cid}?format=raw and verifies the
// block against its CID.
type HTTPProber struct {
	// Client makes the requests. Default: a client with a 30 s timeout.
	Client *http.Client
}

// Probe implements Prober.
func (p HTTPProber) Probe(ctx context.Context, edgeURL, c string) error {
	id, err := cid.Decode(c)
	if err != nil {
		return fmt.Errorf("billing: probe %s: %w", c, err)
	}
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(edgeURL, "/")+"/ipfs/"+c+"?format=raw", nil)
	if err != nil {
		return fmt.Errorf("billing: probe %s: %w", c, err)
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("billing: probe %s at %s: %w", c, edgeURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dag.MaxBlockSize+1))
	if err != nil {
		return fmt.Errorf("billing: probe %s at %s: %w", c, edgeURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("billing: probe %s at %s: HTTP %d", c, edgeURL, resp.StatusCode)
	}
	if err := dag.Verify(id, data); err != nil {
		return reject(billingapi.ReasonWrongContent, "edge %s served %d bytes for %s that do not match it: %v", edgeURL, len(data), c, err)
	}
	return nil
}

var (
	_ EdgeDirectory = (*DNSDirectory)(nil)
	_ Prober        = HTTPProber{}
)
