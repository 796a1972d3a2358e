package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/customdomain"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Custom domains: a publisher's own host, outside the zone, whose
// DNSLink (read through real DNS, Config.Resolver) names a key the origin
// publishes. The edge serves it with no config change, and its on-demand
// TLS permission (AllowCertificate) approves a certificate for it only
// when the challenge delegation is in place too (customdomain.Check).
const (
	// DefaultPermissionClientRate bounds the permission checks one client
	// network (its /24 or /56) may cause, per second:
	// Config.PermissionClientRate.
	DefaultPermissionClientRate = 2
	// DefaultPermissionClientBurst is how many checks a client network
	// may cause at once, before its rate applies.
	DefaultPermissionClientBurst = 5
	// DefaultPermissionRate bounds the permission checks of the whole
	// edge, per second (its burst is as large): Config.PermissionRate.
	DefaultPermissionRate = 20
	// DefaultPermissionInFlight bounds the checks under way at once.
	DefaultPermissionInFlight = 16

	// domainDenyTTL is how long a refused host stays refused without a
	// lookup; domainErrorTTL, a host whose lookup failed (no verdict).
	domainDenyTTL  = time.Minute
	domainErrorTTL = 10 * time.Second
	// domainMaxTTL caps how long an approval is kept (it is also capped
	// by the DNSLink's TTL).
	domainMaxTTL = 5 * time.Minute
	// domainHosts bounds the hosts remembered, approved or refused;
	// domainClients, the client networks rate-limited.
	domainHosts   = 64 << 10
	domainClients = 16 << 10
	// domainCheckTimeout bounds one check: the lookups and the origin's
	// answer.
	domainCheckTimeout = 5 * time.Second
)

// Errors of AllowCertificate besides customdomain's (ErrBadHost,
// ErrInZone, ErrNoDNSLink, ErrNoDelegation).
var (
	// ErrUnpublished marks a host whose DNSLink names a key the origin
	// does not publish.
	ErrUnpublished = errors.New("the DNSLink's key is not published")
	// ErrCheckLimited marks a check refused by the rate limits: it cost
	// no lookup, and the host may ask again later.
	ErrCheckLimited = errors.New("too many certificate checks")
	// ErrNoCustomDomains marks a host outside the zone on an edge with no
	// Config.Resolver.
	ErrNoCustomDomains = errors.New("custom domains are off (no resolver)")
)

// domains is the edge's custom-domain state: verdicts by host, the rate
// limits and the checks under way.
type domains struct {
	resolver customdomain.Resolver // nil: custom domains off
	zone     string
	verdicts *lru.Cache[string, verdict]
	keys     *lru.Cache[string, ipns.Name] // served custom hosts → their key, for billing
	clients  *lru.Cache[netip.Prefix, *rate.Limiter]
	clientMu sync.Mutex // makes a client's limiter once
	global   *rate.Limiter
	inFlight chan struct{}
	flights  singleflight.Group
	results  *prometheus.CounterVec
	clientR  rate.Limit
	clientB  int

	// Testing.
	now func() time.Time
}

// verdict is what a check found for a host, until expires. err == nil:
// approved, with link; a customdomain sentinel
// or ErrUnpublished: refused; anything else: no verdict (lookup failed).
type verdict struct {
	link    customdomain.Link
	err     error
	expires time.Time
}

// certKey is the key of a certificate's verdict (the delegation checked
// too) in domains.verdicts; a host alone keys serving's.
func certKey(h string) string { return "cert " + h }

// live returns the verdict kept under key, if it has not expired.
func (d *domains) live(key string, now time.Time) (verdict, bool) {
	v, ok := d.verdicts.Get(key)
	if !ok || !now.Before(v.expires) {
		return verdict{}, false
	}
	return v, true
}

