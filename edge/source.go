package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// source fetches blocks an edge does not have: from the storage peers
// when a manifest of the origin indexes them, else from the origin's
// Trustless Gateway. Every block is verified against its CID.
type source struct {
	pool      *originapi.Pool // the origins, with failover
	http      *http.Client
	shards    *storageapi.Client
	stats     *erasure.PeerStats
	spans     *erasure.SpanCache
	flag      func(erasure.Flag)
	dnslinks  map[string]string           // static DNSLink records: host → content path
	links     *lru.Cache[string, dnsLink] // the origin's last answer for each site host
	log       *zap.Logger
	fallbacks *prometheus.CounterVec // kind, reason
	disk      answerDisk             // keeps the origin's last answers across restarts; nil: none
	// custom answers for a host outside the zone with no static record
	// (Edge.customLink); nil: 404.
	custom func(ctx context.Context, host string) ([]string, time.Duration, error)

	*learnt // shared with other edges of the same State
}

// learnt is what a source learns from the origin as it serves: loaded
// manifests, roots without one, storage peers' addresses, the origin's
// peer ID. Guarded by mu.
type learnt struct {
	mu          sync.Mutex
	originIDs   []peer.ID                          // the origins', pinned or asked
	originIDsAt time.Time                          // when asked; zero: pinned by the config
	noManifest  *simplelru.LRU[cid.Cid, time.Time] // roots the origin had no manifest for, and when asked
	readers     map[cid.Cid]*loadedReader          // by root
	readerOrder *simplelru.LRU[cid.Cid, struct{}]  // readers' roots, least recently used first
	addrs       map[peer.ID]string
	addrsAt     time.Time
	loads       singleflight.Group // manifests being loaded, by root
}

// loadedReader is a Reader over a root's manifest, and when the manifest
// was last loaded or asked for again.
type loadedReader struct {
	r          *erasure.Reader
	checked    time.Time
	refreshing bool
}

// noManifestTTL is how long a root the origin has not striped yet is
// served from the origin before the edge asks for its manifest again.
const noManifestTTL = 10 * time.Second

// maxNoManifest bounds how many such roots an edge remembers: requests for
// made-up CIDs must not grow it without bound.
const maxNoManifest = 1 << 16

// maxReaders bounds how many roots' manifests an edge keeps loaded; the
// least recently used is dropped (and loaded again when next needed).
const maxReaders = 1024

// manifestRefresh is how often a loaded manifest is asked for again, in
// the background: the origin re-signs it when repair moves shards, and an
// edge that kept an old one would keep reading from peers that are gone.
const manifestRefresh = 5 * time.Minute

// manifestRetry is how soon after the last ask a failed read asks for the
// manifest again.
const manifestRetry = 2 * time.Second

func newLearnt() *learnt {
	l := &learnt{readers: map[cid.Cid]*loadedReader{}, addrs: map[peer.ID]string{}}
	l.readerOrder, _ = simplelru.NewLRU[cid.Cid, struct{}](maxReaders, func(root cid.Cid, _ struct{}) {
		delete(l.readers, root) // called with l.mu held
	})
	l.noManifest, _ = simplelru.NewLRU[cid.Cid, time.Time](maxNoManifest, nil)
	return l
}

// get returns block c, verified: from a loaded manifest, from a manifest
// of c itself (a root), or from the origin.
func (s *source) get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if root, r := s.readerFor(ctx, c); r != nil {
		data, err := r.ReadBlock(ctx, c)
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// Peers failed us: the shards may have moved (ask for the
		// manifest again), and the origin may still have the block.
		s.refresh(root, true)
	}
	return s.originBlock(ctx, c)
}

