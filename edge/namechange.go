package edge

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/topcdn/topcdn/namestream"
	"go.uber.org/zap"
)

// FollowNames follows the origin's stream of name changes until ctx ends,
// applying each verified change to the edge's name and response caches at
// once (applyChange): a publish or a purge reaches the edge within a round
// trip instead of a TTL. While the stream is down, names expire by their
// TTL as they would without it. The stream's cursor is kept in the
// edge's State, so an edge built on the same State (a Caddy reload)
// resumes where this one stopped. It returns ctx's error.
func (e *Edge) FollowNames(ctx context.Context) error {
	// A long-poll outlives the client's one-minute timeout; each poll is
	// bounded by the follower itself.
	client := &http.Client{Transport: e.cfg.HTTPClient.Transport}
	st := e.cfg.State
	f, err := namestream.New(namestream.Config{
		Pool:      e.pool,
		OriginIDs: e.src.originPeerIDs,
		Client:    client,
		Cursor:    &st.cursor,
		Logger:    e.log.Named("names"),
		Metrics:   e.metrics.stream,
		Wait:      e.streamWait,
	})
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	st.follower.Store(f)
	defer st.follower.CompareAndSwap(f, nil)
	return f.Run(ctx, e.applyChange)
}

// NameStream reports whether the edge follows the origin's name changes
// now (a page arrived within the poll's bound), and the ID of the last
// change it applied (false if it has not started).
func (e *Edge) NameStream() (up bool, cursor int64, started bool) {
	if f := e.cfg.State.follower.Load(); f != nil {
		up = f.Healthy()
	}
	cursor, started = e.cfg.State.cursor.ID()
	return up, cursor, started
}

// applyChange applies one verified change of the origin's stream.
func (e *Edge) applyChange(ctx context.Context, c namestream.Change) {
	switch c.Kind {
	case namestream.Record:
		e.applyRecord(ctx, c)
	case namestream.Purge:
		e.applyPurge(c)
	case namestream.Reset:
		// Changes were missed: no cached name can be trusted to be the
		// latest. Answers of immutable content stay.
		e.cfg.State.gens.bumpAll()
		e.names.cache.Purge()
		e.sitesMu.Lock()
		clear(e.sites)
		e.sitesMu.Unlock()
		e.metrics.changes.WithLabelValues(c.Kind, "applied").Inc()
	}
}

// siteKeys returns the site keys a change of name (IPNS name k) reaches:
// NAME.DOMAIN, k itself, and the static DNSLink hosts pointing at k.
func (e *Edge) siteKeys(name string, k ipns.Name) []string {
	keys := []string{name + "." + e.cfg.Domain, k.String()}
	return append(keys, e.byIPNS[k.String()]...)
}

// applyRecord makes a pushed record the name's answer, unless the edge
// holds a newer one: it keeps the record (as if fetched), makes the
// name's cached answers stale, and resolves the name to the new value at
// once, so the next request needs no round trip to the origin.
func (e *Edge) applyRecord(ctx context.Context, c namestream.Change) {
	key := string(c.IPNS.RoutingKey())
	kept, ok := e.records.kept.Get(key)
	if !ok && e.records.disk != nil {
		kept, ok = e.records.disk.Kept("ipns " + key)
	}
	if ok && validRecord(kept, c.IPNS) == nil {
		if bytes.Equal(kept, c.Record) {
			e.metrics.changes.WithLabelValues(c.Kind, "same").Inc()
			return
		}
		if best, err := (ipns.Validator{}).Select(key, [][]byte{kept, c.Record}); err != nil || best != 1 {
			e.log.Warn("pushed IPNS record is older than one already seen; ignored",
				zap.String("name", c.Name), zap.Uint64("seq", c.Seq))
			e.metrics.changes.WithLabelValues(c.Kind, "stale").Inc()
			return
		}
	}
	e.records.keep(key, c.Record)
	host := c.Name + "." + e.cfg.Domain
	ttl := c.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	link := dnsLink{value: "dnslink=/ipns/" + c.IPNS.String(), ttl: ttl}
	e.src.links.Add(host, link)
	e.src.keep("dnslink "+host, []byte(link.value+"\n"+strconv.FormatInt(int64(ttl/time.Second), 10)))

	sites := e.siteKeys(c.Name, c.IPNS)
	gen := e.cfg.State.gens.bump(sites...)
	if value, err := path.NewPath(c.Value); err == nil && c.Root.Defined() {
		// Resolutions set at gen are current; those made before it are
		// not, nor are the responses made from them.
		hop := path.FromCid(c.IPNS.Cid()) // /ipns/k51… as the DNSLink names it
		e.names.set(host, value, hop, ttl, gen)
		e.names.set(c.IPNS.String(), value, nil, ttl, gen)
		for _, h := range e.byIPNS[c.IPNS.String()] {
			e.names.set(h, value, hop, ttl, gen)
		}
	} else {
		for _, s := range sites {
			e.names.drop(s)
		}
	}
	e.sitesMu.Lock()
	e.sites[host] = siteState{exists: true, at: time.Now()} // a new site stops being "not published" at once
	e.sitesMu.Unlock()
	e.metrics.changes.WithLabelValues(c.Kind, "applied").Inc()
	e.log.Info("name moved", zap.String("name", c.Name), zap.Uint64("seq", c.Seq), zap.String("value", c.Value))
	if c.Root.Defined() && !e.noWarm {
		// Warm the new root's manifest, so the first request reads from
		// the storage peers at once.
		go e.src.loadRoot(context.WithoutCancel(ctx), c.Root)
	}
}

// applyPurge drops a name's cached answers: all of them (and its
// resolutions, so the next request asks the origin), or those of the
// purge's paths.
func (e *Edge) applyPurge(c namestream.Change) {
	sites := e.siteKeys(c.Name, c.IPNS)
	for _, s := range sites {
		e.names.drop(s)
	}
	n := 0
	if len(c.Purge.Paths) == 0 {
		e.cfg.State.gens.bump(sites...)
	} else {
		n = e.resp.purge(sites, c.Purge.Paths)
	}
	e.metrics.changes.WithLabelValues(c.Kind, "applied").Inc()
	e.log.Info("name purged", zap.String("name", c.Name), zap.Strings("paths", c.Purge.Paths), zap.Int("responses", n))
}
