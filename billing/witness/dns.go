package witness

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// DNSDirectory reads GET {router}/api/v1/edges: the edges the DNS router
// knows, with the epoch byte counters of their signed heartbeats, the
// bytes of the router's probes of them and the demand its answers sent
// them (billing's EdgeDirectory).
type DNSDirectory struct {
	base   string
	client *http.Client
}

// maxEdgesBody bounds the router's answer: 10,000 edges of 16 epochs.
const maxEdgesBody = 256 << 20

// NewDNSDirectory returns a directory of the router at base. A nil client
// is one with a 10 s timeout.
func NewDNSDirectory(base string, client *http.Client) *DNSDirectory {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &DNSDirectory{base: strings.TrimRight(base, "/"), client: client}
}

// Edges returns the router's edges.
func (d *DNSDirectory) Edges(ctx context.Context) ([]dnsrouteapi.EdgeInfo, error) {
	var edges []dnsrouteapi.EdgeInfo
	if err := httpkit.GetJSON(ctx, d.client, d.base+"/api/v1/edges", maxEdgesBody, &edges); err != nil {
		return nil, fmt.Errorf("billing: dns edges: %w", err)
	}
	return edges, nil
}
