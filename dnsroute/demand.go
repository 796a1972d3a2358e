package dnsroute

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// Demand counting: what the router's answers could have brought each edge.
//
// Billing pays an edge for the bytes it served a site in an epoch no more
// than the clients the router sent it could plausibly have fetched. The
// router, which profits from no payment, counts per epoch, edge and site
// the distinct client units it handed the edge to: a unit is the client's
// /24 (IPv4) or /48 (IPv6), from ECS when the query carries it, else from
// the query's source. A unit counts once per epoch however often it asks,
// so one client, or a few subnets, asking again and again cannot inflate
// an edge's share; queries from any edge's own address count for no one,
// so an edge cannot make its own demand; and one source may introduce at
// most maxECSUnits units by ECS per epoch, so ECS cannot mint subnets. An
// edge handed out first counts the unit as first, later ones as other
// (clients use the first answer, the others on failover). An answer counts
// for its epoch, and for the next one too when its TTL reaches into it:
// resolvers serve it that long.

// maxECSUnits bounds the client units one source may introduce by ECS in
// an epoch (a resolver speaks for many subnets, an attacker should not).
const maxECSUnits = 16

// defaultMaxUnits bounds the units counted per epoch, about 100 bytes each;
// past it new units are dropped (and counted): that only underpays.
const defaultMaxUnits = 1 << 20

// handout is what one answer handed out, for counting.
type handout struct {
	edges []*edgeView
	first []*edgeView // the first edge of each address family answered
	site  string      // "name:NAME" (also "name:KEY" for KEY.ipns) or "cid:CID"; "" for answers of no site
	unit  netip.Prefix
	ecs   bool // unit comes from the query's ECS option
}

// demandUnit is a client unit's state for one (edge, site, epoch).
type demandUnit uint8

const (
	unitOther demandUnit = 1 + iota // counted as an other answer
	unitFirst                       // counted as a first answer
)

type edgeSite struct{ edge, site string }

type unitKey struct {
	edgeSite
	unit netip.Prefix
}

// epochDemand is one epoch's counts.
type epochDemand struct {
	units  map[unitKey]demandUnit
	counts map[edgeSite]*dnsrouteapi.SiteDemand
	ecs    map[netip.Prefix]map[netip.Prefix]struct{} // source unit → units it introduced by ECS
	probes map[string]uint64                          // edge → body bytes of the router's content probes
}

// demand counts, per billing epoch, the client units answers sent to each
// edge for each site. Safe for concurrent use.
type demand struct {
	secs     int64 // epoch length, whole seconds
	ttl      int64 // answers' TTL, seconds
	maxUnits int
	dropped  prometheus.Counter

	mu     sync.Mutex
	epochs map[int64]*epochDemand
}

func newDemand(epoch, ttl time.Duration, dropped prometheus.Counter) *demand {
	return &demand{secs: max(int64(epoch/time.Second), 1), ttl: int64(ttl / time.Second), maxUnits: defaultMaxUnits,
		dropped: dropped, epochs: map[int64]*epochDemand{}}
}

// unitOf returns the client unit of addr: its /24 or /48.
func unitOf(addr netip.Addr) netip.Prefix {
	bits := 24
	if addr.Is6() {
		bits = 48
	}
	p, _ := addr.Prefix(bits)
	return p
}

// countMark remembers the epochs one ready response's handout was last
// counted in, so that sending it again in the same epochs costs two
// atomic loads, not the table's lock: a unit counts once per epoch anyway.
type countMark struct{ e0, e1 atomic.Int64 }

