package dnsroute

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// NamesPath is the origin's list of human names (JSON []originapi.NameInfo).
const NamesPath = "/api/v1/names"

// SuspendedPath is billing's list of suspended publishers (JSON
// Suspended).
const SuspendedPath = "/api/v1/suspended"

// ForfeitsPath is billing's list of epochs edges forfeited (JSON
// Forfeits), asked with ?since=UNIX.
const ForfeitsPath = "/api/v1/forfeits"

// maxListBody bounds a names, suspension or forfeit list read from a
// service.
const maxListBody = 64 << 20

// Suspended is billing's answer on SuspendedPath.
type Suspended struct {
	// Publishers are the peer IDs of the suspended publishers' keys.
	Publishers []string `json:"publishers"`
}

// Forfeits is billing's answer on ForfeitsPath.
type Forfeits struct {
	// Forfeits are the epochs edges forfeited since the time asked.
	Forfeits []Forfeit `json:"forfeits"`
}

// Forfeit is an epoch an edge forfeited, as billing lists it.
type Forfeit struct {
	// Edge is the edge's peer ID.
	Edge string `json:"edge"`
	// Epoch is the forfeited epoch (its start, Unix seconds).
	Epoch int64 `json:"epoch"`
	// Reason is why; the router quarantines edges for ReasonWrongContent
	// only.
	Reason string `json:"reason"`
	// At is when billing decided.
	At time.Time `json:"at"`
}

// ReasonWrongContent is the forfeit reason of an edge billing's prober
// caught serving bytes that do not match their CID.
const ReasonWrongContent = "wrong_content"

// pollOnce reads suspensions and forfeits (if billing is set) then names,
// and keeps the last good list of either when its service fails.
func (r *Router) pollOnce(ctx context.Context) {
	if r.cfg.Billing != "" {
		switch err := r.pollSuspended(ctx); {
		case err == nil:
			r.metrics.polls.WithLabelValues("billing", "ok").Inc()
		case ctx.Err() == nil:
			r.metrics.polls.WithLabelValues("billing", "error").Inc()
			r.log.Warn("cannot read suspended publishers; keeping the last list", zap.Error(err))
		}
		switch err := r.pollAdmitted(ctx); {
		case err == nil:
			r.metrics.polls.WithLabelValues("admissions", "ok").Inc()
		case ctx.Err() == nil:
			r.metrics.polls.WithLabelValues("admissions", "error").Inc()
			r.log.Warn("cannot read admitted edges from billing; keeping the last list", zap.Error(err))
		}
		switch err := r.pollForfeits(ctx); {
		case err == nil:
			r.metrics.polls.WithLabelValues("forfeits", "ok").Inc()
		case ctx.Err() == nil:
			r.metrics.polls.WithLabelValues("forfeits", "error").Inc()
			r.log.Warn("cannot read forfeits from billing; quarantines stand", zap.Error(err))
		}
	}
	r.mu.Lock()
	resynced := r.cfg.now().Sub(r.namesAt) < namesResync
	r.mu.Unlock()
	if resynced && r.streamUp() {
		return // changes arrive on the stream; the list is read every namesResync
	}
	switch err := r.pollNames(ctx); {
	case err == nil:
		r.metrics.polls.WithLabelValues("origin", "ok").Inc()
	case ctx.Err() == nil:
		r.metrics.polls.WithLabelValues("origin", "error").Inc()
		r.log.Warn("cannot read names from the origin; keeping the last list", zap.Error(err))
	}
}

// getJSON GETs url and decodes its JSON body, at most maxListBody bytes,
// into v, within a poll's time.
func (r *Router) getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.NamesInterval, 2*time.Second))
	defer cancel()
	return httpkit.GetJSON(ctx, r.cfg.Client, url, maxListBody, v)
}

