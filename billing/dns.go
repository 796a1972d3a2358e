package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/dag"
	"go.uber.org/zap"
)

// EdgeInfo is what the DNS router says of an edge (GET /api/v1/edges).
type EdgeInfo struct {
	// Peer is the edge's peer ID.
	Peer string `json:"peer"`
	// URL is the edge's base URL, if the router knows it.
	URL string `json:"url,omitempty"`
	// Addr is the edge's address, if the router knows it.
	Addr string `json:"addr,omitempty"`
	// Healthy is true while the edge's heartbeats arrive.
	Healthy bool `json:"healthy"`
	// Load is the edge's reported load.
	Load float64 `json:"load"`
	// Answers counts the DNS answers that handed the edge out.
	Answers int64 `json:"answers"`
}

// EdgeDirectory lists the edges the DNS router knows.
type EdgeDirectory interface {
	Edges(ctx context.Context) ([]EdgeInfo, error)
}

// DNSDirectory reads GET {router}/api/v1/edges.
type DNSDirectory struct {
	base   string
	client *http.Client
}

// NewDNSDirectory returns an EdgeDirectory over the router at base.
func NewDNSDirectory(base string, client *http.Client) *DNSDirectory {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &DNSDirectory{base: strings.TrimRight(base, "/"), client: client}
}

// Edges implements EdgeDirectory.
func (d *DNSDirectory) Edges(ctx context.Context) ([]EdgeInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/api/v1/edges", nil)
	if err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("billing: dns edges: HTTP %d", resp.StatusCode)
	}
	var edges []EdgeInfo
	if err := json.Unmarshal(body, &edges); err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	return edges, nil
}

// dnsEdges returns the router's edges by peer ID, cached for 5 s, or nil
// and false when no router is configured or it cannot be reached.
func (l *Ledger) dnsEdges(ctx context.Context) (map[string]EdgeInfo, bool) {
	if l.opts.DNS == nil {
		return nil, false
	}
	l.dnsMu.Lock()
	defer l.dnsMu.Unlock()
	if l.dnsCache != nil && l.opts.now().Sub(l.dnsAt) < 5*time.Second {
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

// checkDNS judges an edge's claimed total against the router's view: an
// edge the router never handed out (unlisted, or zero answers) may claim
// at most DNSFreeBytes per batch. Honest edges in a small devnet are
// handed out or serve little; a router that cannot be reached skips the
// check rather than fail honest edges.
func (l *Ledger) checkDNS(ctx context.Context, edge string, total int64) error {
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
		return reject(ReasonDNSImplausible, "edge claims %d bytes but the DNS router never handed it out (listed %v, answers %d); at most %d bytes accepted",
			total, listed, e.Answers, l.opts.DNSFreeBytes)
	}
	l.metrics.dnsCheck.WithLabelValues("ok").Inc()
	return nil
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
		return reject(ReasonWrongContent, "edge %s served %d bytes for %s that do not match it: %v", edgeURL, len(data), c, err)
	}
	return nil
}

var (
	_ EdgeDirectory = (*DNSDirectory)(nil)
	_ Prober        = HTTPProber{}
)