// readerFor finds a Reader whose manifest indexes c, and its root,
// loading c's own manifest if c is a striped root.
func (s *source) readerFor(ctx context.Context, c cid.Cid) (cid.Cid, *erasure.Reader) {
	s.mu.Lock()
	for root, lr := range s.readers {
		if lr.r.Has(c) {
			s.readerOrder.Get(root)
			s.mu.Unlock()
			s.refresh(root, false)
			return root, lr.r
		}
	}
	asked, known := s.noManifest.Peek(c)
	s.mu.Unlock()
	if known && time.Since(asked) < noManifestTTL {
		return cid.Undef, nil
	}
	if r := s.load(ctx, c); r != nil && r.Has(c) {
		return c, r
	}
	return cid.Undef, nil
}

// loadRoot makes sure root's manifest is loaded, or known to be missing,
// before a request reads the content under root: blocks under a root
// whose own block is cached (and so never asked of the source) still come
// from the storage peers, not from the origin.
func (s *source) loadRoot(ctx context.Context, root cid.Cid) {
	s.mu.Lock()
	_, loaded := s.readers[root]
	if loaded {
		s.readerOrder.Get(root)
	}
	asked, known := s.noManifest.Peek(root)
	s.mu.Unlock()
	switch {
	case loaded:
		s.refresh(root, false)
	case !known || time.Since(asked) >= noManifestTTL:
		s.load(ctx, root)
	}
}

// manifestFetchTimeout bounds one load of a manifest: past it the origin
// is treated as unable to answer, and blocks come the other way.
const manifestFetchTimeout = 5 * time.Second

// load loads root's manifest and returns a Reader over it, or nil if the
// origin has none (noted for noManifestTTL). Concurrent loads of one root
// are one fetch.
func (s *source) load(ctx context.Context, root cid.Cid) *erasure.Reader {
	ch := s.loads.DoChan(root.KeyString(), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestFetchTimeout)
		defer cancel()
		m, err := s.manifest(lctx, root)
		var r *erasure.Reader
		if err == nil {
			r, err = s.newReader(m)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.noManifest.Add(root, time.Now())
			return nil, err
		}
		s.readers[root] = &loadedReader{r: r, checked: time.Now()}
		s.readerOrder.Add(root, struct{}{})
		s.noManifest.Remove(root)
		return r, nil
	})
	select {
	case res := <-ch:
		r, _ := res.Val.(*erasure.Reader)
		return r
	case <-ctx.Done():
		return nil
	}
}

func (s *source) newReader(m *erasure.Manifest) (*erasure.Reader, error) {
	return erasure.NewReader(m, s, erasure.WithPeerStats(s.stats), erasure.WithSpanCache(s.spans), erasure.WithFlagFunc(s.flag))
}

// refresh asks the origin for root's manifest again, in the background,
// if the loaded one is older than manifestRefresh (manifestRetry after a
// failed read).
// A newer manifest replaces the loaded one; if the origin cannot answer,
// the loaded one stays, and is asked for again after another interval.
func (s *source) refresh(root cid.Cid, failed bool) {
	s.mu.Lock()
	lr, ok := s.readers[root]
	if !ok || lr.refreshing || (!failed && time.Since(lr.checked) < manifestRefresh) ||
		(failed && time.Since(lr.checked) < manifestRetry) {
		s.mu.Unlock()
		return
	}
	lr.refreshing = true
	s.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var r *erasure.Reader
		m, err := s.manifest(ctx, root)
		if err == nil && m.Version > lr.r.Manifest().Version {
			r, err = s.newReader(m)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		lr.refreshing, lr.checked = false, time.Now()
		if err != nil {
			s.log.Debug("manifest not refreshed; keeping the loaded one", zap.Stringer("root", root), zap.Error(err))
			return
		}
		if r != nil && s.readers[root] == lr {
			s.readers[root] = &loadedReader{r: r, checked: lr.checked}
			// Repair may have placed shards on peers this edge has not
			// heard of: let the next read ask for the peer list at once.
			s.addrsAt = time.Time{}
		}
	}()
}

// maxManifest bounds a manifest's signed envelope.
const maxManifest = 16 << 20