// pollNames reads the origin's names and publishes them if they changed.
func (r *Router) pollNames(ctx context.Context) error {
	var list []originapi.NameInfo
	err := r.origins.Do(ctx, func(ctx context.Context, base string) error {
		return r.getJSON(ctx, base+NamesPath, &list)
	})
	if err != nil {
		return fmt.Errorf("dnsroute: names: %w", err)
	}
	names := make(map[string]nameEntry, len(list))
	for _, ni := range list {
		e, err := parseName(ni)
		if err != nil {
			r.log.Warn("skipping a name the origin lists", zap.String("name", ni.Name), zap.Error(err))
			continue
		}
		names[ni.Name] = e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	first := !r.namesOK
	r.namesOK = true
	r.namesAt = r.cfg.now()
	if !maps.Equal(names, r.names) {
		r.names = names
		r.roots = probeRoots(names)
		r.serial = max(uint32(r.cfg.now().Unix()), r.serial+1)
		r.rebuildLocked()
		r.log.Info("names updated", zap.Int("names", len(names)))
	} else if first {
		r.log.Info("names read", zap.Int("names", len(names)))
	}
	return nil
}

// parseName checks one name the origin lists.
func parseName(ni originapi.NameInfo) (nameEntry, error) {
	if err := originapi.ValidateName(ni.Name); err != nil {
		return nameEntry{}, err
	}
	n, err := ipns.NameFromString(ni.IPNS)
	if err != nil {
		return nameEntry{}, fmt.Errorf("ipns %q: %w", ni.IPNS, err)
	}
	return nameEntry{ipns: n.String(), cid: ni.CID, publisher: n.Peer()}, nil
}

// pollSuspended reads billing's suspended publishers and publishes them if
// they changed.
func (r *Router) pollSuspended(ctx context.Context) error {
	var s Suspended
	if err := r.getJSON(ctx, r.cfg.Billing+SuspendedPath, &s); err != nil {
		return fmt.Errorf("dnsroute: suspended: %w", err)
	}
	set := make(map[peer.ID]bool, len(s.Publishers))
	for _, p := range s.Publishers {
		id, err := peer.Decode(p)
		if err != nil {
			// A whole list is refused rather than half applied.
			return fmt.Errorf("dnsroute: suspended: publisher %q: %w", p, err)
		}
		set[id] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !maps.Equal(set, r.suspended) {
		r.suspended = set
		r.rebuildLocked()
		r.log.Info("suspended publishers updated", zap.Int("suspended", len(set)))
	}
	return nil
}

// pollAdmitted reads the edges billing's operator admitted and, when
// they changed, hands out only those: an edge nobody vouches for gets no
// clients, hence no demand to be paid for. Until billing first answers,
// every healthy edge is handed out (billing pays none it did not admit).
func (r *Router) pollAdmitted(ctx context.Context) error {
	var a billingapi.AdmittedResponse
	if err := r.getJSON(ctx, r.cfg.Billing+billingapi.AdmittedPath, &a); err != nil {
		return fmt.Errorf("dnsroute: admitted edges: %w", err)
	}
	set := make(map[peer.ID]bool, len(a.Edges))
	for _, e := range a.Edges {
		id, err := peer.Decode(e.Edge)
		if err != nil {
			return fmt.Errorf("dnsroute: admitted edges: %q: %w", e.Edge, err)
		}
		set[id] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.admitted == nil || !maps.Equal(set, r.admitted) {
		r.admitted = set
		r.rebuildLocked()
		r.log.Info("admitted edges updated", zap.Int("admitted", len(set)))
	}
	return nil
}

// pollForfeits reads the epochs billing's prober made edges forfeit for
// wrong content within the last Quarantine, and quarantines those edges
// until Quarantine after billing's verdict (at most Quarantine from now).
func (r *Router) pollForfeits(ctx context.Context) error {
	now := r.cfg.now()
	u := r.cfg.Billing + ForfeitsPath + "?since=" + strconv.FormatInt(now.Add(-r.cfg.Quarantine).Unix(), 10)
	var list Forfeits
	if err := r.getJSON(ctx, u, &list); err != nil {
		return fmt.Errorf("dnsroute: forfeits: %w", err)
	}
	type verdict struct {
		id peer.ID
		f  Forfeit
	}
	var vs []verdict
	for _, f := range list.Forfeits {
		id, err := peer.Decode(f.Edge)
		if err != nil {
			// A whole list is refused rather than half applied.
			return fmt.Errorf("dnsroute: forfeits: edge %q: %w", f.Edge, err)
		}
		if f.Reason == ReasonWrongContent {
			vs = append(vs, verdict{id, f})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range vs {
		until := v.f.At.Add(r.cfg.Quarantine)
		if until.After(now.Add(r.cfg.Quarantine)) {
			until = now.Add(r.cfg.Quarantine) // billing's clock is ahead
		}
		if !now.Before(until) {
			continue
		}
		r.quarantineLocked(v.id, now, quarantine{until: until, source: "billing",
			reason: fmt.Sprintf("billing's prober caught it serving wrong bytes (epoch %d forfeited)", v.f.Epoch)},
			fmt.Sprintf("billing: epoch %d forfeited for %s at %s", v.f.Epoch, v.f.Reason, v.f.At.UTC().Format(time.RFC3339)))
	}
	return nil
}
