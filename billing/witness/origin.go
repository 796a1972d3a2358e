package witness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// Object is what billing knows of a published object.
type Object struct {
	// Publisher is the peer whose IPNS key published the site.
	Publisher peer.ID
	// MaxBytes bounds the body bytes of one response for the object: its
	// UnixFS file size or, if larger, the bytes of its DAG.
	MaxBytes int64
	// Root is the root of the site the object was found in (the newest
	// holding it), or "" if not known. The upstream-read check groups
	// records by it.
	Root string
}

// Holding is how many shard bytes a storage peer holds for a publisher.
type Holding struct {
	Peer      peer.ID
	Publisher peer.ID
	Bytes     int64
}

// OriginContent learns published content from an origin: human names from
// GET /api/v1/names, each site's blocks as a CAR from the trustless gateway
// (every block verified against its CID), shard placement from signed
// manifests. It caches what it learns; names are re-read on a miss at most
// once per second.
type OriginContent struct {
	base   string
	client *http.Client

	mu        sync.Mutex
	fetched   time.Time
	originID  peer.ID
	names     map[string]originapi.NameInfo
	rootsOf   map[string][]string // name -> roots seen, newest last
	publisher map[string]peer.ID  // root -> publisher
	sites     map[string]*siteIndex
	shards    map[string]peer.ID  // shard -> publisher
	rootShard map[string][]string // striped root -> its shards
	holdings  []Holding
	holdAt    time.Time
}

// NewOriginContent returns an OriginContent reading the origin at base.
// A nil client is one with a 60 s timeout.
func NewOriginContent(base string, client *http.Client) *OriginContent {
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	return &OriginContent{base: strings.TrimRight(base, "/"), client: client,
		names: map[string]originapi.NameInfo{}, rootsOf: map[string][]string{}, publisher: map[string]peer.ID{},
		sites: map[string]*siteIndex{}, shards: map[string]peer.ID{}, rootShard: map[string][]string{}}
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

func (o *OriginContent) get(ctx context.Context, path string, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin: GET %s: %w", path, err)
	}
	return resp, nil
}

// getJSON decodes the origin's answer at path, at most 64 MiB, into v. An
// answer other than 2xx is a *httpkit.ResponseError.
func (o *OriginContent) getJSON(ctx context.Context, path string, v any) error {
	if err := httpkit.GetJSON(ctx, o.client, o.base+path, 64<<20, v); err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	return nil
}

// refreshNames re-reads the names unless it did within the last second.
// Callers hold o.mu.
func (o *OriginContent) refreshNames(ctx context.Context, force bool) error {
	if !force && time.Since(o.fetched) < time.Second {
		return nil
	}
	var list []originapi.NameInfo
	if err := o.getJSON(ctx, "/api/v1/names", &list); err != nil {
		return err
	}
	o.fetched = time.Now()
	for _, ni := range list {
		name, err := ipns.NameFromString(ni.IPNS)
		if err != nil {
			continue
		}
		o.names[ni.Name] = ni
		roots := o.rootsOf[ni.Name]
		if len(roots) == 0 || roots[len(roots)-1] != ni.CID {
			o.rootsOf[ni.Name] = append(roots, ni.CID)
		}
		o.publisher[ni.CID] = name.Peer()
	}
	return nil
}

