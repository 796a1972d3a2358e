package dnsroute

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultEdges         = 2
	DefaultTTL           = 30 * time.Second
	DefaultNamesInterval = 5 * time.Second
	DefaultHeartbeatSkew = time.Minute
	DefaultRRLRate       = 200
	DefaultMaxEdges      = 10000

	DefaultContentProbeInterval = 30 * time.Second
	DefaultContentProbeTimeout  = 5 * time.Second
	DefaultQuarantine           = time.Hour
)

// Config configures a Router. Zone and Origin are required; every other
// field has a default, which its zero value means. RRLRate and
// ContentProbeInterval are turned off by a negative value; other negative
// values are refused.
type Config struct {
	// Zone is the zone the router is authoritative for, e.g. "cdn.test".
	Zone string
	// Origin is the origin's base URL; names come from GET
	// Origin/api/v1/names.
	Origin string
	// Billing is the billing service's base URL, optional. Names published
	// by a key listed in GET Billing/api/v1/suspended get no A/AAAA answers.
	Billing string
	// NSAddrs are the addresses of this zone's name servers, this router
	// and its siblings: ns1.ZONE is NSAddrs[0], ns2.ZONE NSAddrs[1] and so
	// on, and the apex A/AAAA are all of them. Default: 127.0.0.1.
	NSAddrs []netip.Addr
	// Edges is the most edges one answer carries. Default: DefaultEdges (2).
	Edges int
	// TTL is the TTL of answers, 1s to a day. Default: DefaultTTL (30s).
	TTL time.Duration
	// NamesInterval is how often names (and suspensions) are polled.
	// Default: DefaultNamesInterval (5s).
	NamesInterval time.Duration
	// HeartbeatSkew is how far a heartbeat's time may be from the router's
	// clock. Default: DefaultHeartbeatSkew (1m).
	HeartbeatSkew time.Duration
	// AllowedEdges, when not empty, lists the only edges whose heartbeats
	// are accepted. Default: any edge that signs its heartbeat.
	AllowedEdges []peer.ID
	// MaxEdges bounds how many edges the router tracks. Default:
	// DefaultMaxEdges (10000).
	MaxEdges int
	// RRLRate is how many UDP responses per second one client subnet (/24
	// for IPv4, /56 for IPv6) gets of one response (as BIND's RRL counts
	// them: per name and type; NXDOMAIN and errors per zone) before the
	// router answers it only with an occasional truncated response
	// (pushing it to TCP) and drops the rest. Default: DefaultRRLRate
	// (200). Negative: off, no rate limiting.
	RRLRate float64
	// GeoIP locates clients and edges that report no location. Default:
	// none; clients are then not located, edges are ranked by load, and
	// the client's subnet only breaks ties.
	GeoIP *GeoDB
	// ID is the router's own peer ID, reported by /healthz. Optional.
	ID peer.ID
	// OriginID pins the origin's peer ID, which signs its stream of name
	// changes. Default: asked from the origin's /healthz once.
	OriginID peer.ID
	// Logger receives logs. Default: zap.NewNop().
	Logger *zap.Logger
	// Registry receives the router's metrics. Default: not registered.
	Registry prometheus.Registerer
	// Client makes the HTTP requests to the origin, billing and edge
	// probes. Default: a client with a 5 s timeout, or ContentProbeTimeout
	// if longer.
	Client *http.Client
	// ContentProbeInterval is how often, on average, the router fetches
	// the raw block of a published root, picked at random, through each
	// edge and checks that its bytes hash to its CID; each edge's next
	// probe is drawn between half and 1.5 times the interval. Default:
	// DefaultContentProbeInterval (30s). Negative: off, no content probes.
	ContentProbeInterval time.Duration
	// ContentProbeTimeout bounds one content probe, headers and body
	// (Client's own timeout applies too). Default:
	// DefaultContentProbeTimeout (5s).
	ContentProbeTimeout time.Duration
	// Quarantine is how long an edge caught serving bytes that do not
	// match their CID, by a content probe or by billing's prober, stays
	// out of answers whatever its heartbeats and health probes say.
	// Default: DefaultQuarantine (1h).
	Quarantine time.Duration
	// BillingEpoch is billing's epoch length, whole seconds: the router
	// counts the demand its answers send each edge per billing epoch.
	// Default: billingapi.DefaultEpoch (1m).
	BillingEpoch time.Duration
	// RootCAs verify the certificates of the edges whose heartbeats give
	// an https_url, in the HTTPS probes. Default: the system's roots.
	RootCAs *x509.CertPool

	// Testing.
	now        func() time.Time
	trustAddrs bool // hand out heartbeat addresses without probing them
}

