package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/edge"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves topcdn sites, the path and subdomain gateways and the
// Trustless Gateway responses, from blocks fetched from storage peers (or
// the origin) and verified against their CIDs.
type Handler struct {
	// Origin is the origin's base URL, e.g. http://127.0.0.1:8081. Required.
	Origin string `json:"origin,omitempty"`
	// OriginID pins the origin's peer ID (which signs manifests). Default:
	// asked from the origin when first needed.
	OriginID string `json:"origin_id,omitempty"`
	// Domain is the zone sites live under: NAME.Domain is a site.
	// Default: cdn.test.
	Domain string `json:"domain,omitempty"`
	// MemoryCacheBytes is the edge's memory budget: its caches fill 70%
	// of it, the rest is headroom for requests in flight, and the
	// process's Go memory limit is 90% of the sum of its handlers'
	// budgets (unless GOMEMLIMIT is set). Default: 256 MiB.
	MemoryCacheBytes int64 `json:"memory_cache_bytes,omitempty"`
	// DiskCacheDir enables the disk cache in this directory. Default: none.
	DiskCacheDir string `json:"disk_cache_dir,omitempty"`
	// DiskCacheBytes bounds the disk cache. Default: 1 GiB.
	DiskCacheBytes int64 `json:"disk_cache_bytes,omitempty"`
	// KeyFile holds the edge's key (created if missing). Default: a new
	// key at each start.
	KeyFile string `json:"key_file,omitempty"`
	// DNSLinks are static DNSLink records: host name → /ipfs/… or /ipns/…
	// path, answered without DNS (custom domains). Default: none.
	DNSLinks map[string]string `json:"dnslinks,omitempty"`

	edge   *edge.Edge
	disk   *edge.DiskCache
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.topcdn",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, opens the caches and builds the edge. It does
// not contact the origin.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Domain == "" {
		h.Domain = "cdn.test"
	}
	if h.MemoryCacheBytes == 0 {
		h.MemoryCacheBytes = 256 << 20
	}
	if h.DiskCacheBytes == 0 {
		h.DiskCacheBytes = 1 << 30
	}
	cfg := edge.Config{Origin: h.Origin, Domain: h.Domain, MemoryBytes: int64(float64(h.MemoryCacheBytes) * cacheShare),
		DNSLinks: h.DNSLinks, Logger: h.logger, Registry: ctx.GetMetricsRegistry()}
	var err error
	if h.OriginID != "" {
		if cfg.OriginID, err = peer.Decode(h.OriginID); err != nil {
			return fmt.Errorf("topcdn: origin_id: %w", err)
		}
	}
	if h.KeyFile != "" {
		if cfg.Key, err = identity.LoadOrGenerate(h.KeyFile); err != nil {
			return fmt.Errorf("topcdn: %w", err)
		}
	}
	if h.DiskCacheDir != "" {
		if h.disk, err = edge.OpenDiskCache(h.DiskCacheDir, h.DiskCacheBytes); err != nil {
			return fmt.Errorf("topcdn: %w", err)
		}
		cfg.Disk = h.disk
	}
	if h.edge, err = edge.New(ctx, cfg); err != nil {
		return fmt.Errorf("topcdn: %w", err)
	}
	addBudget(h, h.MemoryCacheBytes, h.logger)
	return nil
}

// Validate checks the configuration.
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
	return nil
}

// Cleanup closes the disk cache and gives back the memory budget.
func (h *Handler) Cleanup() error {
	dropBudget(h, h.logger)
	if h.disk != nil {
		return h.disk.Close()
	}
	return nil
}

// ServeHTTP serves the request from the edge; it never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.edge.ServeHTTP(w, r)
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