// count adds h, answered at now to a query from src, to the counts.
// edgeAddrs are the addresses of every edge the router knows. mark, when
// not nil, is the ready response's: h was counted for the epochs it holds.
func (d *demand) count(now time.Time, h handout, src netip.Addr, edgeAddrs map[netip.Addr]bool, mark *countMark) {
	if h.site == "" || len(h.edges) == 0 || !h.unit.IsValid() {
		return
	}
	t := now.Unix()
	e0, e1 := t-t%d.secs, (t+d.ttl)-(t+d.ttl)%d.secs
	if mark != nil && mark.e0.Load() == e0 && mark.e1.Load() == e1 {
		return
	}
	if edgeAddrs[src] {
		return
	}
	d.mu.Lock()
	d.countEpoch(e0, h, src)
	if e1 != e0 {
		d.countEpoch(e1, h, src)
	}
	d.mu.Unlock()
	if mark != nil && !h.ecs {
		// A response read from ECS is per ECS subnet, but its source
		// may change: the ECS cap is per source, so count it each time.
		mark.e0.Store(e0)
		mark.e1.Store(e1)
	}
}

// epochLocked returns the counts of epoch, made if needed (forgetting
// epochs older than dnsrouteapi.MaxEpochs). d.mu must be held.
func (d *demand) epochLocked(epoch int64) *epochDemand {
	ed := d.epochs[epoch]
	if ed == nil {
		ed = &epochDemand{units: map[unitKey]demandUnit{}, counts: map[edgeSite]*dnsrouteapi.SiteDemand{},
			ecs: map[netip.Prefix]map[netip.Prefix]struct{}{}, probes: map[string]uint64{}}
		d.epochs[epoch] = ed
		for e := range d.epochs {
			if e < epoch-int64(dnsrouteapi.MaxEpochs)*d.secs {
				delete(d.epochs, e)
			}
		}
	}
	return ed
}

// probed adds n body bytes the router's content probe read from edge at
// now: the edge served (and bills) them, though no client asked.
func (d *demand) probed(now time.Time, edge string, n int64) {
	if n <= 0 {
		return
	}
	t := now.Unix()
	d.mu.Lock()
	d.epochLocked(t - t%d.secs).probes[edge] += uint64(n)
	d.mu.Unlock()
}

func (d *demand) countEpoch(epoch int64, h handout, src netip.Addr) {
	ed := d.epochLocked(epoch)
	if h.ecs {
		if srcUnit := unitOf(src); srcUnit != h.unit {
			introduced := ed.ecs[srcUnit]
			if _, seen := introduced[h.unit]; !seen {
				if len(introduced) >= maxECSUnits {
					return
				}
				if introduced == nil {
					introduced = map[netip.Prefix]struct{}{}
					ed.ecs[srcUnit] = introduced
				}
				introduced[h.unit] = struct{}{}
			}
		}
	}
	for _, e := range h.edges {
		state := unitOther
		if slices.Contains(h.first, e) {
			state = unitFirst
		}
		k := unitKey{edgeSite{e.peer, h.site}, h.unit}
		was, seen := ed.units[k]
		if was >= state {
			continue
		}
		if !seen && len(ed.units) >= d.maxUnits {
			d.dropped.Inc()
			continue
		}
		ed.units[k] = state
		c := ed.counts[k.edgeSite]
		if c == nil {
			c = &dnsrouteapi.SiteDemand{Site: h.site}
			ed.counts[k.edgeSite] = c
		}
		if was == unitOther {
			c.Other--
		}
		if state == unitFirst {
			c.First++
		} else {
			c.Other++
		}
	}
}

// of returns edge's counts, oldest epoch first, sites in order.
func (d *demand) of(edge string) []dnsrouteapi.EpochDemand {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []dnsrouteapi.EpochDemand
	for epoch, ed := range d.epochs {
		var sites []dnsrouteapi.SiteDemand
		for k, c := range ed.counts {
			if k.edge == edge && (c.First > 0 || c.Other > 0) {
				sites = append(sites, *c)
			}
		}
		if len(sites) > 0 || ed.probes[edge] > 0 {
			slices.SortFunc(sites, func(a, b dnsrouteapi.SiteDemand) int { return strings.Compare(a.Site, b.Site) })
			out = append(out, dnsrouteapi.EpochDemand{Epoch: epoch, Sites: sites, ProbeBytes: ed.probes[edge]})
		}
	}
	slices.SortFunc(out, func(a, b dnsrouteapi.EpochDemand) int { return int(a.Epoch - b.Epoch) })
	return out
}
