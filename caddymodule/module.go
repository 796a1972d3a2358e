package caddymodule

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/edge"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves topcdn sites, the path and subdomain gateways and the
// Trustless Gateway responses, from blocks fetched from storage peers (or
// the origin) and verified against their CIDs. The zero value of a field
// means its default; Validate refuses negative sizes, durations and
// capacity.
type Handler struct {
	// Origin is the origin's base URL, e.g. http://127.0.0.1:8081. Required.
	Origin string `json:"origin,omitempty"`
	// OriginID pins the origin's peer ID (which signs manifests). Default:
	// asked from the origin when first needed.
	OriginID string `json:"origin_id,omitempty"`
	// Domain is the zone sites live under: NAME.Domain is a site.
	// Default: edge.DefaultDomain (cdn.test).
	Domain string `json:"domain,omitempty"`
	// MemoryCacheBytes is the edge's memory budget: its caches fill 70%
	// of it, the rest is headroom for requests in flight. The process's
	// Go memory limit should follow the sum of its handlers' budgets
	// (MemoryBudget): `topcdn edge` sets it to 90% of that sum; a stock
	// Caddy build needs GOMEMLIMIT (see the package doc). Default:
	// edge.DefaultMemoryBytes (256 MiB).
	MemoryCacheBytes int64 `json:"memory_cache_bytes,omitempty"`
	// DiskCacheDir enables the disk cache in this directory. Default: none.
	DiskCacheDir string `json:"disk_cache_dir,omitempty"`
	// DiskCacheBytes bounds the disk cache. Default:
	// edge.DefaultDiskCacheBytes (1 GiB).
	DiskCacheBytes int64 `json:"disk_cache_bytes,omitempty"`
	// KeyFile holds the edge's key, its identity, which billing pays
	// (created at the first start if missing). Default: edge.key in the
	// topcdn directory of Caddy's data directory (caddy.AppDataDir()),
	// e.g. ~/.local/share/caddy/topcdn/edge.key.
	KeyFile string `json:"key_file,omitempty"`
	// DNSLinks are static DNSLink records: host name → /ipfs/… or /ipns/…
	// path, answered without DNS (custom domains). Default: none.
	DNSLinks map[string]string `json:"dnslinks,omitempty"`

	// Router is the DNS router's HTTP base URL: the edge sends it signed
	// heartbeats (address, location, load) so the router hands it out to
	// nearby browsers. Default: none (no heartbeats).
	Router string `json:"router,omitempty"`
	// PublicURL is the edge's URL as browsers and the router's probe reach
	// it, e.g. http://203.0.113.7:80. Required with Router.
	PublicURL string `json:"public_url,omitempty"`
	// PublicAddrs are the IP addresses the router hands out for the edge.
	// Default: PublicURL's host, when it is an IP address.
	PublicAddrs []string `json:"public_addrs,omitempty"`
	// City names where the edge is, for people. Default: none.
	City string `json:"city,omitempty"`
	// Location is where the edge is, "LAT,LON" in degrees. Default: the
	// router looks the address up in its geo database.
	Location string `json:"location,omitempty"`
	// Capacity is the requests per second the edge can serve, reported to
	// the router, which weighs load against it. Default: 0 (unknown).
	Capacity float64 `json:"capacity,omitempty"`
	// HeartbeatInterval is the time between two heartbeats. Default:
	// dnsrouteapi.DefaultHeartbeatInterval (10s).
	HeartbeatInterval caddy.Duration `json:"heartbeat_interval,omitempty"`
	// Billing is the billing service's base URL: the edge reports what it
	// serves there, in signed per-epoch batches, to be paid. Default: none.
	Billing string `json:"billing,omitempty"`
	// BillingEpoch is billing's epoch, whole seconds; it must be the one
	// the billing service runs with. Default: billingapi.DefaultEpoch (1m),
	// billing's default.
	BillingEpoch caddy.Duration `json:"billing_epoch,omitempty"`
	// NameStream, when false, turns off following the origin's stream of
	// name changes: names then change on the edge only as their TTLs run
	// out. Default: on (changes and purges reach the edge within a round
	// trip).
	NameStream *bool `json:"name_stream,omitempty"`
	// HTTPSPort is the port browsers reach the edge's HTTPS sites at
	// (Caddy's https_port, unless the edge is behind a port mapping).
	// When set, plain-HTTP requests are redirected there (308), except
	// the health path and requests for an IP address or public_url's
	// host, which the router and billing probe; and heartbeats report
	// https://HOST:PORT, HOST being public_url's, as the edge's HTTPS URL.
	// Default: 0, no redirect and no HTTPS URL.
	HTTPSPort int `json:"https_port,omitempty"`

	logger   *zap.Logger
	keyPath  string                // KeyFile, or its default
	registry prometheus.Registerer // the config's metrics registry
	run      *handlerRun
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.topcdn",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets the defaults, checks the configuration and a key file
// already there, and registers the handler with the topcdn app, which
// starts it: opens the caches, builds the edge (or shares the one a
// handler configured alike built), creates the key file if missing and
// starts the heartbeats and billing reports. Provision itself writes
// nothing and contacts nobody, as Caddy provisions a config to validate
// it too (caddy validate), and does not start it then. Caddy calls
// Cleanup when Provision or Validate fails, which lets go of what Start
// took.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.Validate(); err != nil {
		return err
	}
	h.keyPath = cmp.Or(h.KeyFile, defaultKeyFile())
	if err := checkKey(h.keyPath); err != nil {
		return err
	}
	h.registry = ctx.GetMetricsRegistry()
	h.run = new(handlerRun)
	app, err := ctx.App("topcdn")
	if err != nil {
		return fmt.Errorf("topcdn: %w", err)
	}
	a := app.(*App)
	a.handlers = append(a.handlers, h)
	return nil
}

