// Package dashboard serves a web page that shows a topcdn network as a
// publisher or operator sees it: edges with their location, health and
// load, storage peers with their shards and audit results, sites with
// their CID, size and bytes served, ledger balances, and plots of bytes
// served and cache hit ratio over time; and a page per site (#/sites/NAME)
// with its bytes and requests per epoch over 30 days and its top paths.
//
// The page and its script are embedded (no external links); the data
// comes from JSON endpoints (api/state, api/history, api/sites/NAME) that
// gather, server-side, what the origin, the DNS router and billing
// publish over their HTTP APIs.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/tick"
)

//go:embed assets
var assets embed.FS

// Config says where the services are.
type Config struct {
	// Origin is the origin's base URL. Required.
	Origin string
	// Router is the DNS router's HTTP base URL. Default: none (no edges).
	Router string
	// Billing is the billing service's base URL. Default: none.
	Billing string
	// Interval is how often history is sampled. Default: 5 s.
	Interval time.Duration
	// History is how many samples are kept. Default: 720 (an hour at 5 s).
	History int
	// HTTPClient reaches the services. Default: one with a 3 s timeout.
	HTTPClient *http.Client
}

// Dashboard gathers the network's state and serves the page.
type Dashboard struct {
	cfg Config

	mu      sync.Mutex
	samples []Sample
	last    map[string]edgeCounters // per edge, at the previous sample
}

// Sample is one point of the history plots.
type Sample struct {
	Time time.Time `json:"time"`
	// Bytes is how many bytes the edges served since the previous sample.
	Bytes uint64 `json:"bytes"`
	// Requests is how many requests they answered since then.
	Requests uint64 `json:"requests"`
	// HitRatio is the share of block reads served from the edges' caches
	// since then, or -1 if there were none.
	HitRatio float64 `json:"hit_ratio"`
}

type edgeCounters struct {
	Requests, Bytes, Hits, Misses uint64
}

// New returns a dashboard for the services in cfg.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Origin == "" {
		return nil, errors.New("dashboard: Origin is required")
	}
	for _, u := range []*string{&cfg.Origin, &cfg.Router, &cfg.Billing} {
		*u = strings.TrimSuffix(*u, "/")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.History <= 0 {
		cfg.History = 720
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 3 * time.Second}
	}
	return &Dashboard{cfg: cfg, last: map[string]edgeCounters{}}, nil
}

// Handler serves the page and its data. Mount it under a prefix with
// http.StripPrefix, e.g. mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d.Handler())).
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		writeNoStore(w, d.State(r.Context()))
	})
	mux.HandleFunc("GET /api/sites/{name}", d.serveSite)
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		out := append([]Sample{}, d.samples...)
		d.mu.Unlock()
		writeNoStore(w, out)
	})
	return mux
}

// Run samples the edges' counters every Interval until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	tick.NowAndEvery(ctx, d.cfg.Interval, d.sample)
}

// sample adds a history point from the router's view of the edges.
func (d *Dashboard) sample(ctx context.Context) {
	if d.cfg.Router == "" {
		return
	}
	var edges []dnsrouteapi.EdgeInfo
	if err := d.get(ctx, d.cfg.Router+"/api/v1/edges", &edges); err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Sample{Time: time.Now().UTC(), HitRatio: -1}
	var hits, misses uint64
	for _, e := range edges {
		now := edgeCounters{Requests: e.Requests, Bytes: e.Bytes, Hits: e.CacheHits, Misses: e.CacheMisses}
		prev, seen := d.last[e.Peer]
		d.last[e.Peer] = now
		if !seen || now.Requests < prev.Requests { // new, or restarted: no delta yet
			continue
		}
		s.Requests += now.Requests - prev.Requests
		s.Bytes += now.Bytes - prev.Bytes
		hits += now.Hits - min(prev.Hits, now.Hits)
		misses += now.Misses - min(prev.Misses, now.Misses)
	}
	if hits+misses > 0 {
		s.HitRatio = float64(hits) / float64(hits+misses)
	}
	d.samples = append(d.samples, s)
	if len(d.samples) > d.cfg.History {
		d.samples = d.samples[len(d.samples)-d.cfg.History:]
	}
}

