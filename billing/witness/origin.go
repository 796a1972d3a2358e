package witness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// Object is what billing knows of a published object.
type Object struct {
	// Publisher is who pays for the object: the payer of its root, the
	// publisher who first uploaded the root (or, for a root uploaded
	// before uploads were signed, whose name first pointed at it). A
	// later name pointing at the root never changes it.
	Publisher peer.ID
	// MaxBytes bounds the body bytes of one response for the object: its
	// UnixFS file size or, if larger, the bytes of its DAG.
	MaxBytes int64
	// Root is the root of the site the object was found in, or "" if not
	// known. The upstream-read check groups records by it.
	Root string
}

// Holding is how many shard bytes a storage peer holds for a publisher.
type Holding struct {
	Peer      peer.ID
	Publisher peer.ID
	Bytes     int64
}

// OriginContent learns published content from an origin: who pays for
// each root, where human names pointed and when, shard placements and
// flags from the origin's signed billing log (GET /api/v1/billing/log,
// read incrementally, at most once a second on a miss); each site's blocks
// as a CAR from the trustless gateway (every block verified against its
// CID); shard placement from signed manifests. It caches what it learns.
type OriginContent struct {
	pool    *originapi.Pool
	poolErr error // why pool is nil: a bad base URL
	client  *http.Client

	mu         sync.Mutex
	originIDs  []peer.ID // pinned (WithOriginIDs) or asked
	idsAt      time.Time // when asked; zero: pinned
	logID      int64     // the last event of the billing log applied
	logAt      time.Time // when the log was last read
	roots      map[string]*rootInfo
	names      map[string][]nameSpan // name -> the roots it pointed to, oldest first
	keyNames   map[peer.ID]string    // publisher key -> the name it last moved
	placements map[string][]*Placement
	flags      map[string]time.Time // peer/shard -> its first flag
	sites      map[string]*siteIndex
	blockRoots map[cid.Cid][]string // block -> the indexed roots holding it
	shards     map[string]peer.ID   // shard -> payer
	rootShard  map[string][]string  // striped root -> its shards
	holdings   []Holding
	holdAt     time.Time
	failed     map[string]*indexFailure // root -> why its site could not be indexed, until when

	// Testing.
	now func() time.Time
}

// OriginOption configures an OriginContent.
type OriginOption func(*OriginContent)

// WithClock makes the OriginContent read the time from now, for the
// backoff of roots it could not index (see ObjectAt). If now is nil, it
// is ignored. Default: time.Now.
func WithClock(now func() time.Time) OriginOption {
	return func(o *OriginContent) {
		if now != nil {
			o.now = now
		}
	}
}

// WithPool makes the OriginContent read the origins of pool, failing over
// between them, instead of the one at NewOriginContent's base: the
// network's origins serve one database, and the billing log's IDs are the
// network's, so a switch mid-read loses nothing.
func WithPool(pool *originapi.Pool) OriginOption {
	return func(o *OriginContent) {
		if pool != nil {
			o.pool = pool
		}
	}
}

// WithOriginIDs pins the origins' peer IDs: the keys manifests and
// billing log pages must be signed with. Default: the set the origins'
// /healthz reports, asked once.
func WithOriginIDs(ids ...peer.ID) OriginOption {
	return func(o *OriginContent) {
		for _, id := range ids {
			if id != "" && !slices.Contains(o.originIDs, id) {
				o.originIDs = append(o.originIDs, id)
			}
		}
	}
}

// NewOriginContent returns an OriginContent reading the origin at base
// (see WithPool for several). A nil client is one with a 60 s timeout.
func NewOriginContent(base string, client *http.Client, opts ...OriginOption) *OriginContent {
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	o := &OriginContent{client: client,
		roots: map[string]*rootInfo{}, names: map[string][]nameSpan{}, keyNames: map[peer.ID]string{}, placements: map[string][]*Placement{},
		flags: map[string]time.Time{}, sites: map[string]*siteIndex{}, blockRoots: map[cid.Cid][]string{},
		shards: map[string]peer.ID{}, rootShard: map[string][]string{}, failed: map[string]*indexFailure{}, now: time.Now}
	for _, opt := range opts {
		opt(o)
	}
	if o.pool == nil {
		// A bad base URL fails every request with NewPool's error.
		o.pool, o.poolErr = originapi.NewPool([]string{base})
	}
	return o
}

