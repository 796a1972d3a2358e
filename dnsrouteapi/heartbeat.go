package dnsrouteapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// TypeHeartbeat is the identity.Envelope type of an edge heartbeat.
const TypeHeartbeat = "topcdn/edge-heartbeat/v1"

// HeartbeatPath is where a router takes edge heartbeats: POST, body a JSON
// identity.Envelope of TypeHeartbeat signed by the edge.
const HeartbeatPath = "/api/v1/edges/heartbeat"

// EdgesPath lists the edges a router knows (GET, JSON []EdgeInfo).
const EdgesPath = "/api/v1/edges"

// HealthPath is the path, under an edge's URL, that the router probes: the
// edge answers 200 with JSON {"peer":"12D3…"} naming itself.
const HealthPath = "/.well-known/topcdn/health"

// DefaultHeartbeatInterval is the time between two heartbeats of an edge
// configured without one (caddymodule's heartbeat_interval).
const DefaultHeartbeatInterval = 10 * time.Second

// Limits on what one heartbeat may carry.
const (
	// MaxHeartbeatBody bounds the JSON envelope of one heartbeat.
	MaxHeartbeatBody = 64 << 10
	maxAddrs         = 16
	maxCityLen       = 100
	minInterval      = 50 * time.Millisecond
	maxInterval      = 10 * time.Minute
)

// Heartbeat is what an edge reports about itself, signed with its key as
// an identity.Envelope of TypeHeartbeat.
type Heartbeat struct {
	// Peer is the edge's peer ID; it must equal the envelope's signer.
	Peer string `json:"peer"`
	// Addrs are the public IP addresses handed out in A/AAAA answers, e.g.
	// "127.1.0.1" or "2001:db8::1"; 1 to 16 of them.
	Addrs []string `json:"addrs"`
	// URL is the edge's HTTP base URL, e.g. "http://127.1.0.1:8080"; the
	// router probes URL + HealthPath.
	URL string `json:"url"`
	// HTTPSURL is the edge's HTTPS base URL, e.g.
	// "https://127.1.0.1:8443", optional. The router then also probes
	// HealthPath over HTTPS, at each address it hands out, on this URL's
	// port with SNI and Host "health.ZONE" (a name the zone's wildcard
	// certificate covers), verifying the certificate; an edge whose probe
	// fails is not handed out.
	HTTPSURL string `json:"https_url,omitempty"`
	// City is a display name for where the edge is, optional.
	City string `json:"city,omitempty"`
	// Lat and Lon are the edge's location in degrees, both or neither. When
	// absent the router looks Addrs[0] up in its GeoIP database.
	Lat *float64 `json:"lat,omitempty"`
	Lon *float64 `json:"lon,omitempty"`
	// Load is the requests per second the edge served recently.
	Load float64 `json:"load"`
	// Capacity is the requests per second the edge can serve; 0 means
	// unknown (the edge is then ranked by distance alone).
	Capacity float64 `json:"capacity"`
	// IntervalMS is the time between two heartbeats of this edge in
	// milliseconds. The router probes the edge as often, and drops it from
	// answers after 3 intervals without a heartbeat.
	IntervalMS int64 `json:"interval_ms"`
	// Time is when the heartbeat was made. It must be within the router's
	// skew of its clock and later than the last heartbeat accepted.
	Time time.Time `json:"time"`
	// Requests, Bytes, CacheHits and CacheMisses are the edge's running
	// totals since it started: responses sent, body bytes sent, reads
	// served from its caches and reads fetched upstream. Optional; the
	// router only passes them on (GET /api/v1/edges), for dashboards.
	Requests    uint64 `json:"requests,omitempty"`
	Bytes       uint64 `json:"bytes,omitempty"`
	CacheHits   uint64 `json:"cache_hits,omitempty"`
	CacheMisses uint64 `json:"cache_misses,omitempty"`
	// Epoch and EpochBytes are the billing epoch the edge's receipt
	// reporter has open (its start, Unix seconds) and the body bytes of
	// its records so far; PrevEpoch and PrevEpochBytes the last epoch it
	// closed and the bytes of the batches it signed for it (see
	// billingapi.EpochTotals). Billing pays an edge no more for an epoch
	// than these say; an edge that reports none is paid nothing.
	// Optional; zero when the edge reports no receipts.
	Epoch          int64  `json:"epoch,omitempty"`
	EpochBytes     uint64 `json:"epoch_bytes,omitempty"`
	PrevEpoch      int64  `json:"prev_epoch,omitempty"`
	PrevEpochBytes uint64 `json:"prev_epoch_bytes,omitempty"`
}

// Interval returns the heartbeat interval as a duration.
func (hb *Heartbeat) Interval() time.Duration {
	return time.Duration(hb.IntervalMS) * time.Millisecond
}

// Errors of a rejected heartbeat; AcceptHeartbeat wraps one of them and the
// HTTP API maps them to status codes.
var (
	// ErrInvalidHeartbeat marks a malformed heartbeat (400).
	ErrInvalidHeartbeat = errors.New("invalid heartbeat")
	// ErrForgedHeartbeat marks a heartbeat whose signature does not verify
	// or whose peer is not its signer (403).
	ErrForgedHeartbeat = errors.New("forged heartbeat")
	// ErrEdgeNotAllowed marks a heartbeat from an edge not on the allow
	// list (403).
	ErrEdgeNotAllowed = errors.New("edge not allowed")
	// ErrStaleHeartbeat marks a heartbeat whose time is too far from the
	// router's clock (422).
	ErrStaleHeartbeat = errors.New("stale heartbeat")
	// ErrReplayedHeartbeat marks a heartbeat not newer than the last one
	// accepted from the same edge (409).
	ErrReplayedHeartbeat = errors.New("replayed heartbeat")
)