// State is everything the page shows at one moment. A service that could
// not be reached is named in Errors; the rest is still shown.
type State struct {
	Time     time.Time              `json:"time"`
	Sites    []Site                 `json:"sites"`
	Edges    []dnsrouteapi.EdgeInfo `json:"edges"`
	Storage  json.RawMessage        `json:"storage"`  // the origin's /api/v1/storage/status
	Accounts json.RawMessage        `json:"accounts"` // billing's /api/v1/accounts
	Errors   map[string]string      `json:"errors,omitempty"`
}

// Site is a published site.
type Site struct {
	Name     string `json:"name"`
	IPNS     string `json:"ipns"`
	CID      string `json:"cid"`
	Sequence uint64 `json:"sequence"`
	Size     int64  `json:"size"` // bytes of content, -1 if not striped yet
	// Served is the bytes billing accepted as served for the site's
	// publisher (the key its IPNS name is), -1 if billing is unknown.
	Served int64 `json:"served"`
}

// State gathers the network's state from the services.
func (d *Dashboard) State(ctx context.Context) State {
	st := State{Time: time.Now().UTC(), Errors: map[string]string{}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		st.Errors[what] = err.Error()
		mu.Unlock()
	}
	wg.Go(func() {
		if err := d.get(ctx, d.cfg.Origin+"/api/v1/names", &st.Sites); err != nil {
			fail("origin", err)
			return
		}
		for i := range st.Sites {
			st.Sites[i].Size = d.siteSize(ctx, st.Sites[i].CID)
		}
	})
	wg.Go(func() {
		if err := d.get(ctx, d.cfg.Origin+"/api/v1/storage/status", &st.Storage); err != nil {
			fail("storage", err)
		}
	})
	if d.cfg.Router != "" {
		wg.Go(func() {
			if err := d.get(ctx, d.cfg.Router+"/api/v1/edges", &st.Edges); err != nil {
				fail("router", err)
			}
		})
	}
	var served []struct {
		Publisher string `json:"publisher"`
		Bytes     int64  `json:"bytes"`
	}
	if d.cfg.Billing != "" {
		wg.Go(func() {
			if err := d.get(ctx, d.cfg.Billing+"/api/v1/accounts", &st.Accounts); err != nil {
				fail("billing", err)
				return
			}
			if err := d.get(ctx, d.cfg.Billing+"/api/v1/served", &served); err != nil {
				fail("billing", err)
			}
		})
	}
	wg.Wait()
	byPublisher := map[string]int64{}
	for _, s := range served {
		byPublisher[s.Publisher] = s.Bytes
	}
	for i, s := range st.Sites {
		st.Sites[i].Served = -1
		if name, err := ipns.NameFromString(s.IPNS); err == nil && d.cfg.Billing != "" && st.Errors["billing"] == "" {
			st.Sites[i].Served = byPublisher[name.Peer().String()]
		}
	}
	if len(st.Errors) == 0 {
		st.Errors = nil
	}
	return st
}

// siteSize sums the segment lengths of a root's signed manifest: the
// bytes of its blocks as striped. -1 if the origin has no manifest for it
// (yet).
func (d *Dashboard) siteSize(ctx context.Context, root string) int64 {
	var env identity.Envelope
	if err := d.get(ctx, d.cfg.Origin+"/api/v1/manifests/"+root, &env); err != nil {
		return -1
	}
	var m erasure.Manifest
	if _, err := env.Open(erasure.TypeManifest, &m); err != nil {
		return -1
	}
	return m.Size()
}

// get fetches url and decodes its JSON answer, at most 16 MiB, into v.
func (d *Dashboard) get(ctx context.Context, url string, v any) error {
	return httpkit.GetJSON(ctx, d.cfg.HTTPClient, url, 16<<20, v)
}

// writeNoStore answers with v as JSON, which the page must not cache.
func writeNoStore(w http.ResponseWriter, v any) {
	w.Header().Set("Cache-Control", "no-store")
	httpkit.WriteJSON(w, http.StatusOK, v)
}