// siteIndex is what billing keeps of one site's DAG.
type siteIndex struct {
	blocks map[cid.Cid]*blockInfo
}

type blockInfo struct {
	size     int64
	fileSize int64
	links    []cid.Cid
	dagBytes int64 // memo; 0 = not computed
}

// dagSize returns the bytes of the DAG under c (shared blocks counted per
// path: an upper bound).
func (s *siteIndex) dagSize(c cid.Cid, depth int) int64 {
	b := s.blocks[c]
	if b == nil || depth > 64 {
		return 0
	}
	if b.dagBytes > 0 {
		return b.dagBytes
	}
	n := b.size
	for _, l := range b.links {
		n += s.dagSize(l, depth+1)
	}
	b.dagBytes = n
	return n
}

// SiteNames returns the human name each of keys last moved (the name
// events of the origin's billing log), for the keys that moved one. It
// reads the log's new events first if it can; if the origin does not
// answer, it says what it knew.
func (o *OriginContent) SiteNames(ctx context.Context, keys []string) map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.syncLog(ctx, false) // best effort: the names known so far stand
	out := map[string]string{}
	for _, k := range keys {
		p, err := peer.Decode(k)
		if err != nil {
			continue
		}
		if name, ok := o.keyNames[p]; ok {
			out[k] = name
		}
	}
	return out
}

func (o *OriginContent) get(ctx context.Context, path string, accept string) (*http.Response, error) {
	if o.poolErr != nil {
		return nil, fmt.Errorf("origin: %w", o.poolErr)
	}
	var resp *http.Response
	err := o.pool.Do(ctx, func(ctx context.Context, base string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		r, err := o.client.Do(req)
		if err != nil {
			return fmt.Errorf("origin: GET %s: %w", path, err)
		}
		if originapi.UnavailableStatus(r.StatusCode) {
			r.Body.Close()
			return fmt.Errorf("origin: %w", &originapi.StatusError{URL: base + path, Status: r.StatusCode})
		}
		resp = r
		return nil
	})
	return resp, err
}

// getJSON decodes the origin's answer at path, at most 64 MiB, into v. An
// answer other than 2xx is a *httpkit.ResponseError.
func (o *OriginContent) getJSON(ctx context.Context, path string, v any) error {
	if o.poolErr != nil {
		return fmt.Errorf("origin: %w", o.poolErr)
	}
	err := o.pool.Do(ctx, func(ctx context.Context, base string) error {
		return httpkit.GetJSON(ctx, o.client, base+path, 64<<20, v)
	})
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	return nil
}

// Object resolves an object an edge served, whenever it was served: see
// ObjectAt.
func (o *OriginContent) Object(ctx context.Context, name, root, c string) (Object, error) {
	return o.ObjectAt(ctx, name, root, c, time.Time{})
}

