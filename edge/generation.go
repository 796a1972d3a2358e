package edge

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/ipfs/boxo/ipns"
)

// maxGenerations bounds how many sites' generations an edge keeps; a site
// evicted reads as the floor, which only turns hits into misses.
const maxGenerations = 1 << 16

// generations number the changes of named sites, so cached answers can be
// dropped per site without an index of them: every cached answer (a
// response, a resolved name) carries the stamp taken when its request
// started, and is stale once its site changed after that stamp. A request
// that resolved the old version and finishes after the change is so stored
// already stale: no answer of an old version outlives the change.
//
// A site evicted from the bounded map raises the floor every site reads
// as at least, so eviction can only cause misses, never stale hits.
type generations struct {
	seq   atomic.Uint64 // the last generation given out
	mu    sync.RWMutex
	sites *simplelru.LRU[string, uint64] // site key → generation of its last change
	floor uint64                         // under mu
}

func newGenerations() *generations {
	g := &generations{}
	g.sites, _ = simplelru.NewLRU[string, uint64](maxGenerations, func(_ string, gen uint64) {
		g.floor = max(g.floor, gen) // called with mu held
	})
	return g
}

// stamp returns the generation now; an answer started now carries it.
func (g *generations) stamp() uint64 { return g.seq.Load() }

// current reports whether an answer of site stamped at *stamp was made
// after the site's last change, and if so moves the stamp to now, so that
// until the next change its check costs one atomic load.
func (g *generations) current(site string, stamp *atomic.Uint64) bool {
	s, now := stamp.Load(), g.seq.Load()
	if s >= now {
		return true
	}
	g.mu.RLock()
	gen, ok := g.sites.Peek(site)
	if !ok {
		gen = g.floor
	}
	g.mu.RUnlock()
	if s < gen {
		return false
	}
	// Every change up to now is in sites (bump adds under the lock it
	// raised seq in); a later one has a generation above now.
	stamp.CompareAndSwap(s, now)
	return true
}

// bump records a change of each site, and returns its generation.
func (g *generations) bump(sites ...string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen := g.seq.Add(1)
	for _, s := range sites {
		if s != "" {
			g.sites.Add(s, gen)
		}
	}
	return gen
}

// bumpAll records a change of every site (the edge missed changes).
func (g *generations) bumpAll() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen := g.seq.Add(1)
	g.floor = gen
	return gen
}

// siteKey normalizes the name a site is reached by, as the name cache and
// the response cache key it: an IPNS name in its canonical form (k51…,
// whichever encoding the request used), a host name lower-cased without a
// trailing dot.
func siteKey(name string) string {
	if n, err := ipns.NameFromString(name); err == nil {
		return n.String()
	}
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// requestSite returns the named site a request reads and the path within
// it: the host for a site (NAME.DOMAIN) or a DNSLink host, the name for
// {name}.ipns.DOMAIN (an inlined DNSLink label decoded) and for
// /ipns/{name}/… on any other host (the path gateway). Immutable content
// ({cid}.ipfs.DOMAIN, /ipfs/…) has no site: "", as it never changes.
func (e *Edge) requestSite(r *http.Request) (site, sitePath string) {
	host := strings.TrimSuffix(strings.ToLower(hostOnly(requestHost(r))), ".")
	if label, ok := strings.CutSuffix(host, "."+e.cfg.Domain); ok {
		first, kind, nested := strings.Cut(label, ".")
		switch {
		case nested && kind == "ipfs":
			return "", r.URL.Path
		case nested && kind == "ipns":
			return siteKey(inlinedDNSLink(first)), r.URL.Path
		case !nested && first != "ipfs" && first != "ipns":
			return host, r.URL.Path
		}
	}
	if _, ok := e.cfg.DNSLinks[host]; ok {
		return host, r.URL.Path
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/ipns/"); ok {
		name, p, _ := strings.Cut(rest, "/")
		return siteKey(name), "/" + p
	}
	if strings.HasPrefix(r.URL.Path, "/ipfs/") || host == e.cfg.Domain {
		return "", r.URL.Path
	}
	return host, r.URL.Path
}

// inlinedDNSLink decodes a DNSLink name inlined in one DNS label
// (blog-example-org → blog.example.org, "--" a hyphen), as boxo's subdomain
// gateway encodes it; an IPNS name is returned as is.
func inlinedDNSLink(label string) string {
	if _, err := ipns.NameFromString(label); err == nil || !strings.Contains(label, "-") {
		return label
	}
	const placeholder = "\x00"
	s := strings.ReplaceAll(label, "--", placeholder)
	s = strings.ReplaceAll(s, "-", ".")
	return strings.ReplaceAll(s, placeholder, "-")
}