// Object resolves an object an edge served: by name (the site's human
// name) or else by root, and the CID inside it. An object not published
// is a *billingapi.RejectError with ReasonUnpublished.
func (o *OriginContent) Object(ctx context.Context, name, root, c string) (Object, error) {
	want, err := cid.Decode(c)
	if err != nil {
		return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("cid %q: %v", c, err)}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var (
		pub   peer.ID
		roots []string
	)
	for try := 0; try < 2; try++ {
		if try == 1 {
			if err := o.refreshNames(ctx, false); err != nil {
				return Object{}, err
			}
		}
		pub, roots = "", nil
		switch {
		case name != "":
			ni, ok := o.names[name]
			if !ok {
				continue
			}
			pub = o.publisher[ni.CID]
			roots = o.rootsOf[name]
			if root != "" {
				roots = nil
				for _, r := range o.rootsOf[name] {
					if r == root {
						roots = []string{r}
					}
				}
			}
		default:
			r := root
			if r == "" {
				r = c
			}
			if p, ok := o.publisher[r]; ok {
				pub, roots = p, []string{r}
			}
		}
		if len(roots) > 0 {
			break
		}
	}
	if len(roots) == 0 {
		return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("name %q root %q: no such published site", name, root)}
	}
	for i := len(roots) - 1; i >= 0; i-- {
		site, err := o.site(ctx, roots[i])
		if err != nil {
			return Object{}, err
		}
		if b := site.blocks[want]; b != nil {
			return Object{Publisher: pub, MaxBytes: max(b.fileSize, site.dagSize(want, 0)), Root: roots[i]}, nil
		}
	}
	return Object{}, &billingapi.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("%s is not part of site %q (root %s)", c, name, roots[len(roots)-1])}
}

// site returns the index of the site under root, fetching it as a CAR the
// first time. Callers hold o.mu.
func (o *OriginContent) site(ctx context.Context, root string) (*siteIndex, error) {
	if s := o.sites[root]; s != nil {
		return s, nil
	}
	resp, err := o.get(ctx, "/ipfs/"+root+"?format=car&dag-scope=all", "application/vnd.ipld.car")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("origin: CAR of %s: HTTP %d", root, resp.StatusCode)
	}
	br, err := car.NewBlockReader(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("origin: CAR of %s: %w", root, err)
	}
	s := &siteIndex{blocks: map[cid.Cid]*blockInfo{}}
	for {
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("origin: CAR of %s: %w", root, err)
		}
		c, data := blk.Cid(), blk.RawData()
		if err := dag.Verify(c, data); err != nil {
			return nil, fmt.Errorf("origin: CAR of %s: %w", root, err)
		}
		links, err := dag.Links(c, data)
		if err != nil {
			return nil, fmt.Errorf("origin: CAR of %s: %w", root, err)
		}
		bi := &blockInfo{size: int64(len(data)), links: links}
		if c.Type() == cid.DagProtobuf {
			if pn, err := mdag.DecodeProtobuf(data); err == nil {
				if fs, err := unixfs.FSNodeFromBytes(pn.Data()); err == nil && fs.FileSize() < 1<<62 {
					bi.fileSize = int64(fs.FileSize())
				}
			}
		}
		s.blocks[c] = bi
	}
	rc, err := cid.Decode(root)
	if err != nil || s.blocks[rc] == nil {
		return nil, fmt.Errorf("origin: CAR of %s lacks its root", root)
	}
	o.sites[root] = s
	return s, nil
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
	if err := o.refreshNames(ctx, true); err != nil {
		return nil, err
	}
	if _, err := o.originIDLocked(ctx); err != nil {
		return nil, err
	}
	type key struct{ peer, pub peer.ID }
	sum := map[key]int64{}
	for root, pub := range o.publisher {
		var env identity.Envelope
		err := o.getJSON(ctx, "/api/v1/manifests/"+root, &env)
		var re *httpkit.ResponseError
		if errors.As(err, &re) && re.Status == http.StatusNotFound {
			continue // not striped (yet)
		}
		if err != nil {
			return nil, err
		}
		m, err := erasure.OpenManifest(&env, o.originID)
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

// OriginID returns the peer ID the origin's /healthz
// reports, asked once.
func (o *OriginContent) OriginID(ctx context.Context) (peer.ID, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.originIDLocked(ctx)
}

func (o *OriginContent) originIDLocked(ctx context.Context) (peer.ID, error) {
	if o.originID != "" {
		return o.originID, nil
	}
	var h struct {
		PeerID string `json:"peer_id"`
	}
	if err := o.getJSON(ctx, "/healthz", &h); err != nil {
		return "", err
	}
	id, err := peer.Decode(h.PeerID)
	if err != nil {
		return "", fmt.Errorf("origin: peer ID %q: %w", h.PeerID, err)
	}
	o.originID = id
	return id, nil
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
