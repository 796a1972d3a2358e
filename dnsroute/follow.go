package dnsroute

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/namestream"
	"go.uber.org/zap"
)

// namesResync is how often the router reads the origin's whole list of
// names while it follows the stream of changes: the stream carries every
// change, the list is the check that nothing was missed. While the stream
// is down the list is read every NamesInterval, as before.
const namesResync = time.Minute

// followNames follows the origin's stream of name changes until ctx
// ends: a new or moved name answers within a round trip of its publish,
// not a poll interval.
func (r *Router) followNames(ctx context.Context) {
	f := namestream.New(namestream.Config{
		Origin:   r.cfg.Origin,
		OriginID: r.originID,
		// A long-poll outlives cfg.Client's timeout; the follower bounds
		// each poll itself.
		Client:  &http.Client{Transport: r.cfg.Client.Transport},
		Logger:  r.log.Named("names"),
		Metrics: r.streamMetrics,
	})
	r.follower.Store(f)
	f.Run(ctx, r.applyChange)
}

// streamUp reports whether the router follows the stream now.
func (r *Router) streamUp() bool {
	f := r.follower.Load()
	return f != nil && f.Healthy()
}

// originID returns the origin's peer ID, which signs the stream's pages:
// Config.OriginID, or asked from the origin's /healthz once.
func (r *Router) originID(ctx context.Context) (peer.ID, error) {
	if r.cfg.OriginID != "" {
		return r.cfg.OriginID, nil
	}
	r.mu.Lock()
	id := r.learntOriginID
	r.mu.Unlock()
	if id != "" {
		return id, nil
	}
	var h struct {
		PeerID string `json:"peer_id"`
	}
	if err := r.getJSON(ctx, r.cfg.Origin+"/healthz", &h); err != nil {
		return "", fmt.Errorf("learn the origin's peer ID: %w", err)
	}
	id, err := peer.Decode(h.PeerID)
	if err != nil {
		return "", fmt.Errorf("origin peer ID %q: %w", h.PeerID, err)
	}
	r.mu.Lock()
	r.learntOriginID = id
	r.mu.Unlock()
	return id, nil
}

// applyChange applies a verified name change: a record moves (or adds)
// the name in the next snapshot. Purges concern edges' caches only.
func (r *Router) applyChange(_ context.Context, c namestream.Change) {
	if c.Kind != namestream.Record {
		return
	}
	e := nameEntry{ipns: c.IPNS.String(), publisher: c.IPNS.Peer()}
	if c.Root.Defined() {
		e.cid = c.Root.String()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.names[c.Name]; ok && old.ipns == e.ipns && old.cid == e.cid {
		return
	}
	names := maps.Clone(r.names)
	if names == nil {
		names = map[string]nameEntry{}
	}
	names[c.Name] = e
	r.names = names
	r.roots = probeRoots(names)
	r.serial = max(uint32(r.cfg.now().Unix()), r.serial+1)
	r.rebuildLocked()
	r.log.Info("name changed", zap.String("name", c.Name), zap.String("root", e.cid), zap.Int64("change", c.ID))
}
