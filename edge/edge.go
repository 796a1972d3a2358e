package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// Defaults of Config, and of OpenDiskCache's bound.
const (
	// DefaultDomain is the zone sites are served under: Config.Domain.
	DefaultDomain = "cdn.test"
	// DefaultMemoryBytes bounds the memory caches: Config.MemoryBytes.
	DefaultMemoryBytes = 256 << 20
	// DefaultDiskCacheBytes bounds a disk cache: OpenDiskCache's maxBytes.
	DefaultDiskCacheBytes = 1 << 30
)

// Config configures an Edge. The zero value of a field means its default;
// New refuses a negative MemoryBytes.
type Config struct {
	// Origin is the origin's base URL, e.g. http://127.0.0.1:8081. Required.
	Origin string
	// OriginID pins the origin's peer ID, which must sign manifests.
	// Default: asked from the origin when first needed.
	OriginID peer.ID
	// Domain is the zone sites are served under: NAME.Domain is a site,
	// {cid}.ipfs.Domain the subdomain gateway. Default: DefaultDomain
	// (cdn.test).
	Domain string
	// Key is the edge's identity; it signs read orders. Default: a new
	// key (pass one to keep the edge's identity across restarts).
	Key *identity.Key
	// MemoryBytes bounds the memory caches: an eighth (at most 64 MiB)
	// for spans rebuilt from parity, the rest half for blocks, half for
	// ready-to-send responses. Default: DefaultMemoryBytes (256 MiB).
	MemoryBytes int64
	// State holds the caches and what the edge learns; edges built with
	// one State share it (see State). It must have been made for
	// MemoryBytes. Default: a new one.
	State *State
	// Disk is the disk cache tier. Default: none.
	Disk *DiskCache
	// Logger receives logs. Default: none.
	Logger *zap.Logger
	// Registry receives metrics. Default: a new registry.
	Registry prometheus.Registerer
	// HTTPClient reaches the origin and storage peers. Default: one with
	// sane timeouts.
	HTTPClient *http.Client
	// Recorder receives a record of every response, for billing.
	// Default: none.
	Recorder Recorder
	// DNSLinks are static DNSLink records: a host name (blog.example.org)
	// → the content path its TXT record would name (/ipfs/{cid}[/sub] or
	// /ipns/{name}), for custom domains pointed at the edge without DNS
	// lookups (kubo's IPFS_NS_MAP). They take precedence over the origin's
	// names. Default: none.
	DNSLinks map[string]string
	// HTTPSPort is the port browsers reach the edge's HTTPS sites at.
	// When set, a plain-HTTP request is answered 308 with its URL on
	// HTTPS there, except one for HealthPath, for an IP address or for
	// PublicHost (see withHTTPS). Default: 0, no redirect.
	HTTPSPort int
	// PublicHost is the host of the URL the DNS router probes the edge
	// at (caddymodule's public_url), which plain HTTP keeps serving.
	// Default: none.
	PublicHost string
}

// Edge serves sites from verified, cached blocks.
type Edge struct {
	cfg     Config
	log     *zap.Logger
	src     *source
	mem     *memoryCache
	resp    *responseCache
	fetches fetches
	metrics *metrics
	handler http.Handler
	records *nameRecords        // the IPNS records kept
	names   *nameCache          // resolved names
	byIPNS  map[string][]string // IPNS name → the static DNSLink hosts pointing at it
	counters

	sitesMu sync.Mutex
	sites   map[string]siteState // host → does the origin publish it

	// Testing.
	blockBudget int64         // block reads one request may make: maxBlocksPerRequest
	pathBound   int           // segments a request's path may have: maxPathSegments
	streamWait  time.Duration // the name stream's poll wait; 0: its default
	noWarm      bool          // do not load a pushed root's manifest
}

