package dnsroute

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// missedBeats is how many heartbeat intervals an edge may stay silent
// before it leaves the answers.
const missedBeats = 3

// forgetAfter is how long a silent edge stays listed (as unhealthy) before
// the router forgets it.
const forgetAfter = time.Hour

// edge is the router's record of one edge. Guarded by Router.mu.
type edge struct {
	hb        *dnsrouteapi.CheckedHeartbeat
	loc       Location
	located   bool
	lastSeen  time.Time    // when its last heartbeat was accepted
	probeOK   bool         // the last probe succeeded
	probeErr  string       // why the last probe failed
	verified  []netip.Addr // the heartbeat's addresses the last probe reached the edge at
	probing   bool         // a probe is in flight
	nextProbe time.Time
	healthy   bool
	httpsOK   bool   // the last HTTPS probe passed, or the edge has no HTTPS URL
	httpsErr  string // why the last HTTPS probe failed
	stats     *edgeStats
	epochs    []dnsrouteapi.EpochBytes // billing epochs its heartbeats reported, oldest first

	contentOK      bool   // the last content probe passed, or there was nothing to check
	contentErr     string // why the last content probe failed
	contentProbing bool   // a content probe is in flight
	nextContent    time.Time
}

// view freezes what answers need of e.
func (e *edge) view(seed maphash.Seed) *edgeView {
	v := &edgeView{
		peer:    e.hb.Peer,
		hash:    maphash.String(seed, e.hb.Peer),
		loc:     e.loc,
		located: e.located,
		stats:   e.stats,
	}
	for _, a := range e.verified {
		if a.Is4() && !v.v4.IsValid() {
			v.v4 = a
		}
		if a.Is6() && !v.v6.IsValid() {
			v.v6 = a
		}
	}
	if e.hb.Capacity > 0 {
		v.util = e.hb.Load / e.hb.Capacity
	}
	return v
}

// rankKey is what of an edge, besides its health, changes its rank: a
// heartbeat that changes none of it does not rebuild the snapshot.
func (e *edge) rankKey() string {
	util := -1.0
	if e.hb.Capacity > 0 {
		// Load moves all the time; only steps of 5% of capacity re-rank.
		util = math.Round(e.hb.Load / e.hb.Capacity * 20)
	}
	return fmt.Sprintf("%v|%v|%v,%v|%v", e.hb.Addrs, e.located, e.loc.Lat, e.loc.Lon, util)
}

// AcceptHeartbeat verifies and records an edge's signed heartbeat. It
// returns an error wrapping ErrInvalidHeartbeat, ErrForgedHeartbeat,
// ErrEdgeNotAllowed, ErrStaleHeartbeat or ErrReplayedHeartbeat when it
// rejects one. A new edge is probed at once and enters answers when the
// probe succeeds (on Run's next tick).
func (r *Router) AcceptHeartbeat(ctx context.Context, env *identity.Envelope) error {
	err := r.acceptHeartbeat(ctx, env)
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, dnsrouteapi.ErrForgedHeartbeat):
		result = "forged"
	case errors.Is(err, dnsrouteapi.ErrEdgeNotAllowed):
		result = "refused"
	case errors.Is(err, dnsrouteapi.ErrStaleHeartbeat):
		result = "stale"
	case errors.Is(err, dnsrouteapi.ErrReplayedHeartbeat):
		result = "replayed"
	default:
		result = "invalid"
	}
	r.metrics.heartbeats.WithLabelValues(result).Inc()
	return err
}