// withDefaults checks cfg and fills its defaults.
func (cfg Config) withDefaults() (Config, error) {
	zone := strings.ToLower(dns.Fqdn(strings.TrimSpace(cfg.Zone)))
	if cfg.Zone == "" || zone == "." {
		return cfg, errors.New("dnsroute: no zone")
	}
	if _, ok := dns.IsDomainName(zone); !ok {
		return cfg, fmt.Errorf("dnsroute: zone %q is not a domain name", cfg.Zone)
	}
	cfg.Zone = zone
	if err := checkBaseURL("origin", cfg.Origin); err != nil {
		return cfg, err
	}
	if cfg.Billing != "" {
		if err := checkBaseURL("billing", cfg.Billing); err != nil {
			return cfg, err
		}
	}
	cfg.Origin = strings.TrimSuffix(cfg.Origin, "/")
	cfg.Billing = strings.TrimSuffix(cfg.Billing, "/")
	if len(cfg.NSAddrs) == 0 {
		cfg.NSAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	for i, a := range cfg.NSAddrs {
		if !a.IsValid() || a.IsUnspecified() {
			return cfg, fmt.Errorf("dnsroute: name server address %v cannot be handed out", a)
		}
		cfg.NSAddrs[i] = a.Unmap()
	}
	if cfg.Edges < 0 || cfg.TTL < 0 || cfg.NamesInterval < 0 || cfg.HeartbeatSkew < 0 || cfg.MaxEdges < 0 {
		return cfg, errors.New("dnsroute: negative edges, ttl, interval, skew or max edges")
	}
	if cfg.ContentProbeTimeout < 0 || cfg.Quarantine < 0 {
		return cfg, fmt.Errorf("dnsroute: content probe timeout %s, quarantine %s: want positive (or 0 for the default)",
			cfg.ContentProbeTimeout, cfg.Quarantine)
	}
	if cfg.BillingEpoch < 0 || cfg.BillingEpoch%time.Second != 0 {
		return cfg, fmt.Errorf("dnsroute: billing epoch %s: want whole seconds", cfg.BillingEpoch)
	}
	cfg.BillingEpoch = cmp.Or(cfg.BillingEpoch, billingapi.DefaultEpoch)
	cfg.Edges = cmp.Or(cfg.Edges, DefaultEdges)
	cfg.TTL = cmp.Or(cfg.TTL, DefaultTTL)
	if cfg.TTL < time.Second || cfg.TTL > 24*time.Hour {
		return cfg, fmt.Errorf("dnsroute: ttl %s: want 1s to a day", cfg.TTL)
	}
	cfg.NamesInterval = cmp.Or(cfg.NamesInterval, DefaultNamesInterval)
	cfg.HeartbeatSkew = cmp.Or(cfg.HeartbeatSkew, DefaultHeartbeatSkew)
	cfg.MaxEdges = cmp.Or(cfg.MaxEdges, DefaultMaxEdges)
	cfg.RRLRate = cmp.Or(cfg.RRLRate, DefaultRRLRate)
	cfg.ContentProbeInterval = cmp.Or(cfg.ContentProbeInterval, DefaultContentProbeInterval)
	cfg.ContentProbeTimeout = cmp.Or(cfg.ContentProbeTimeout, DefaultContentProbeTimeout)
	cfg.Quarantine = cmp.Or(cfg.Quarantine, DefaultQuarantine)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: max(5*time.Second, cfg.ContentProbeTimeout)}
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return cfg, nil
}

func checkBaseURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("dnsroute: %s URL %q: %w", what, s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("dnsroute: %s URL %q: want http(s)://HOST[:PORT]", what, s)
	}
	return nil
}