// New builds an edge for the origin in cfg. It does not contact the
// origin: an edge may start before its origin.
func New(ctx context.Context, cfg Config) (*Edge, error) {
	if cfg.Origin == "" {
		return nil, errors.New("edge: Origin is required")
	}
	cfg.Origin = strings.TrimSuffix(cfg.Origin, "/")
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	cfg.Domain = strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	switch {
	case cfg.MemoryBytes == 0:
		cfg.MemoryBytes = DefaultMemoryBytes
	case cfg.MemoryBytes < 0:
		return nil, fmt.Errorf("edge: MemoryBytes %d is negative", cfg.MemoryBytes)
	}
	if cfg.HTTPSPort < 0 || cfg.HTTPSPort > 65535 {
		return nil, fmt.Errorf("edge: HTTPSPort %d is not a port", cfg.HTTPSPort)
	}
	cfg.PublicHost = strings.TrimSuffix(strings.ToLower(cfg.PublicHost), ".")
	if cfg.State == nil {
		cfg.State = NewState(cfg.MemoryBytes)
	} else if cfg.State.memoryBytes != cfg.MemoryBytes {
		return nil, fmt.Errorf("edge: State made for %d bytes of memory caches, MemoryBytes is %d", cfg.State.memoryBytes, cfg.MemoryBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.HTTPClient == nil {
		// Misses under load fetch from the origin on many requests at once:
		// keep their connections (the default keeps 2 idle per host, so
		// the rest are torn down and redialled on every fetch).
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 256
		cfg.HTTPClient = &http.Client{Timeout: time.Minute, Transport: t}
	}
	dnslinks := make(map[string]string, len(cfg.DNSLinks))
	for host, target := range cfg.DNSLinks {
		p, err := path.NewPath(target)
		if err != nil || (p.Namespace() != path.IPFSNamespace && p.Namespace() != path.IPNSNamespace) {
			return nil, fmt.Errorf("edge: DNSLink for %s: %q is not an /ipfs/ or /ipns/ path", host, target)
		}
		dnslinks[strings.TrimSuffix(strings.ToLower(host), ".")] = p.String()
	}
	cfg.DNSLinks = dnslinks
	byIPNS := map[string][]string{}
	for host, target := range dnslinks {
		if name, ok := strings.CutPrefix(target, "/ipns/"); ok {
			name, _, _ = strings.Cut(name, "/")
			byIPNS[siteKey(name)] = append(byIPNS[siteKey(name)], host)
		}
	}
	if cfg.Key == nil {
		k, err := identity.Generate(nil)
		if err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
		cfg.Key = k
	}
	st := cfg.State
	e := &Edge{cfg: cfg, log: cfg.Logger, mem: st.mem, resp: st.resp, sites: map[string]siteState{}, byIPNS: byIPNS,
		blockBudget: maxBlocksPerRequest, pathBound: maxPathSegments}
	var err error
	if e.metrics, err = newMetrics(cfg.Registry, e); err != nil {
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	e.src = &source{origin: cfg.Origin, http: cfg.HTTPClient,
		shards: storageapi.NewClient(cfg.Key, nil), stats: st.stats, spans: st.spans,
		dnslinks: cfg.DNSLinks, links: st.links, log: cfg.Logger, fallbacks: e.metrics.fallbacks,
		flag: func(f erasure.Flag) {
			e.log.Warn("storage peer flagged", zap.Stringer("peer", f.Peer), zap.String("shard", f.Shard), zap.String("reason", f.Reason))
		},
		learnt: st.learnt}
	if cfg.Disk != nil {
		e.src.disk = cfg.Disk
	}
	if cfg.OriginID != "" {
		st.learnt.mu.Lock()
		st.learnt.originID = cfg.OriginID
		st.learnt.mu.Unlock()
	}
	if e.handler, err = e.newHandler(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e.log.Info("edge ready", zap.String("origin", cfg.Origin), zap.String("domain", cfg.Domain),
		zap.Stringer("peer_id", cfg.Key.ID))
	return e, nil
}

// ServeHTTP serves sites, the path and subdomain gateways and the
// Trustless Gateway responses, and the edge's own health probe at
// HealthPath.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == HealthPath {
		e.serveHealth(w)
		return
	}
	e.handler.ServeHTTP(w, r)
}

// ID returns the edge's peer ID.
func (e *Edge) ID() peer.ID { return e.cfg.Key.ID }

func (e *Edge) newHandler() (http.Handler, error) {
	vs := newNameRecords(e.cfg.Origin, e.cfg.HTTPClient, e.log, e.metrics.fallbacks, e.cfg.State.names, e.src.disk)
	e.records = vs
	resolver, err := namesys.NewNameSystem(vs, namesys.WithDNSResolverWithTTL(e.src.lookupDNSLink(e.cfg.Domain)))
	if err != nil {
		return nil, fmt.Errorf("name system: %w", err)
	}
	// Boxo's own cache cannot be invalidated per name; ours can, when a
	// change is pushed (FollowNames). Entries live for their TTL.
	ns := newNameCache(resolver, e.cfg.State.resolutions, e.cfg.State.gens)
	e.names = ns
	blocks, err := gateway.NewBlocksBackend(blockservice.New(&blockstore{e: e}, nil),
		gateway.WithValueStore(vs), gateway.WithNameSystem(ns), gateway.WithPrometheusRegistry(e.cfg.Registry))
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	backend := rootedBackend{IPFSBackend: blocks, src: e.src}
	conf := gateway.Config{
		DeserializedResponses: true,
		PublicGateways: map[string]*gateway.PublicGateway{
			// InlineDNSLink: /ipns/blog.example.org redirects to
			// blog-example-org.ipns.DOMAIN, one label, which a wildcard
			// certificate for *.ipns.DOMAIN covers.
			e.cfg.Domain: {Paths: []string{"/ipfs", "/ipns"}, UseSubdomains: true, InlineDNSLink: true, DeserializedResponses: true},
		},
		MetricsRegistry: e.cfg.Registry,
	}
	gw := gateway.NewHandler(conf, backend)
	// CORS as kubo sends it: any origin may read content-addressed data
	// (verified-fetch clients, web apps). Set before the response cache
	// records the headers, so hits carry them at no cost.
	cors := gateway.NewHeaders(nil).ApplyCors()
	return e.withHTTPS(e.withAccounting(e.withRequestGuard(e.withResponseCache(cors.Wrap(e.withSite404(gateway.NewHostnameHandler(conf, backend, gw))))))), nil
}

// requestHost is the host a request is answered for: boxo's gateway
// honours X-Forwarded-Host over Host, so whatever keys or checks a
// request by host must too.
func requestHost(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		return h
	}
	return r.Host
}