func newDomains(cfg Config, results *prometheus.CounterVec) *domains {
	d := &domains{resolver: cfg.Resolver, zone: cfg.Domain, results: results, now: time.Now,
		global:   rate.NewLimiter(rate.Limit(cfg.PermissionRate), cfg.PermissionRate),
		inFlight: make(chan struct{}, DefaultPermissionInFlight),
		clientR:  rate.Limit(cfg.PermissionClientRate), clientB: DefaultPermissionClientBurst}
	d.verdicts, _ = lru.New[string, verdict](domainHosts)
	d.keys, _ = lru.New[string, ipns.Name](domainHosts)
	d.clients, _ = lru.New[netip.Prefix, *rate.Limiter](domainClients)
	return d
}

// AllowCertificate reports whether the edge may obtain a certificate for
// host, on demand, during a TLS handshake from client (the zero Addr when
// unknown): nil if host is a custom domain (customdomain.Check) whose key
// the origin publishes. It asks the cheapest questions first, so that a
// flood of made-up names costs no DNS lookup and no ACME order: the name's
// syntax and zone, the verdicts of the last minute, the client's and the
// edge's rate limits, and only then DNS and the origin. Every call counts
// once in topcdn_edge_tls_permission_total by result.
func (e *Edge) AllowCertificate(ctx context.Context, host string, client netip.Addr) error {
	result, err := e.domains.allow(ctx, host, client, e.published)
	e.domains.results.WithLabelValues(result).Inc()
	if err != nil {
		e.log.Debug("certificate refused", zap.String("host", host), zap.Stringer("client", client), zap.String("result", result), zap.Error(err))
		return fmt.Errorf("edge: certificate for %q: %w", host, err)
	}
	return nil
}

// allow is AllowCertificate, returning its metric label.
func (d *domains) allow(ctx context.Context, host string, client netip.Addr, published func(context.Context, ipns.Name) error) (string, error) {
	h, err := customdomain.Host(host, d.zone)
	if err != nil {
		return permissionResult(err), err
	}
	if d.resolver == nil {
		return "off", ErrNoCustomDomains
	}
	now := d.now()
	if v, ok := d.live(certKey(h), now); ok {
		if v.err != nil {
			return "cached_deny", v.err
		}
		return "allowed", nil
	}
	if v, ok := d.live(h, now); ok && refusal(v.err) {
		return "cached_deny", v.err // no DNSLink, or an unpublished key: no certificate either
	}
	if !d.clientLimiter(client).AllowN(now, 1) {
		return "limited", fmt.Errorf("%w: from %s", ErrCheckLimited, client)
	}
	v, err := d.check(ctx, h, true, published)
	if err != nil {
		return permissionResult(err), err
	}
	return permissionResult(v.err), v.err
}

// check finds a verdict for h, one check at a time per host, within the
// edge's rate and in-flight limits; full says to check the challenge
// delegation too (a certificate), not only the DNSLink (serving).
func (d *domains) check(ctx context.Context, h string, full bool, published func(context.Context, ipns.Name) error) (verdict, error) {
	key := h
	if full {
		key = certKey(h)
	}
	ch := d.flights.DoChan(key, func() (any, error) {
		if !d.global.Allow() {
			return verdict{}, fmt.Errorf("%w: the edge's %v a second", ErrCheckLimited, d.global.Limit())
		}
		select {
		case d.inFlight <- struct{}{}:
			defer func() { <-d.inFlight }()
		default:
			return verdict{}, fmt.Errorf("%w: %d checks under way", ErrCheckLimited, cap(d.inFlight))
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), domainCheckTimeout)
		defer cancel()
		var link customdomain.Link
		var err error
		if full {
			link, err = customdomain.Check(cctx, d.resolver, h, d.zone)
		} else {
			link, err = customdomain.LookupDNSLink(cctx, d.resolver, h)
		}
		if err == nil {
			err = published(cctx, link.Key)
		}
		now := d.now()
		v := verdict{link: link, err: err}
		switch {
		case err == nil:
			v.expires = now.Add(min(max(link.TTL, time.Second), domainMaxTTL))
			d.keys.Add(h, link.Key)
		case refusal(err):
			v.expires = now.Add(domainDenyTTL)
		default:
			v.expires = now.Add(domainErrorTTL)
		}
		d.verdicts.Add(key, v)
		return v, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return verdict{}, res.Err
		}
		return res.Val.(verdict), nil
	case <-ctx.Done():
		return verdict{}, fmt.Errorf("checking %s: %w", h, ctx.Err())
	}
}