// ObjectAt resolves an object an edge served at time at (zero: any time),
// with the CID c inside a site:
//
//   - by name (the site's human name): among the roots the name pointed to
//     around at (from NameSkew before it moved there to its record TTL and
//     NameSkew after it moved away). A record's root must be one of them;
//     without one, the newest holding c.
//   - without a name: its root if that is a root anyone uploaded or named;
//     else, c being a block inside some site (the router's probes fetch
//     /ipfs/<block>), the root holding it that got its payer first.
//
// The object's payer is its root's (see Object.Publisher). An object not
// published is a *billingapi.RejectError with ReasonUnpublished; one only
// a site billing cannot index may hold, ReasonUnindexable (see site).
// Any other error means the origin could not tell now.
func (o *OriginContent) ObjectAt(ctx context.Context, name, root, c string, at time.Time) (Object, error) {
	want, err := cid.Decode(c)
	if err != nil {
		return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("cid %q: %v", c, err)}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var roots []string
	for try := 0; try < 2; try++ {
		if try == 1 {
			if err := o.syncLog(ctx, false); err != nil {
				return Object{}, err
			}
		}
		if roots = o.candidates(name, root, c, at); len(roots) > 0 {
			break
		}
	}
	if len(roots) == 0 && name == "" {
		// Not a root: a block inside a site.
		r, err := o.blockRoot(ctx, want)
		if err != nil {
			return Object{}, err
		}
		if r != "" {
			roots = []string{r}
		}
	}
	if len(roots) == 0 {
		return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished,
			Err: fmt.Errorf("name %q root %q: no such published site at %s", name, root, at.UTC().Format(time.RFC3339))}
	}
	var unindexable error // of the newest candidate billing cannot index
	for i := len(roots) - 1; i >= 0; i-- {
		site, err := o.site(ctx, roots[i])
		switch {
		case isUnindexable(err):
			// An older root of the name may still hold c.
			if unindexable == nil {
				unindexable = err
			}
			continue
		case err != nil:
			return Object{}, err
		}
		if b := site.blocks[want]; b != nil {
			return Object{Publisher: o.roots[roots[i]].payer, MaxBytes: max(b.fileSize, site.dagSize(want, 0)), Root: roots[i]}, nil
		}
	}
	if unindexable != nil {
		return Object{}, unindexable
	}
	return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("%s is not part of site %q (root %s)", c, name, roots[len(roots)-1])}
}

// candidates returns the roots, oldest first, an object served at at may
// be in: the roots name pointed to then (only root, if given), or without
// a name, the root (or c itself) if it has a payer. Callers hold o.mu.
func (o *OriginContent) candidates(name, root, c string, at time.Time) []string {
	if name == "" {
		r := root
		if r == "" {
			r = c
		}
		if o.roots[r] != nil {
			return []string{r}
		}
		return nil
	}
	var out []string
	for _, s := range o.names[name] {
		if !s.live(at) || (root != "" && s.root != root) || slices.Contains(out, s.root) || o.roots[s.root] == nil {
			continue
		}
		out = append(out, s.root)
	}
	return out
}

// blockRoot returns the root holding block c that got its payer first, or
// "" if no site holds it; it indexes the sites not indexed yet, oldest
// first, until one holds c. A site that cannot be indexed now makes the
// answer wait (an error) unless an older one holds c; a site billing
// cannot index at all (ReasonUnindexable) holds nothing it knows of and
// is passed over. Callers hold o.mu.
func (o *OriginContent) blockRoot(ctx context.Context, c cid.Cid) (string, error) {
	earliest := func() string {
		rs := o.blockRoots[c]
		if len(rs) == 0 {
			return ""
		}
		return slices.MinFunc(rs, func(a, b string) int {
			if o.earlier(a, b) {
				return -1
			}
			return 1
		})
	}
	all := make([]string, 0, len(o.roots))
	for r := range o.roots {
		if o.sites[r] == nil {
			all = append(all, r)
		}
	}
	sort.Slice(all, func(i, j int) bool { return o.earlier(all[i], all[j]) })
	for _, r := range all {
		if e := earliest(); e != "" && o.earlier(e, r) {
			return e, nil // every root left came later
		}
		if _, err := o.site(ctx, r); err != nil && !isUnindexable(err) {
			return "", err
		}
	}
	return earliest(), nil
}

