package witness

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
)

// NameSkew widens the interval a name pointed to a root, on both sides,
// when a record is matched to it: the edge's clock and the origin's may
// disagree, and an edge may have learned a name's move a little late
// (beyond the record's TTL, which is added to the end).
const NameSkew = time.Minute

// rootInfo is who pays for a root: set by the first event that names the
// root (its first upload, or for a root uploaded before uploads were
// signed, the first name that pointed at it) and never changed.
type rootInfo struct {
	payer   peer.ID
	firstAt time.Time
	firstID int64 // the event that set it: ties of firstAt
}

// nameSpan is an interval a human name pointed to a root.
type nameSpan struct {
	root        string
	from, until time.Time // until zero: still
	ttl         time.Duration
}

// live reports whether a record served at at may belong to the span: at
// within [from − NameSkew, until + ttl + NameSkew]. A zero at (time not
// known) matches every span.
func (s nameSpan) live(at time.Time) bool {
	if at.IsZero() {
		return true
	}
	if at.Before(s.from.Add(-NameSkew)) {
		return false
	}
	return s.until.IsZero() || !at.After(s.until.Add(s.ttl+NameSkew))
}

// Placement is an interval during which the origin's log placed a shard
// on a storage peer.
type Placement struct {
	Shard   string
	Segment int64
	Peer    peer.ID
	// Size is the shard's size in bytes.
	Size int64
	// Root is the root whose striping made the shard's segment; Payer
	// is who pays for that root.
	Root  string
	Payer peer.ID
	// From and Until bound the interval; Until is zero while the shard
	// is still there.
	From, Until time.Time
}

// syncLog reads the origin's billing log from where it stopped, unless it
// did within the last second (force: read anyway), checks each page's
// signature against the origin's peer ID and applies its events. Callers
// hold o.mu.
func (o *OriginContent) syncLog(ctx context.Context, force bool) error {
	if !force && time.Since(o.logAt) < time.Second {
		return nil
	}
	id, err := o.originIDLocked(ctx)
	if err != nil {
		return err
	}
	for {
		var env identity.Envelope
		path := "/api/v1/billing/log?since=" + strconv.FormatInt(o.logID, 10) + "&limit=" + strconv.Itoa(originapi.MaxBillingLogPage)
		if err := o.getJSON(ctx, path, &env); err != nil {
			return err
		}
		var page originapi.BillingLog
		signer, err := env.Open(originapi.TypeBillingLog, &page)
		if err != nil {
			return fmt.Errorf("origin: billing log: %w", err)
		}
		if signer != id {
			return fmt.Errorf("origin: billing log signed by %s, not the origin %s", signer, id)
		}
		if page.Since != o.logID {
			return fmt.Errorf("origin: billing log page after %d, asked after %d", page.Since, o.logID)
		}
		for _, ev := range page.Events {
			if ev.ID <= o.logID {
				return fmt.Errorf("origin: billing log event %d after %d", ev.ID, o.logID)
			}
			o.apply(ev)
			o.logID = ev.ID
		}
		if len(page.Events) == 0 || o.logID >= page.Last {
			break
		}
	}
	o.logAt = time.Now()
	return nil
}

// apply adds one event of the log to what billing knows. Callers hold
// o.mu.
func (o *OriginContent) apply(ev originapi.BillingEvent) {
	switch ev.Kind {
	case originapi.EventUpload:
		if p, err := peer.Decode(ev.Publisher); err == nil {
			o.setPayer(ev.Root, p, ev)
		}
	case originapi.EventName:
		p, err := peer.Decode(ev.Publisher)
		if err != nil {
			n, nerr := ipns.NameFromString(ev.IPNS)
			if nerr != nil {
				return
			}
			p = n.Peer()
		}
		o.setPayer(ev.Root, p, ev)
		o.keyNames[p] = ev.Name
		spans := o.names[ev.Name]
		if n := len(spans); n > 0 && spans[n-1].until.IsZero() {
			if spans[n-1].root == ev.Root {
				spans[n-1].ttl = max(spans[n-1].ttl, time.Duration(ev.TTLSeconds)*time.Second)
				return
			}
			spans[n-1].until = ev.At
		}
		o.names[ev.Name] = append(spans, nameSpan{root: ev.Root, from: ev.At, ttl: time.Duration(ev.TTLSeconds) * time.Second})
	case originapi.EventPlace:
		p, err := peer.Decode(ev.Peer)
		if err != nil {
			return
		}
		pl := &Placement{Shard: ev.Shard, Segment: ev.Segment, Peer: p, Size: ev.Size, Root: ev.Root, From: ev.At}
		o.placements[ev.Shard] = append(o.placements[ev.Shard], pl)
	case originapi.EventMove:
		p, err := peer.Decode(ev.Peer)
		if err != nil {
			return
		}
		for _, pl := range o.placements[ev.Shard] {
			if pl.Segment == ev.Segment && pl.Until.IsZero() {
				pl.Until = ev.At
				moved := *pl
				moved.Peer, moved.From, moved.Until = p, ev.At, time.Time{}
				o.placements[ev.Shard] = append(o.placements[ev.Shard], &moved)
				break
			}
		}
	case originapi.EventFlag:
		k := ev.Peer + "/" + ev.Shard
		if _, ok := o.flags[k]; !ok {
			o.flags[k] = ev.At
		}
	}
}

