package witness

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/httpkit"
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

// NewDNSDirectory returns a directory of the router at base. A nil client
// is one with a 10 s timeout.
func NewDNSDirectory(base string, client *http.Client) *DNSDirectory {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &DNSDirectory{base: strings.TrimRight(base, "/"), client: client, seen: map[string]*heartbeatTrack{}}
}

// Edges returns the router's edges, with what the directory tracked of
// their heartbeats (billing's EdgeDirectory).
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