// setDefaults gives the zero values their defaults.
func (h *Handler) setDefaults() {
	h.Domain = cmp.Or(h.Domain, edge.DefaultDomain)
	h.MemoryCacheBytes = cmp.Or(h.MemoryCacheBytes, edge.DefaultMemoryBytes)
	h.DiskCacheBytes = cmp.Or(h.DiskCacheBytes, edge.DefaultDiskCacheBytes)
	h.HeartbeatInterval = cmp.Or(h.HeartbeatInterval, caddy.Duration(dnsrouteapi.DefaultHeartbeatInterval))
	h.BillingEpoch = cmp.Or(h.BillingEpoch, caddy.Duration(billingapi.DefaultEpoch))
}

// Validate checks the configuration; it changes nothing.
func (h *Handler) Validate() error {
	u, err := url.Parse(h.Origin)
	if h.Origin == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("topcdn: origin %q: want http(s)://host[:port]", h.Origin)
	}
	if strings.Contains(strings.Trim(h.Domain, "."), "..") || strings.ContainsAny(h.Domain, "/: ") {
		return fmt.Errorf("topcdn: domain %q is not a domain name", h.Domain)
	}
	if h.MemoryCacheBytes < 0 || h.DiskCacheBytes < 0 {
		return errors.New("topcdn: cache sizes cannot be negative")
	}
	if h.HTTPSPort < 0 || h.HTTPSPort > 65535 {
		return fmt.Errorf("topcdn: https_port %d is not a port", h.HTTPSPort)
	}
	if h.HeartbeatInterval < 0 || h.BillingEpoch < 0 {
		return errors.New("topcdn: heartbeat and billing_epoch cannot be negative")
	}
	if !(h.Capacity >= 0) || math.IsInf(h.Capacity, 1) { // NaN fails h.Capacity >= 0
		return fmt.Errorf("topcdn: capacity %v: want requests per second, 0 or more", h.Capacity)
	}
	if h.OriginID != "" {
		if _, err := peer.Decode(h.OriginID); err != nil {
			return fmt.Errorf("topcdn: origin_id: %w", err)
		}
	}
	return h.validateReporting()
}

// Cleanup lets go of the running edge, which stops when no handler of a
// loaded config uses it: its heartbeats stop, billing gets what is left
// to report, and the State and the disk cache are let go of (the disk
// cache is closed when no loaded config uses it).
func (h *Handler) Cleanup() error {
	return h.stop()
}

// ServeHTTP serves the request from the edge; it never calls next. It
// starts the handler if the topcdn app has not yet.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := h.start(); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	h.run.inst.edge.ServeHTTP(w, r)
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