// ShardPublisher returns who published the content a shard holds; a
// shard in no manifest is a *billingapi.RejectError with
// ReasonUnknownShard.
func (o *OriginContent) ShardPublisher(ctx context.Context, shard string) (peer.ID, error) {
	o.mu.Lock()
	p, ok := o.shards[shard]
	o.mu.Unlock()
	if ok {
		return p, nil
	}
	if _, err := o.refreshHoldings(ctx, time.Second); err != nil {
		return "", err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, ok := o.shards[shard]; ok {
		return p, nil
	}
	return "", &billingapi.RejectError{Reason: billingapi.ReasonUnknownShard, Err: fmt.Errorf("shard %s is in no published manifest", shard)}
}

// Holdings returns the shard bytes each storage peer holds per publisher,
// from the manifests read now.
func (o *OriginContent) Holdings(ctx context.Context) ([]Holding, error) {
	return o.refreshHoldings(ctx, 0)
}

// refreshHoldings reads the manifests of every site known, unless it did
// within maxAge.
func (o *OriginContent) refreshHoldings(ctx context.Context, maxAge time.Duration) ([]Holding, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if maxAge > 0 && time.Since(o.holdAt) < maxAge {
		return o.holdings, nil
	}
	if err := o.syncLog(ctx, true); err != nil {
		return nil, err
	}
	type key struct{ peer, pub peer.ID }
	sum := map[key]int64{}
	for root, ri := range o.roots {
		pub := ri.payer
		var env identity.Envelope
		err := o.getJSON(ctx, "/api/v1/manifests/"+root, &env)
		var re *httpkit.ResponseError
		if errors.As(err, &re) && re.Status == http.StatusNotFound {
			continue // not striped (yet)
		}
		if err != nil {
			return nil, err
		}
		m, err := erasure.OpenManifest(&env, o.originIDs...)
		if err != nil {
			return nil, fmt.Errorf("origin: manifest of %s: %w", root, err)
		}
		var ids []string
		for _, seg := range m.Segments {
			for _, sh := range seg.Shards {
				ids = append(ids, sh.ID)
				p, err := peer.Decode(sh.Peer)
				if err != nil {
					continue
				}
				o.shards[sh.ID] = pub
				sum[key{p, pub}] += seg.ShardSize
			}
		}
		o.rootShard[root] = ids
	}
	hs := make([]Holding, 0, len(sum))
	for k, n := range sum {
		hs = append(hs, Holding{Peer: k.peer, Publisher: k.pub, Bytes: n})
	}
	o.holdings, o.holdAt = hs, time.Now()
	return hs, nil
}

// OriginIDs returns the origins' peer IDs: pinned (WithOriginIDs), or
// what the origins' /healthz reports, asked again every
// originapi.OriginIDsTTL.
func (o *OriginContent) OriginIDs(ctx context.Context) ([]peer.ID, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.originIDsLocked(ctx)
}

func (o *OriginContent) originIDsLocked(ctx context.Context) ([]peer.ID, error) {
	if len(o.originIDs) > 0 && (o.idsAt.IsZero() || time.Since(o.idsAt) < originapi.OriginIDsTTL) {
		return o.originIDs, nil
	}
	if o.poolErr != nil {
		return nil, fmt.Errorf("origin: %w", o.poolErr)
	}
	ids, err := originapi.FetchOriginIDs(ctx, o.pool, o.client)
	switch {
	case err != nil && len(o.originIDs) > 0:
		return o.originIDs, nil // asked again after a while: the set seldom changes
	case err != nil:
		return nil, fmt.Errorf("origin: %w", err)
	}
	o.originIDs, o.idsAt = ids, time.Now()
	return ids, nil
}

// RootShards returns the shard IDs of every striped root (one with a
// manifest): from the manifests read at most a second ago or, if the
// origin cannot be reached, the last ones read.
func (o *OriginContent) RootShards(ctx context.Context) (map[string][]string, error) {
	if _, err := o.refreshHoldings(ctx, time.Second); err != nil {
		o.mu.Lock()
		known := !o.holdAt.IsZero()
		o.mu.Unlock()
		if !known {
			return nil, err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string][]string, len(o.rootShard))
	for r, ids := range o.rootShard {
		out[r] = ids
	}
	return out, nil
}