// manifest fetches and verifies root's manifest from the origin. While
// the origin cannot answer (not a 404: a root it has not striped), the
// manifest last kept on disk is used, checked the same way: it is signed
// by the origin and names the shards' hashes, so it is no more trusted
// than the origin's own answer, only older.
func (s *source) manifest(ctx context.Context, root cid.Cid) (m *erasure.Manifest, err error) {
	key := "manifest " + root.String()
	raw, err := s.getRaw(ctx, "/api/v1/manifests/"+root.String(), maxManifest)
	fromDisk := false
	if err != nil {
		kept, ok := s.keptAnswer(ctx, key, err)
		if !ok {
			return nil, err
		}
		s.log.Warn("origin cannot give a manifest; using the one kept on disk", zap.Stringer("root", root), zap.Error(err))
		s.fallbacks.WithLabelValues("manifest", "origin_unavailable").Inc()
		raw, fromDisk = kept, true
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("manifest for %s: %w", root, err)
		}
	}()
	var env identity.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, err
	}
	originIDs, err := s.originPeerIDs(ctx)
	if err != nil {
		return nil, err
	}
	if m, err = erasure.OpenManifest(&env, originIDs...); err != nil {
		return nil, err
	}
	if m.Root != root.String() {
		return nil, fmt.Errorf("it describes %s", m.Root)
	}
	if !fromDisk {
		s.keep(key, raw)
	}
	return m, nil
}

// keptAnswer returns the answer kept on disk under key when err, the
// origin's failure to give it anew, says the origin cannot answer (down,
// 5xx, a timeout), not that the answer is gone (404).
func (s *source) keptAnswer(ctx context.Context, key string, err error) ([]byte, bool) {
	if s.disk == nil || ctx.Err() != nil || isNotFound(err) {
		return nil, false
	}
	return s.disk.Kept(key)
}

// isNotFound reports whether err is the origin's 404: the answer is gone,
// not merely out of reach.
func isNotFound(err error) bool {
	var re *httpkit.ResponseError
	return errors.As(err, &re) && re.Status == http.StatusNotFound
}

// keep writes an answer of the origin to disk, for keptAnswer after a
// restart.
func (s *source) keep(key string, value []byte) {
	if s.disk == nil {
		return
	}
	if err := s.disk.Keep(key, value); err != nil {
		s.log.Warn("keep the origin's answer on disk", zap.String("key", key), zap.Error(err))
	}
}

// originPeerIDs returns the origins' peer IDs: pinned by the config, or
// asked from the origins at first need (so an edge starts while its
// origins are down) and again every originapi.OriginIDsTTL.
func (s *source) originPeerIDs(ctx context.Context) ([]peer.ID, error) {
	s.mu.Lock()
	ids, at := s.originIDs, s.originIDsAt
	s.mu.Unlock()
	if len(ids) > 0 && (at.IsZero() || time.Since(at) < originapi.OriginIDsTTL) {
		return ids, nil
	}
	key := "origin-id " + s.pool.First()
	fresh, err := originapi.FetchOriginIDs(ctx, s.pool, s.http)
	if err != nil && len(ids) > 0 {
		return ids, nil // asked again after a while: the set seldom changes
	}
	if err != nil {
		// Learnt before a restart: the origins' keys do not change
		// while their URLs stay.
		kept, ok := s.keptAnswer(ctx, key, err)
		if !ok {
			return nil, fmt.Errorf("learn the origins' peer IDs: %w", err)
		}
		h := originapi.Health{OriginIDs: strings.Fields(string(kept))}
		if fresh, err = h.IDs(); err != nil {
			return nil, fmt.Errorf("kept origin IDs: %w", err)
		}
	}
	strs := make([]string, len(fresh))
	for i, id := range fresh {
		strs[i] = id.String()
	}
	s.keep(key, []byte(strings.Join(strs, "\n")))
	s.mu.Lock()
	s.originIDs, s.originIDsAt = fresh, time.Now()
	s.mu.Unlock()
	return fresh, nil
}

