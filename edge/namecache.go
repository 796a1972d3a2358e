package edge

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/boxo/path"
	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/routing"
)

// keptResolutions bounds the name cache, as boxo's namesys cache was.
const keptResolutions = 4096

// resolution is a name resolved: what /ipns/{name} resolved to, for how
// long, and the generation it was resolved under.
type resolution struct {
	val       path.Path
	ttl       time.Duration
	lastMod   time.Time
	eol       time.Time
	recursion bool   // resolved to the depth limit (a one-hop DNSLink lookup)
	site      string // siteKey of the name
	stamp     atomic.Uint64
}

// nameCache is the edge's name system: boxo's, without its cache, behind a
// cache of our own that a pushed name change can update or drop per name
// (boxo's cannot be invalidated). Entries live for their TTL, as boxo's
// did, so with no pushed changes names expire exactly as before.
type nameCache struct {
	inner namesys.NameSystem
	cache *lru.Cache[string, *resolution] // depth + "\x00" + /ipns/{name}
	gens  *generations
	now   func() time.Time
}

// newResolutionCache returns an empty cache for a nameCache.
func newResolutionCache() *lru.Cache[string, *resolution] {
	c, _ := lru.New[string, *resolution](keptResolutions) // only fails for a size ≤ 0
	return c
}

func newNameCache(inner namesys.NameSystem, cache *lru.Cache[string, *resolution], gens *generations) *nameCache {
	return &nameCache{inner: inner, cache: cache, gens: gens, now: time.Now}
}

// resolutionKey keys a resolution of base (/ipns/{name}) at depth.
func resolutionKey(depth uint, base string) string {
	return strconv.FormatUint(uint64(depth), 10) + "\x00" + base
}

// Resolve resolves p's name from the cache, else through boxo's name
// system, and joins the rest of p to it.
func (n *nameCache) Resolve(ctx context.Context, p path.Path, options ...namesys.ResolveOption) (namesys.Result, error) {
	if !p.Mutable() {
		return n.inner.Resolve(ctx, p, options...)
	}
	segments := p.Segments()
	base, err := path.NewPathFromSegments(segments[0], segments[1])
	if err != nil {
		return namesys.Result{}, err
	}
	depth := namesys.ProcessResolveOptions(options).Depth
	key := resolutionKey(depth, base.String())
	site := siteKey(segments[1])
	now := n.now()
	if r, ok := n.cache.Get(key); ok {
		if now.Before(r.eol) && n.gens.current(r.site, &r.stamp) {
			return r.result(p, min(r.ttl, r.eol.Sub(now)))
		}
		n.cache.Remove(key)
	}
	stamp := n.gens.stamp()
	res, err := n.inner.Resolve(ctx, base, options...)
	recursion := errors.Is(err, namesys.ErrResolveRecursion)
	if err != nil && !recursion {
		return res, err
	}
	r := &resolution{val: res.Path, ttl: res.TTL, lastMod: res.LastMod, recursion: recursion, site: site}
	r.stamp.Store(stamp)
	if res.TTL > 0 && res.Path != nil {
		r.eol = now.Add(res.TTL)
		n.cache.Add(key, r)
	}
	return r.result(p, res.TTL)
}

// result joins the rest of p to the resolved path, as boxo's cache did.
func (r *resolution) result(p path.Path, ttl time.Duration) (namesys.Result, error) {
	out := namesys.Result{TTL: ttl, LastMod: r.lastMod}
	if r.val == nil {
		return out, namesys.ErrResolveFailed
	}
	// As boxo's joinPaths: the rest of p, and its trailing slash.
	rest := p.Segments()[2:]
	if strings.HasSuffix(p.String(), "/") {
		rest = append(rest, "")
	}
	out.Path = r.val
	if len(rest) > 0 {
		joined, err := path.Join(r.val, rest...)
		if err != nil {
			return out, err
		}
		out.Path = joined
	}
	if r.recursion {
		return out, namesys.ErrResolveRecursion
	}
	return out, nil
}

// set makes /ipns/{name} resolve to val (fully, and at depth 1 to hop when
// hop is not nil) for ttl, under generation stamp: a pushed change, so
// the next request needs no round trip to the origin.
func (n *nameCache) set(name string, val, hop path.Path, ttl time.Duration, stamp uint64) {
	base := "/ipns/" + name
	site := siteKey(name)
	eol := n.now().Add(ttl)
	full := &resolution{val: val, ttl: ttl, lastMod: n.now(), eol: eol, site: site}
	full.stamp.Store(stamp)
	n.cache.Add(resolutionKey(namesys.DefaultDepthLimit, base), full)
	if hop != nil {
		one := &resolution{val: hop, ttl: ttl, lastMod: n.now(), eol: eol, recursion: true, site: site}
		one.stamp.Store(stamp)
		n.cache.Add(resolutionKey(1, base), one)
	}
}

// drop forgets every resolution of name.
func (n *nameCache) drop(name string) {
	base := "\x00/ipns/" + name
	for _, k := range n.cache.Keys() {
		if strings.HasSuffix(k, base) {
			n.cache.Remove(k)
		}
	}
}

// ResolveAsync sends Resolve's answer.
func (n *nameCache) ResolveAsync(ctx context.Context, p path.Path, options ...namesys.ResolveOption) <-chan namesys.AsyncResult {
	out := make(chan namesys.AsyncResult, 1)
	res, err := n.Resolve(ctx, p, options...)
	out <- namesys.AsyncResult{Path: res.Path, TTL: res.TTL, LastMod: res.LastMod, Err: err}
	close(out)
	return out
}

// Publish is not for edges: names are published at the origin.
func (n *nameCache) Publish(context.Context, ci.PrivKey, path.Path, ...namesys.PublishOption) error {
	return routing.ErrNotSupported
}

var _ namesys.NameSystem = (*nameCache)(nil)