func (r *Router) acceptHeartbeat(_ context.Context, env *identity.Envelope) error {
	hb, err := dnsrouteapi.OpenHeartbeat(env)
	if err != nil {
		return fmt.Errorf("dnsroute: %w", err)
	}
	if r.allowed != nil && !r.allowed[hb.PeerID] {
		return fmt.Errorf("dnsroute: %w: %s", dnsrouteapi.ErrEdgeNotAllowed, hb.PeerID)
	}
	now := r.cfg.now()
	if d := now.Sub(hb.Time); d > r.cfg.HeartbeatSkew || d < -r.cfg.HeartbeatSkew {
		return fmt.Errorf("dnsroute: %w: heartbeat from %s is %s off the router's clock (allowed: %s)",
			dnsrouteapi.ErrStaleHeartbeat, hb.PeerID, d.Round(time.Millisecond), r.cfg.HeartbeatSkew)
	}
	var loc Location
	located := false
	if hb.Lat != nil {
		loc, located = Location{Lat: *hb.Lat, Lon: *hb.Lon}, true
	} else if r.cfg.GeoIP != nil {
		loc, located = r.cfg.GeoIP.Lookup(hb.IPs[0])
	}
	if hb.City != "" {
		loc.City = hb.City
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	e, known := r.edges[hb.PeerID]
	if known && !hb.Time.After(e.hb.Time) {
		return fmt.Errorf("dnsroute: %w: heartbeat from %s at %s is not newer than the last one (%s)",
			dnsrouteapi.ErrReplayedHeartbeat, hb.PeerID, hb.Time.Format(time.RFC3339Nano), e.hb.Time.Format(time.RFC3339Nano))
	}
	if !known {
		if len(r.edges) >= r.cfg.MaxEdges {
			return fmt.Errorf("dnsroute: %w: tracking %d edges already", dnsrouteapi.ErrEdgeNotAllowed, len(r.edges))
		}
		e = &edge{stats: &edgeStats{counter: r.metrics.answers.WithLabelValues(hb.Peer)}}
		r.edges[hb.PeerID] = e
		r.log.Info("edge registered", zap.String("peer", hb.Peer), zap.Strings("addrs", hb.Addrs), zap.String("url", hb.URL))
	}
	before := ""
	if known {
		before = e.rankKey()
	}
	urlChanged := known && (e.hb.URL != hb.URL || e.hb.HTTPSURL != hb.HTTPSURL || !slices.Equal(e.hb.IPs, hb.IPs))
	e.hb, e.loc, e.located, e.lastSeen = hb, loc, located, now
	e.epochs = observeEpochs(e.epochs, &hb.Heartbeat)
	if !known || urlChanged {
		// Probe the (new) URL and addresses at once; until they answer,
		// the edge is out.
		e.probeOK, e.probeErr, e.verified, e.nextProbe = false, "not probed yet", nil, now
		e.httpsOK, e.httpsErr = true, ""
		if hb.HTTPSURL != "" {
			e.httpsOK, e.httpsErr = false, "not probed yet"
		}
		e.contentOK, e.contentErr, e.nextContent = true, "", now
		if r.cfg.ContentProbeInterval > 0 {
			e.contentOK, e.contentErr = false, "not probed yet"
		}
	}
	if r.updateHealthLocked(e, now) || before != e.rankKey() {
		r.rebuildLocked()
	}
	// A due probe starts on Run's next tick, under Run's context.
	return nil
}

// observeEpochs adds what hb reports of its billing epochs to epochs
// (oldest first, at most dnsrouteapi.MaxEpochs): per epoch the highest byte
// count any heartbeat gave, closed once one reported it as PrevEpoch. The
// highest, because a restarted edge's new process counts an epoch from 0
// while the batch its old process sent for it stands.
func observeEpochs(epochs []dnsrouteapi.EpochBytes, hb *dnsrouteapi.Heartbeat) []dnsrouteapi.EpochBytes {
	set := func(epoch int64, bytes uint64, closed bool) {
		i, found := slices.BinarySearchFunc(epochs, epoch, func(e dnsrouteapi.EpochBytes, t int64) int { return cmp.Compare(e.Epoch, t) })
		if !found {
			epochs = slices.Insert(epochs, i, dnsrouteapi.EpochBytes{Epoch: epoch})
		}
		epochs[i].Bytes = max(epochs[i].Bytes, bytes)
		epochs[i].Closed = epochs[i].Closed || closed
	}
	if hb.PrevEpoch != 0 {
		set(hb.PrevEpoch, hb.PrevEpochBytes, true)
	}
	if hb.Epoch != 0 {
		set(hb.Epoch, hb.EpochBytes, false)
	}
	if n := len(epochs) - dnsrouteapi.MaxEpochs; n > 0 {
		epochs = slices.Delete(epochs, 0, n)
	}
	return epochs
}

// updateHealthLocked recomputes e.healthy and reports whether it changed.
// An edge is healthy when its last health probe and content probe passed,
// its heartbeats are fresh and it is not quarantined.
func (r *Router) updateHealthLocked(e *edge, now time.Time) bool {
	q, held := r.quarantinedLocked(e.hb.PeerID, now)
	fresh := now.Sub(e.lastSeen) <= missedBeats*e.hb.Interval()
	h := e.probeOK && e.contentOK && fresh && !held
	if h == e.healthy {
		return false
	}
	e.healthy = h
	if h {
		r.log.Info("edge healthy", zap.String("peer", e.hb.Peer))
		return true
	}
	var reason string
	switch {
	case held:
		reason = "quarantined until " + q.until.UTC().Format(time.RFC3339) + ": " + q.reason
	case !e.probeOK:
		reason = e.probeErr
	case !e.contentOK:
		reason = e.contentErr
	default:
		reason = fmt.Sprintf("no heartbeat for %s", now.Sub(e.lastSeen).Round(time.Millisecond))
	}
	r.log.Warn("edge unhealthy", zap.String("peer", e.hb.Peer), zap.String("reason", reason))
	return true
}

// checkEdges expires silent edges, ended quarantines and ACME challenge
// records (past their life, or of edges no longer handed out), and starts
// due health and content probes.
func (r *Router) checkEdges(ctx context.Context) {
	now := r.cfg.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireQuarantinesLocked(now)
	changed := false
	for id, e := range r.edges {
		if now.Sub(e.lastSeen) > forgetAfter {
			delete(r.edges, id)
			r.metrics.answers.DeleteLabelValues(e.hb.Peer)
			changed = changed || e.healthy
			continue
		}
		if r.updateHealthLocked(e, now) {
			changed = true
		}
		if !e.probing && e.nextProbe.Compare(now) <= 0 {
			r.startProbeLocked(ctx, e, now)
		}
		if _, held := r.quarantinedLocked(id, now); !held && r.cfg.ContentProbeInterval > 0 &&
			!e.contentProbing && e.nextContent.Compare(now) <= 0 {
			if r.startContentProbeLocked(ctx, e, now) {
				changed = true
			}
		}
	}
	if r.expireChallengesLocked(now) {
		changed = true
	}
	if changed {
		r.rebuildLocked()
	}
}

// startProbeLocked probes e in the background and records the result.
func (r *Router) startProbeLocked(ctx context.Context, e *edge, now time.Time) {
	e.probing = true
	iv := e.hb.Interval()
	e.nextProbe = now.Add(iv)
	url, httpsURL, id, addrs := e.hb.URL, e.hb.HTTPSURL, e.hb.PeerID, e.hb.IPs
	timeout := min(max(iv, 500*time.Millisecond), 5*time.Second)
	go func() {
		err := r.probe(ctx, url, netip.Addr{}, id, timeout)
		var verified []netip.Addr
		if err == nil {
			verified, err = r.verifyAddrs(ctx, url, addrs, id, timeout)
		}
		var httpsErr error
		if err == nil && httpsURL != "" {
			httpsErr = r.probeHTTPS(ctx, httpsURL, verified, id, timeout)
		}
		if ctx.Err() != nil {
			r.mu.Lock()
			e.probing = false
			r.mu.Unlock()
			return // the router is stopping: no verdict
		}
		result := "ok"
		if err != nil {
			result = "error"
		}
		r.metrics.probes.WithLabelValues(result).Inc()
		r.mu.Lock()
		defer r.mu.Unlock()
		e.probing = false
		if r.edges[id] != e || e.hb.URL != url || e.hb.HTTPSURL != httpsURL || !slices.Equal(e.hb.IPs, addrs) {
			return // forgotten or moved while probing
		}
		if err == nil && httpsURL != "" {
			r.setHTTPSLocked(e, httpsErr)
		}
		if !slices.Equal(e.verified, verified) {
			if len(verified) > 0 {
				r.log.Info("edge addresses verified", zap.String("peer", e.hb.Peer),
					zap.Stringers("handed_out", verified), zap.Strings("listed", e.hb.Addrs))
			}
			e.verified = verified
			r.rebuildLocked()
		}
		e.probeOK = err == nil
		e.probeErr = ""
		if err != nil {
			e.probeErr = err.Error()
		}
		if r.updateHealthLocked(e, r.cfg.now()) {
			r.rebuildLocked()
		}
	}()
}

// verifyAddrs probes the edge's URL through its heartbeat's addresses, in
// order, until one IPv4 and one IPv6 address (what answers hand out)
// answered as the edge, and returns those; an error if none did.
// Browsers are sent to the addresses, not to the URL: an address must
// prove it serves this edge, or any edge could point answers at someone
// else's host. The URL's own address was proven by the probe of the URL.
func (r *Router) verifyAddrs(ctx context.Context, baseURL string, addrs []netip.Addr, id peer.ID, timeout time.Duration) ([]netip.Addr, error) {
	if r.cfg.trustAddrs {
		return addrs, nil
	}
	var urlAddr netip.Addr
	if u, err := url.Parse(baseURL); err == nil {
		urlAddr, _ = netip.ParseAddr(u.Hostname())
	}
	var verified []netip.Addr
	var errs []error
	var has4, has6 bool
	for _, a := range addrs {
		if has4 && has6 {
			break // answers hand out one of each
		}
		if a.Is4() && has4 || a.Is6() && has6 {
			continue
		}
		if a == urlAddr.Unmap() {
			has4, has6 = has4 || a.Is4(), has6 || a.Is6()
			verified = append(verified, a)
			continue
		}
		if err := r.probe(ctx, baseURL, a, id, timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
		verified = append(verified, a)
	}
	if len(verified) == 0 {
		return nil, fmt.Errorf("no address of the heartbeat serves this edge: %w", errors.Join(errs...))
	}
	if len(errs) > 0 {
		r.log.Debug("edge addresses left out of answers", zap.Stringer("peer", id), zap.Error(errors.Join(errs...)))
	}
	return verified, nil
}

// setHTTPSLocked records the outcome of e's HTTPS probe, and rebuilds
// when that changes whether answers hand e out.
func (r *Router) setHTTPSLocked(e *edge, err error) {
	ok, why := err == nil, ""
	if err != nil {
		why = err.Error()
	}
	changed := ok != e.httpsOK
	e.httpsOK, e.httpsErr = ok, why
	if !changed {
		return
	}
	if ok {
		r.log.Info("edge HTTPS verified", zap.String("peer", e.hb.Peer), zap.String("https_url", e.hb.HTTPSURL))
	} else {
		r.log.Warn("edge HTTPS failing", zap.String("peer", e.hb.Peer), zap.String("https_url", e.hb.HTTPSURL), zap.Error(err))
	}
	r.rebuildLocked()
}

// probeHTTPS asks the edge for its health document over HTTPS at each of
// addrs (those answers hand out, where browsers connect), on httpsURL's
// port, for health.ZONE: a name the zone's wildcard certificate covers,
// so that the certificate must verify against RootCAs for the zone's
// names, as browsers verify it.
func (r *Router) probeHTTPS(ctx context.Context, httpsURL string, addrs []netip.Addr, id peer.ID, timeout time.Duration) error {
	u, err := url.Parse(httpsURL)
	if err != nil {
		return fmt.Errorf("https probe: %w", err)
	}
	base := "https://" + net.JoinHostPort("health."+strings.TrimSuffix(r.cfg.Zone, "."), cmp.Or(u.Port(), "443"))
	for _, a := range addrs {
		if err := r.probeWith(ctx, r.httpsClient, base, a, id, timeout); err != nil {
			return fmt.Errorf("https %w", err)
		}
	}
	return nil
}

// dialAddr is the context key of the address addrClient dials.
type dialAddr struct{}

// newAddrClient returns a client like c (its timeout, its transport's TLS
// settings) that dials the address in the request context's dialAddr at
// the URL's port, so that TLS and the Host header still name the URL's
// host. It does not follow redirects.
func newAddrClient(c *http.Client) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if ct, ok := c.Transport.(*http.Transport); ok {
		t = ct.Clone()
	}
	t.DisableKeepAlives = true
	t.Proxy = nil
	d := &net.Dialer{Timeout: 5 * time.Second}
	t.DialContext = func(ctx context.Context, network, hostport string) (net.Conn, error) {
		a, ok := ctx.Value(dialAddr{}).(netip.Addr)
		if !ok {
			return nil, errors.New("dnsroute: address probe without an address")
		}
		_, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
	}
	return &http.Client{Timeout: c.Timeout, Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// probe asks an edge for its health document and checks it names the
// edge: at the URL's host, or through addr when it is valid.
func (r *Router) probe(ctx context.Context, baseURL string, addr netip.Addr, id peer.ID, timeout time.Duration) error {
	client := r.cfg.Client
	if addr.IsValid() {
		client = r.addrClient
	}
	return r.probeWith(ctx, client, baseURL, addr, id, timeout)
}

// probeWith is probe with client, which dials addr when it is valid.
func (r *Router) probeWith(ctx context.Context, client *http.Client, baseURL string, addr netip.Addr, id peer.ID, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimSuffix(baseURL, "/") + dnsrouteapi.HealthPath
	if addr.IsValid() {
		ctx = context.WithValue(ctx, dialAddr{}, addr)
		u += " via " + addr.String()
	}
	var doc struct {
		Peer string `json:"peer"`
	}
	if err := httpkit.GetJSON(ctx, client, strings.TrimSuffix(baseURL, "/")+dnsrouteapi.HealthPath, 4<<10, &doc); err != nil {
		return fmt.Errorf("probe %s: %w", u, err)
	}
	if doc.Peer != id.String() {
		return fmt.Errorf("probe %s: answered by %q, want %s", u, doc.Peer, id)
	}
	return nil
}

// Edges lists the edges the router knows, healthy or not, by peer ID.
func (r *Router) Edges() []dnsrouteapi.EdgeInfo {
	now := r.cfg.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]dnsrouteapi.EdgeInfo, 0, len(r.edges))
	for id, e := range r.edges {
		ei := dnsrouteapi.EdgeInfo{
			Peer: e.hb.Peer, Addrs: e.hb.Addrs, URL: e.hb.URL, HTTPSURL: e.hb.HTTPSURL, City: e.loc.City, Country: e.loc.Country,
			Healthy: e.healthy && e.httpsOK, HTTPSError: e.httpsErr, Load: e.hb.Load, Capacity: e.hb.Capacity, IntervalMS: e.hb.IntervalMS,
			LastHeartbeat: e.lastSeen.UTC(), ProbeError: e.probeErr, ContentError: e.contentErr,
			Answers:  e.stats.answers.Load(),
			Requests: e.hb.Requests, Bytes: e.hb.Bytes, CacheHits: e.hb.CacheHits, CacheMisses: e.hb.CacheMisses,
			Epochs: slices.Clone(e.epochs), Demand: r.demand.of(e.hb.Peer),
		}
		for _, a := range e.verified {
			ei.Verified = append(ei.Verified, a.String())
		}
		if q, held := r.quarantinedLocked(id, now); held {
			until := q.until.UTC()
			ei.Quarantine, ei.QuarantinedUntil = q.reason, &until
		}
		if e.located {
			lat, lon := e.loc.Lat, e.loc.Lon
			ei.Lat, ei.Lon = &lat, &lon
		}
		out = append(out, ei)
	}
	slices.SortFunc(out, func(a, b dnsrouteapi.EdgeInfo) int { return strings.Compare(a.Peer, b.Peer) })
	return out
}