// originBlock fetches c from the origin's Trustless Gateway.
func (s *source) originBlock(ctx context.Context, c cid.Cid) ([]byte, error) {
	var data []byte
	err := s.pool.Do(ctx, func(ctx context.Context, base string) error {
		var err error
		data, err = s.originBlockAt(ctx, base, c)
		return err
	})
	return data, err
}

// originBlockAt fetches c from the origin at base.
func (s *source) originBlockAt(ctx context.Context, base string, c cid.Cid) ([]byte, error) {
	u := base + "/ipfs/" + c.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s from origin: %w", c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s from origin: %w", c, &originapi.StatusError{URL: u, Status: resp.StatusCode})
	}
	var data []byte
	if n := resp.ContentLength; n >= 0 && n <= dag.MaxBlockSize {
		data = make([]byte, n) // one allocation, not ReadAll's doublings
		_, err = io.ReadFull(resp.Body, data)
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, dag.MaxBlockSize+1))
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s from origin: %w", c, err)
	}
	if err := dag.Verify(c, data); err != nil {
		return nil, fmt.Errorf("origin sent a bad block: %w", err)
	}
	return data, nil
}

// PutShard is not for edges: they only read.
func (s *source) PutShard(context.Context, peer.ID, string, []byte) error {
	return errors.New("edge: edges do not store shards")
}

// GetShard reads shard bytes from a storage peer with a read order signed
// by the edge's key.
func (s *source) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	addr, err := s.peerAddr(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	return s.shards.GetRange(ctx, p, addr, shard, off, length)
}