// clientLimiter returns the rate limiter of client's network: its /24
// (IPv4) or /56 (IPv6).
func (d *domains) clientLimiter(client netip.Addr) *rate.Limiter {
	bits := 56
	if client.Unmap().Is4() {
		client, bits = client.Unmap(), 24
	}
	p, _ := client.Prefix(bits) // the zero Addr: the zero Prefix, one limiter for the unknown
	d.clientMu.Lock()
	defer d.clientMu.Unlock()
	l, ok := d.clients.Get(p)
	if !ok {
		l = rate.NewLimiter(d.clientR, d.clientB)
		d.clients.Add(p, l)
	}
	return l
}

// refusal reports whether err is a verdict on the host, not a failure to
// reach one.
func refusal(err error) bool {
	for _, s := range []error{customdomain.ErrBadHost, customdomain.ErrInZone, customdomain.ErrNoDNSLink,
		customdomain.ErrNoDelegation, ErrUnpublished} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// permissionResult is the metric label of a check's outcome.
func permissionResult(err error) string {
	switch {
	case err == nil:
		return "allowed"
	case errors.Is(err, customdomain.ErrInZone):
		return "in_zone"
	case errors.Is(err, customdomain.ErrBadHost):
		return "bad_host"
	case errors.Is(err, customdomain.ErrNoDNSLink):
		return "no_dnslink"
	case errors.Is(err, customdomain.ErrNoDelegation):
		return "no_delegation"
	case errors.Is(err, ErrUnpublished):
		return "unpublished"
	case errors.Is(err, ErrCheckLimited):
		return "limited"
	default:
		return "error"
	}
}

// published checks that the origin publishes key: it has a valid IPNS
// record for it (or the edge kept one).
func (e *Edge) published(ctx context.Context, key ipns.Name) error {
	_, err := e.records.GetValue(ctx, string(key.RoutingKey()))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, routing.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrUnpublished, key)
	default:
		return fmt.Errorf("is %s published: %w", key, err)
	}
}

// customLink answers the DNSLink lookup of a custom host (outside the
// zone, not a static record): dnslink=/ipns/KEY when its DNSLink, through
// real DNS, names a key the origin publishes. Serving needs no challenge
// delegation; a refused host is 404.
func (e *Edge) customLink(ctx context.Context, host string) ([]string, time.Duration, error) {
	d := e.domains
	h, err := customdomain.Host(host, d.zone)
	if err == nil && d.resolver == nil {
		err = ErrNoCustomDomains
	}
	if err != nil {
		return nil, 0, fmt.Errorf("edge: %w", gateway.NewErrorStatusCode(err, http.StatusNotFound))
	}
	now := d.now()
	v, ok := d.live(h, now)
	if cv, cok := d.live(certKey(h), now); !ok && cok && cv.err == nil {
		v, ok = cv, true // a certificate's approval covers serving
	}
	if !ok {
		if v, err = d.check(ctx, h, false, e.published); err != nil {
			return nil, 0, fmt.Errorf("edge: %w", gateway.NewErrorStatusCode(err, http.StatusServiceUnavailable))
		}
	}
	switch {
	case v.err == nil:
		return []string{"dnslink=/ipns/" + v.link.Key.String()}, max(v.expires.Sub(now), time.Second), nil
	case refusal(v.err):
		return nil, 0, fmt.Errorf("edge: %w", gateway.NewErrorStatusCode(v.err, http.StatusNotFound))
	default:
		return nil, 0, fmt.Errorf("edge: %w", gateway.NewErrorStatusCode(v.err, http.StatusBadGateway))
	}
}

// customKey returns the key a custom host was last served for.
func (e *Edge) customKey(host string) (ipns.Name, bool) {
	return e.domains.keys.Get(strings.ToLower(strings.TrimSuffix(hostOnly(host), ".")))
}