// setPayer makes p the payer of root unless the root has one.
func (o *OriginContent) setPayer(root string, p peer.ID, ev originapi.BillingEvent) {
	if root == "" || o.roots[root] != nil {
		return
	}
	o.roots[root] = &rootInfo{payer: p, firstAt: ev.At, firstID: ev.ID}
}

// earlier orders roots by when they got their payer.
func (o *OriginContent) earlier(a, b string) bool {
	ra, rb := o.roots[a], o.roots[b]
	if !ra.firstAt.Equal(rb.firstAt) {
		return ra.firstAt.Before(rb.firstAt)
	}
	return ra.firstID < rb.firstID
}

// ShardInfo is what the origin's log says of a shard, for a read order a
// storage peer claims.
type ShardInfo struct {
	// Size is the shard's size in bytes.
	Size int64
	// Payer pays for reads of the shard: the payer of the root whose
	// striping first placed it.
	Payer peer.ID
	// Placed reports whether the shard was on the peer asked about at
	// some time in the interval asked about.
	Placed bool
}

// PeerShard names a shard on a storage peer.
type PeerShard struct {
	Peer  peer.ID
	Shard string
}

// ShardInfo returns the size and payer of shard and whether the origin's
// log placed it on p at some time in [from, to]. A shard the log never
// placed is a *billingapi.RejectError with ReasonUnknownShard. The log is
// read again on a miss, at most once a second.
func (o *OriginContent) ShardInfo(ctx context.Context, shard string, p peer.ID, from, to time.Time) (ShardInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var info ShardInfo
	for try := 0; try < 2; try++ {
		if try == 1 {
			if err := o.syncLog(ctx, false); err != nil {
				return ShardInfo{}, err
			}
		}
		info = ShardInfo{}
		first := ""
		for _, pl := range o.placements[shard] {
			info.Size = pl.Size
			if o.roots[pl.Root] != nil && (first == "" || o.earlier(pl.Root, first)) {
				first = pl.Root
			}
			if pl.Peer == p && !pl.From.After(to) && (pl.Until.IsZero() || !pl.Until.Before(from)) {
				info.Placed = true
			}
		}
		if first != "" {
			info.Payer = o.roots[first].payer
			if info.Placed {
				break
			}
		}
	}
	if info.Payer == "" {
		return ShardInfo{}, &billingapi.RejectError{Reason: billingapi.ReasonUnknownShard,
			Err: fmt.Errorf("shard %s was never placed for a published root", shard)}
	}
	return info, nil
}

// Flags reads the origin's log up to now and returns, for each shard on a
// peer the origin flagged, when it first did.
func (o *OriginContent) Flags(ctx context.Context) (map[PeerShard]time.Time, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.syncLog(ctx, true); err != nil {
		return nil, err
	}
	out := make(map[PeerShard]time.Time, len(o.flags))
	for k, at := range o.flags {
		p, s, _ := strings.Cut(k, "/")
		id, err := peer.Decode(p)
		if err != nil {
			continue
		}
		out[PeerShard{id, s}] = at
	}
	return out, nil
}

// Placements returns every interval the origin's log placed a shard on a
// peer that overlaps [from, to), with its payer (placements of roots
// nobody pays for are left out). The log is read again if it was not
// within the last second.
func (o *OriginContent) Placements(ctx context.Context, from, to time.Time) ([]Placement, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.syncLog(ctx, false); err != nil {
		return nil, err
	}
	var out []Placement
	for _, pls := range o.placements {
		for _, pl := range pls {
			r := o.roots[pl.Root]
			if r == nil || !pl.From.Before(to) || (!pl.Until.IsZero() && !pl.Until.After(from)) {
				continue
			}
			c := *pl
			c.Payer = r.payer
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Shard != out[j].Shard {
			return out[i].Shard < out[j].Shard
		}
		return out[i].From.Before(out[j].From)
	})
	return out, nil
}
