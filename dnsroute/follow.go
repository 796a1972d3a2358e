package dnsroute

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/namestream"
	"github.com/topcdn/topcdn/originapi"
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
	f, err := namestream.New(namestream.Config{
		Pool:      r.origins,
		OriginIDs: r.originIDs,
		// A long-poll outlives cfg.Client's timeout; the follower bounds
		// each poll itself.
		Client:  &http.Client{Transport: r.cfg.Client.Transport},
		Logger:  r.log.Named("names"),
		Metrics: r.streamMetrics,
	})
	if err != nil {
		r.log.Error("cannot follow the origins' name changes", zap.Error(err))
		return
	}
	r.follower.Store(f)
	f.Run(ctx, r.applyChange)
}

// streamUp reports whether the router follows the stream now.
func (r *Router) streamUp() bool {
	f := r.follower.Load()
	return f != nil && f.Healthy()
}

// originIDs returns the origins' peer IDs, which sign the stream's pages:
// Config.OriginID and OriginIDs, or asked from the origins' /healthz, again
// every originapi.OriginIDsTTL.
func (r *Router) originIDs(ctx context.Context) ([]peer.ID, error) {
	if pinned := slices.DeleteFunc(append([]peer.ID{r.cfg.OriginID}, r.cfg.OriginIDs...), func(id peer.ID) bool { return id == "" }); len(pinned) > 0 {
		return pinned, nil
	}
	r.mu.Lock()
	ids, at := r.learntOriginIDs, r.learntOriginIDsAt
	r.mu.Unlock()
	if len(ids) > 0 && time.Since(at) < originapi.OriginIDsTTL {
		return ids, nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.NamesInterval, 2*time.Second))
	defer cancel()
	fresh, err := originapi.FetchOriginIDs(ctx, r.origins, r.cfg.Client)
	switch {
	case err != nil && len(ids) > 0:
		return ids, nil // asked again after a while: the set seldom changes
	case err != nil:
		return nil, fmt.Errorf("learn the origins' peer IDs: %w", err)
	}
	r.mu.Lock()
	r.learntOriginIDs, r.learntOriginIDsAt = fresh, time.Now()
	r.mu.Unlock()
	return fresh, nil
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
