package dnsroute

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	ticker "github.com/topcdn/topcdn/internal/tick" // "tick" is the router's check interval
	"github.com/topcdn/topcdn/namestream"
	"go.uber.org/zap"
)

// tick is how often the router re-checks edge health and starts due
// probes.
const tick = 50 * time.Millisecond

// Router is the geo-DNS authoritative server of one zone. It implements
// dns.Handler (UDP and TCP through a dns.Server), serves DNS-over-HTTPS,
// the heartbeat API and the edge list through Handler, and keeps its view
// of names and edges fresh while Run runs.
type Router struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	rrl     *rrl
	allowed map[peer.ID]bool
	seed    maphash.Seed

	// probeClient is cfg.Client, not following redirects: a content
	// probe checks the edge's own bytes.
	probeClient *http.Client
	// addrClient probes an edge's URL through one of its addresses (the
	// request's dialAddr), without keep-alives, so that no connection
	// made to one address is reused for another.
	addrClient *http.Client
	// httpsClient is addrClient over HTTPS, verifying against
	// cfg.RootCAs: the HTTPS probes.
	httpsClient *http.Client

	snap   atomic.Pointer[snapshot]
	demand *demand

	// follower follows the origin's name changes (followNames);
	// streamMetrics counts its pages.
	follower      atomic.Pointer[namestream.Follower]
	streamMetrics *namestream.Metrics

	mu             sync.Mutex
	edges          map[peer.ID]*edge
	names          map[string]nameEntry // human name → entry, as the origin lists them
	roots          []cid.Cid            // what content probes may ask for: the names' distinct roots
	suspended      map[peer.ID]bool
	admitted       map[peer.ID]bool       // edges billing admitted; nil: billing not read (yet)
	quarantine     map[peer.ID]quarantine // edges caught lying, also while not registered
	namesOK        bool                   // names were read from the origin at least once
	namesAt        time.Time              // when the whole list was last read
	learntOriginID peer.ID                // the origin's peer ID, asked once
	serial         uint32                 // SOA serial: when names last changed
	gen            uint64                 // bumped on every rebuild
	started        time.Time              // when New ran

	// acme holds the ACME challenge records (acme.go); guarded by mu.
	acme *challengeTable
}

// snapshot is an immutable view of what answers depend on. Queries read
// the current one without locks; every change builds a new one.
type snapshot struct {
	gen    uint64
	edges  []*edgeView // healthy edges only
	names  map[string]nameEntry
	serial uint32
	cache  *respCache
	// edgeAddrs are every known edge's addresses, healthy or not: queries
	// from them count as no edge's demand.
	edgeAddrs map[netip.Addr]bool
	// suspended are billing's suspended publishers (never changed: a new
	// list is a new map), whose KEY.ipns names get no addresses.
	suspended map[peer.ID]bool
	// challenges are the ACME challenge TXT values by owner name (never
	// changed: see challengeTable.view).
	challenges map[string][]string
}

// nameEntry is a published name as the router serves it.
type nameEntry struct {
	ipns      string // k51…
	cid       string
	publisher peer.ID
	suspended bool
}

// edgeView is the part of an edge answers read, frozen in a snapshot.
type edgeView struct {
	peer    string
	hash    uint64 // of peer, for tie-breaks
	v4, v6  netip.Addr
	loc     Location
	located bool
	util    float64 // load/capacity, 0 when capacity is unknown
	stats   *edgeStats
}

// edgeStats counts how often an edge was handed out.
type edgeStats struct {
	answers atomic.Uint64
	counter prometheus.Counter
}

// New returns a router for cfg. It serves nothing until its handlers are
// mounted, and knows no names or edges until Run polls the origin and
// edges send heartbeats.
func New(cfg Config) (*Router, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("dnsroute: metrics: %w", err)
	}
	r := &Router{
		cfg:        cfg,
		log:        cfg.Logger,
		metrics:    m,
		seed:       maphash.MakeSeed(),
		edges:      make(map[peer.ID]*edge),
		names:      make(map[string]nameEntry),
		suspended:  make(map[peer.ID]bool),
		quarantine: make(map[peer.ID]quarantine),
		started:    cfg.now(),
		demand:     newDemand(cfg.BillingEpoch, cfg.TTL, m.demandDropped),
		acme:       newChallengeTable(cfg.Zone, m.challengeRecords),
	}
	r.streamMetrics = namestream.NewMetrics(cfg.Registry, "dns", r.streamUp)
	pc := *cfg.Client
	pc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r.probeClient = &pc
	r.addrClient = newAddrClient(cfg.Client)
	r.httpsClient = newAddrClient(&http.Client{Timeout: cfg.Client.Timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs}}})
	if cfg.RRLRate > 0 {
		r.rrl = newRRL(cfg.RRLRate, m)
	}
	if len(cfg.AllowedEdges) > 0 {
		r.allowed = make(map[peer.ID]bool, len(cfg.AllowedEdges))
		for _, p := range cfg.AllowedEdges {
			r.allowed[p] = true
		}
	}
	r.serial = uint32(r.started.Unix())
	r.mu.Lock()
	r.rebuildLocked()
	r.mu.Unlock()
	return r, nil
}

// Zone returns the zone served, fully qualified and lower case.
func (r *Router) Zone() string { return r.cfg.Zone }

// Run keeps the router's view current until ctx is done: it polls the
// origin's names and billing's suspensions and forfeits every
// NamesInterval, probes every edge's health once per heartbeat interval
// and its content about once per ContentProbeInterval, takes edges that
// missed 3 heartbeats or failed a probe out of answers, and quarantines
// edges caught serving wrong bytes. It returns nil when ctx is done.
func (r *Router) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { ticker.NowAndEvery(ctx, r.cfg.NamesInterval, r.pollOnce) })
	wg.Go(func() { r.followNames(ctx) })
	ticker.Every(ctx, tick, func(ctx context.Context) {
		r.checkEdges(ctx)
		if r.rrl != nil {
			r.rrl.sweep(r.cfg.now())
		}
	})
	wg.Wait()
	return nil
}

// Ready reports whether the router has read the origin's names at least
// once.
func (r *Router) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.namesOK
}

// rebuildLocked publishes a new snapshot from the current state. r.mu must
// be held.
func (r *Router) rebuildLocked() {
	r.gen++
	s := &snapshot{gen: r.gen, names: make(map[string]nameEntry, len(r.names)), serial: r.serial, cache: newRespCache(),
		suspended: r.suspended, challenges: r.acme.view}
	for n, e := range r.names {
		e.suspended = r.suspended[e.publisher]
		s.names[n] = e
	}
	healthy := 0
	s.edgeAddrs = make(map[netip.Addr]bool, len(r.edges))
	for _, e := range r.edges {
		for _, a := range e.hb.IPs {
			s.edgeAddrs[a] = true
		}
		if !r.inAnswersLocked(e) {
			continue
		}
		healthy++
		s.edges = append(s.edges, e.view(r.seed))
	}
	r.metrics.edges.WithLabelValues("healthy").Set(float64(healthy))
	r.metrics.edges.WithLabelValues("unhealthy").Set(float64(len(r.edges) - healthy))
	r.metrics.names.Set(float64(len(r.names)))
	r.snap.Store(s)
}
