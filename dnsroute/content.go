package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// rawType is the media type of a raw block (IPFS Trustless Gateway).
const rawType = "application/vnd.ipld.raw"

// errWrongContent marks a content probe that caught an edge answering 200
// with bytes that do not hash to the CID asked for: a lie, not a failure.
var errWrongContent = errors.New("wrong content")

// quarantine is why, and until when, an edge stays out of answers whatever
// its health. Kept by peer ID apart from the edge's record, so that an edge
// forgotten and registered anew, or moved to another URL, stays out.
type quarantine struct {
	until  time.Time
	reason string
	source string // "probe" (the router's content probe) or "billing"
}

// probeRoots returns the distinct root CIDs of names that a content probe
// can check: decodable, and not identity-hashed (an edge can answer those
// from the CID alone).
func probeRoots(names map[string]nameEntry) []cid.Cid {
	var out []cid.Cid
	for _, e := range names {
		c, err := cid.Decode(e.cid)
		if err != nil || c.Prefix().MhType == multihash.IDENTITY {
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	return slices.CompactFunc(out, cid.Cid.Equals)
}

// contentDelay is the time to an edge's next content probe: uniform
// between half and 1.5 times ContentProbeInterval, so that an edge cannot
// tell when the next one comes.
func (r *Router) contentDelay() time.Duration {
	iv := r.cfg.ContentProbeInterval
	return iv/2 + rand.N(iv)
}

// startContentProbeLocked fetches a published root, picked at random,
// through e in the background and records the verdict. It reports whether
// e's health changed at once (nothing published to probe). r.mu must be
// held.
func (r *Router) startContentProbeLocked(ctx context.Context, e *edge, now time.Time) bool {
	if !r.namesOK {
		// Names not read yet: nothing known to check against. A new edge
		// waits (out of answers, like the router is not ready).
		e.nextContent = now.Add(tick)
		return false
	}
	e.nextContent = now.Add(r.contentDelay())
	if len(r.roots) == 0 {
		// Nothing published to check: the health probe alone judges.
		e.contentOK, e.contentErr = true, ""
		return r.updateHealthLocked(e, now)
	}
	root := r.roots[rand.N(len(r.roots))]
	e.contentProbing = true
	url, id := e.hb.URL, e.hb.PeerID
	go func() {
		c := r.probeTarget(ctx, root)
		n, err := r.contentProbe(ctx, url, c)
		r.demand.probed(r.cfg.now(), id.String(), n)
		if ctx.Err() != nil {
			r.mu.Lock()
			e.contentProbing = false
			r.mu.Unlock()
			return // the router is stopping: no verdict
		}
		result := "ok"
		switch {
		case errors.Is(err, errWrongContent):
			result = "lied"
		case err != nil:
			result = "error"
		}
		r.metrics.contentProbes.WithLabelValues(result).Inc()
		r.mu.Lock()
		defer r.mu.Unlock()
		e.contentProbing = false
		now := r.cfg.now()
		if result == "lied" {
			// The edge signed the heartbeat naming this URL: the lie is
			// its own even if it moved or was forgotten since.
			r.quarantineLocked(id, now, quarantine{until: now.Add(r.cfg.Quarantine), source: "probe",
				reason: fmt.Sprintf("served wrong bytes for %s to the router's content probe", c)}, err.Error())
			return
		}
		if r.edges[id] != e || e.hb.URL != url {
			return // forgotten or moved while probing
		}
		if _, held := r.quarantinedLocked(id, now); held {
			return // billing's verdict came in while probing
		}
		e.contentOK, e.contentErr = err == nil, ""
		if err != nil {
			e.contentErr = err.Error()
			// Like a failed health probe: try again (another root) after a
			// heartbeat interval rather than a whole content interval.
			e.nextContent = now.Add(min(e.hb.Interval(), r.cfg.ContentProbeInterval))
		}
		if r.updateHealthLocked(e, now) {
			r.rebuildLocked()
		}
	}()
	return false
}

// maxProbeDepth bounds how many links down from a root probeTarget goes.
const maxProbeDepth = 8

// probeTarget picks the block a content probe asks an edge for: a random
// walk down from root through the origin's Trustless Gateway (each block
// checked against its CID), stopping at each block with probability 1/3,
// at a leaf, or maxProbeDepth links down. So every block of a site may be
// asked for, and an edge that serves roots right and the rest wrong is
// caught too. Where the origin cannot help (down, a codec the router does
// not walk), the walk stops where it is: at worst the root.
func (r *Router) probeTarget(ctx context.Context, root cid.Cid) cid.Cid {
	c := root
	for range maxProbeDepth {
		if rand.N(3) == 0 || c.Type() != cid.DagProtobuf {
			return c
		}
		data, err := r.originBlock(ctx, c)
		if err != nil {
			r.log.Debug("content probe: origin block", zap.Stringer("cid", c), zap.Error(err))
			return c
		}
		nd, err := merkledag.DecodeProtobuf(data)
		if err != nil {
			return c
		}
		var links []cid.Cid
		for _, l := range nd.Links() {
			if l.Cid.Prefix().MhType != multihash.IDENTITY {
				links = append(links, l.Cid)
			}
		}
		if len(links) == 0 {
			return c
		}
		c = links[rand.N(len(links))]
	}
	return c
}

// originBlock fetches block c from the origin's Trustless Gateway and
// checks it.
func (r *Router) originBlock(ctx context.Context, c cid.Cid) ([]byte, error) {
	var data []byte
	err := r.origins.Do(ctx, func(ctx context.Context, base string) error {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.ContentProbeTimeout)
		defer cancel()
		u := base + "/ipfs/" + c.String() + "?format=raw"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", rawType)
		resp, err := r.cfg.Client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("origin: %w", &originapi.StatusError{URL: u, Status: resp.StatusCode})
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, dag.MaxBlockSize+1))
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := dag.Verify(c, data); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	return data, nil
}

// contentProbe fetches GET {baseURL}/ipfs/{c}?format=raw, not following
// redirects, and checks the bytes against c. It returns the body bytes
// read of a 200 (what the edge bills for it). A 200 whose body does not
// hash to c (or is larger than a block may be) is errWrongContent; any
// other failure (transport error, timeout, status other than 200, a body
// cut short) is a plain error.
func (r *Router) contentProbe(ctx context.Context, baseURL string, c cid.Cid) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ContentProbeTimeout)
	defer cancel()
	u := strings.TrimSuffix(baseURL, "/") + "/ipfs/" + c.String() + "?format=raw"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("content probe %s: %w", u, err)
	}
	req.Header.Set("Accept", rawType)
	resp, err := r.probeClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("content probe: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("content probe %s: HTTP %d", u, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, dag.MaxBlockSize+1))
	if err != nil {
		return int64(len(data)), fmt.Errorf("content probe %s: reading the body: %w", u, err)
	}
	if err := dag.Verify(c, data); err != nil {
		return int64(len(data)), fmt.Errorf("content probe %s: %w: %d bytes: %w", u, errWrongContent, len(data), err)
	}
	return int64(len(data)), nil
}