// peerAddr finds a storage peer's address in the origin's peer list,
// refreshed at most every few seconds.
func (s *source) peerAddr(ctx context.Context, p peer.ID) (string, error) {
	s.mu.Lock()
	a, ok := s.addrs[p]
	stale := time.Since(s.addrsAt) > 5*time.Second
	s.mu.Unlock()
	if ok {
		return a, nil
	}
	if !stale {
		return "", fmt.Errorf("storage peer %s unknown to the origin", p)
	}
	var peers []struct {
		ID   string `json:"id"`
		Addr string `json:"addr"`
	}
	key := "peers " + s.pool.First()
	raw, err := s.getRaw(ctx, "/api/v1/peers", 16<<20)
	if err == nil {
		s.keep(key, raw)
	} else if kept, ok := s.keptAnswer(ctx, key, err); ok {
		// The list the origin gave before a restart: the peers prove
		// every byte they send, so an old address costs a failed read
		// at worst.
		raw = kept
	} else {
		return "", err
	}
	if err := json.Unmarshal(raw, &peers); err != nil {
		return "", fmt.Errorf("origin's peer list: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrsAt = time.Now()
	for _, pi := range peers {
		if id, err := peer.Decode(pi.ID); err == nil {
			s.addrs[id] = pi.Addr
		}
	}
	if a, ok := s.addrs[p]; ok {
		return a, nil
	}
	return "", fmt.Errorf("storage peer %s unknown to the origin", p)
}

// getJSON decodes the origin's answer at path into v.
func (s *source) getJSON(ctx context.Context, path string, limit int64, v any) error {
	raw, err := s.getRaw(ctx, path, limit)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("origin %s: %w", path, err)
	}
	return nil
}

// getRaw returns the origin's answer at path: at most limit bytes, else
// an error. An answer other than 2xx is a *httpkit.ResponseError.
func (s *source) getRaw(ctx context.Context, path string, limit int64) ([]byte, error) {
	var raw []byte
	err := s.pool.Do(ctx, func(ctx context.Context, base string) (err error) {
		raw, err = httpkit.Get(ctx, s.http, base+path, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", path, err)
	}
	return raw, nil
}

// lookupDNSLink answers DNSLink TXT lookups from the static records, else
// for NAME.DOMAIN from the origin's names: _dnslink.blog.cdn.test →
// dnslink=/ipns/k51….
func (s *source) lookupDNSLink(domain string) func(ctx context.Context, fqdn string) ([]string, time.Duration, error) {
	suffix := "." + strings.TrimSuffix(domain, ".")
	return func(ctx context.Context, fqdn string) ([]string, time.Duration, error) {
		host := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(fqdn, "_dnslink."), "."))
		if p, ok := s.dnslinks[host]; ok {
			return []string{"dnslink=" + p}, staticDNSLinkTTL, nil
		}
		name, ok := strings.CutSuffix(host, suffix)
		if !ok && host != domain && s.custom != nil {
			return s.custom(ctx, host)
		}
		if !ok || name == "" || strings.Contains(name, ".") {
			return nil, 0, fmt.Errorf("edge: %w", gateway.NewErrorStatusCode(
				fmt.Errorf("%s is not a site of %s", host, domain), http.StatusNotFound))
		}
		var ni struct {
			IPNS       string `json:"ipns"`
			TTLSeconds int64  `json:"ttl_seconds"`
		}
		fctx, cancel := context.WithTimeout(ctx, nameFetchTimeout)
		err := s.getJSON(fctx, "/api/v1/names/"+name, 64<<10, &ni)
		cancel()
		if err == nil {
			if _, perr := ipns.NameFromString(ni.IPNS); perr != nil {
				err = fmt.Errorf("origin names %s as %q, not an IPNS name: %w", host, ni.IPNS, perr)
			}
		}
		if err != nil {
			// A name the origin no longer has is gone; an origin that
			// cannot answer leaves the last answer standing, for a
			// short TTL, so that sites stay up through its outage.
			if last, ok := s.lastLink(host); ok && ctx.Err() == nil && !isNotFound(err) {
				s.log.Warn("origin cannot give a site's name; serving the last answer", zap.String("host", host), zap.Error(err))
				s.fallbacks.WithLabelValues("dnslink", "origin_unavailable").Inc()
				return []string{last.value}, min(last.ttl, staleNameTTL), nil
			}
			s.links.Remove(host)
			return nil, 0, fmt.Errorf("edge: %w", clientError(s.log, "the name of "+host, err))
		}
		ttl := time.Duration(ni.TTLSeconds) * time.Second
		if ttl <= 0 {
			ttl = time.Minute
		}
		link := dnsLink{value: "dnslink=/ipns/" + ni.IPNS, ttl: ttl}
		s.keep("dnslink "+host, []byte(link.value+"\n"+strconv.FormatInt(int64(ttl/time.Second), 10)))
		s.links.Add(host, link)
		return []string{link.value}, ttl, nil
	}
}

// lastLink returns the origin's last DNSLink answer for host: kept in
// memory, or on disk before a restart.
func (s *source) lastLink(host string) (dnsLink, bool) {
	if l, ok := s.links.Get(host); ok {
		return l, true
	}
	if s.disk == nil {
		return dnsLink{}, false
	}
	b, ok := s.disk.Kept("dnslink " + host)
	if !ok {
		return dnsLink{}, false
	}
	value, secs, _ := strings.Cut(string(b), "\n")
	n, err := strconv.ParseInt(secs, 10, 64)
	target, _ := strings.CutPrefix(value, "dnslink=/ipns/")
	if _, nerr := ipns.NameFromString(target); err != nil || nerr != nil || n <= 0 {
		return dnsLink{}, false
	}
	l := dnsLink{value: value, ttl: time.Duration(n) * time.Second}
	s.links.Add(host, l)
	return l, true
}

// staticDNSLinkTTL is how long answers for a static DNSLink name may be
// cached, by the edge and by browsers.
const staticDNSLinkTTL = 5 * time.Minute

var _ erasure.ShardStore = (*source)(nil)