// CheckedHeartbeat is a heartbeat that passed OpenHeartbeat, parsed.
type CheckedHeartbeat struct {
	Heartbeat
	// PeerID is the edge, the envelope's signer.
	PeerID peer.ID
	// IPs are Addrs parsed, unmapped, in order.
	IPs []netip.Addr
}

// OpenHeartbeat verifies env and validates the heartbeat it carries: the
// signature, the peer being the signer, and every field's form and bounds.
// It checks everything that does not depend on a router's state (time skew,
// replays and allow lists are the router's).
func OpenHeartbeat(env *identity.Envelope) (*CheckedHeartbeat, error) {
	var hb Heartbeat
	signer, err := env.Open(TypeHeartbeat, &hb)
	if err != nil {
		if errors.Is(err, identity.ErrBadSignature) {
			return nil, fmt.Errorf("%w: %w", ErrForgedHeartbeat, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidHeartbeat, err)
	}
	p, err := peer.Decode(hb.Peer)
	if err != nil {
		return nil, fmt.Errorf("%w: peer %q: %w", ErrInvalidHeartbeat, hb.Peer, err)
	}
	if p != signer {
		return nil, fmt.Errorf("%w: heartbeat for %s signed by %s", ErrForgedHeartbeat, p, signer)
	}
	c := &CheckedHeartbeat{Heartbeat: hb, PeerID: p}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidHeartbeat, p, err)
	}
	return c, nil
}

// validate checks the fields of a heartbeat and parses its addresses.
func (c *CheckedHeartbeat) validate() error {
	if len(c.Addrs) == 0 || len(c.Addrs) > maxAddrs {
		return fmt.Errorf("%d addrs, want 1 to %d", len(c.Addrs), maxAddrs)
	}
	for _, s := range c.Addrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("addr %q is not an IP address: %w", s, err)
		}
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("addr %q cannot be handed out", s)
		}
		c.IPs = append(c.IPs, a.Unmap())
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url %q: %w", c.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("url %q is not an http(s) base URL", c.URL)
	}
	if c.HTTPSURL != "" {
		u, err := url.Parse(c.HTTPSURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
			strings.Trim(u.Path, "/") != "" {
			return fmt.Errorf("https_url %q is not an https base URL", c.HTTPSURL)
		}
	}
	if len(c.City) > maxCityLen || strings.ContainsFunc(c.City, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("city %q: want at most %d printable characters", c.City, maxCityLen)
	}
	if (c.Lat == nil) != (c.Lon == nil) {
		return errors.New("lat and lon come together")
	}
	if c.Lat != nil && !(*c.Lat >= -90 && *c.Lat <= 90 && *c.Lon >= -180 && *c.Lon <= 180) {
		return fmt.Errorf("location %v,%v: want latitude in [-90,90] and longitude in [-180,180]", *c.Lat, *c.Lon)
	}
	if !finiteNonNeg(c.Load) || !finiteNonNeg(c.Capacity) {
		return fmt.Errorf("load %v, capacity %v: want finite and not negative", c.Load, c.Capacity)
	}
	if iv := c.Interval(); iv < minInterval || iv > maxInterval {
		return fmt.Errorf("interval %dms: want %s to %s", c.IntervalMS, minInterval, maxInterval)
	}
	if c.Time.IsZero() {
		return errors.New("no time")
	}
	switch {
	case c.Epoch < 0 || c.PrevEpoch < 0:
		return fmt.Errorf("epochs %d, %d: want Unix seconds", c.Epoch, c.PrevEpoch)
	case c.Epoch == 0 && (c.EpochBytes != 0 || c.PrevEpoch != 0):
		return errors.New("epoch bytes without an epoch")
	case c.PrevEpoch == 0 && c.PrevEpochBytes != 0:
		return errors.New("prev_epoch_bytes without a prev_epoch")
	case c.PrevEpoch != 0 && c.PrevEpoch >= c.Epoch:
		return fmt.Errorf("prev_epoch %d not before epoch %d", c.PrevEpoch, c.Epoch)
	}
	return nil
}

func finiteNonNeg(f float64) bool { return f >= 0 && !math.IsInf(f, 1) }

// SendHeartbeat signs hb with key and posts it to the router at routerURL
// (its HTTP base URL, e.g. "http://127.0.0.1:8053"). It fills hb.Peer from
// the key and hb.Time with the current time when they are empty. A router
// that rejects the heartbeat yields a *httpkit.ResponseError, wrapped,
// carrying its status and message.
func SendHeartbeat(ctx context.Context, c *http.Client, routerURL string, key *identity.Key, hb Heartbeat) error {
	if hb.Peer == "" {
		hb.Peer = key.ID.String()
	}
	if hb.Time.IsZero() {
		hb.Time = time.Now().UTC()
	}
	env, err := key.Sign(TypeHeartbeat, hb)
	if err != nil {
		return fmt.Errorf("dnsrouteapi: heartbeat: %w", err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("dnsrouteapi: heartbeat: %w", err)
	}
	u := strings.TrimSuffix(routerURL, "/") + HeartbeatPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("dnsrouteapi: heartbeat: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if _, err := httpkit.Do(c, req, 4<<10); err != nil {
		return fmt.Errorf("dnsrouteapi: heartbeat: %w", err)
	}
	return nil
}