// quarantineLocked keeps edge id out of answers until q.until, unless it is
// already quarantined for as long; detail says what the edge did. r.mu
// must be held.
func (r *Router) quarantineLocked(id peer.ID, now time.Time, q quarantine, detail string) {
	if old, ok := r.quarantine[id]; ok && !old.until.Before(q.until) {
		return
	}
	r.quarantine[id] = q
	r.metrics.quarantines.WithLabelValues(q.source).Inc()
	r.metrics.quarantined.Set(float64(len(r.quarantine)))
	r.log.Warn("edge quarantined", zap.String("peer", id.String()), zap.String("source", q.source),
		zap.String("reason", q.reason), zap.String("detail", detail), zap.Time("until", q.until))
	if e := r.edges[id]; e != nil {
		// When the quarantine ends the edge needs a good content probe
		// before it returns; it gets one then.
		e.contentOK, e.contentErr, e.nextContent = false, detail, q.until
		if r.updateHealthLocked(e, now) {
			r.rebuildLocked()
		}
	}
}

// quarantinedLocked returns id's quarantine, if one holds at now. r.mu
// must be held.
func (r *Router) quarantinedLocked(id peer.ID, now time.Time) (quarantine, bool) {
	q, ok := r.quarantine[id]
	return q, ok && now.Before(q.until)
}

// expireQuarantinesLocked forgets quarantines that ended. The edges they
// held wait for a good content probe (due at once) to return, or, with
// content probes disabled, return with their next good health check.
// r.mu must be held.
func (r *Router) expireQuarantinesLocked(now time.Time) {
	n := len(r.quarantine)
	for id, q := range r.quarantine {
		if !now.Before(q.until) {
			delete(r.quarantine, id)
			r.log.Info("edge quarantine over", zap.String("peer", id.String()), zap.String("reason", q.reason))
			if e := r.edges[id]; e != nil && r.cfg.ContentProbeInterval <= 0 {
				// No content probe will clear the verdict quarantineLocked
				// set: the edge would stay out for good.
				e.contentOK, e.contentErr = true, ""
			}
		}
	}
	if len(r.quarantine) != n {
		r.metrics.quarantined.Set(float64(len(r.quarantine)))
	}
}
