package witness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dag"
)

// HTTPProber fetches GET {edge}/ipfs/{cid}?format=raw and verifies the
// block against its CID.
type HTTPProber struct {
	// Client makes the requests. Default: a client with a 30 s timeout.
	Client *http.Client
}

// Probe fetches c from the edge at edgeURL: a *billingapi.RejectError
// with ReasonWrongContent if the bytes do not match c, another error if it
// could not tell (billing's Prober).
func (p HTTPProber) Probe(ctx context.Context, edgeURL, c string) (int64, error) {
	id, err := cid.Decode(c)
	if err != nil {
		return 0, fmt.Errorf("billing: probe %s: %w", c, err)
	}
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(edgeURL, "/")+"/ipfs/"+c+"?format=raw", nil)
	if err != nil {
		return 0, fmt.Errorf("billing: probe %s: %w", c, err)
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("billing: probe %s at %s: %w", c, edgeURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dag.MaxBlockSize+1))
	if err != nil {
		return int64(len(data)), fmt.Errorf("billing: probe %s at %s: %w", c, edgeURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("billing: probe %s at %s: HTTP %d", c, edgeURL, resp.StatusCode)
	}
	if err := dag.Verify(id, data); err != nil {
		return int64(len(data)), &billingapi.RejectError{Reason: billingapi.ReasonWrongContent, Err: fmt.Errorf("edge %s served %d bytes for %s that do not match it: %v", edgeURL, len(data), c, err)}
	}
	return int64(len(data)), nil
}
