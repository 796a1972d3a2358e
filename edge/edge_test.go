package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/publish"
	"github.com/topcdn/topcdn/storage"
)

// network is an origin striping to six storage peers (4+2), all
// in-process on loopback, with the example site published as "blog".
type network struct {
	ctx       context.Context
	peerDirs  map[string]string // peer ID → data dir
	stopPeer  map[string]func() // peer ID → stops it
	origin    *origin.Origin
	originURL string
	originReg *prometheus.Registry
	root      cid.Cid
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir(), Registry: reg, HeartbeatInterval: 200 * time.Millisecond,
		Stripe: &durability.StripeConfig{DataShards: 4, ParityShards: 2, SegmentSize: 256 << 10, ChunkSize: 4096,
			AuditInterval: time.Hour, RepairInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ots := httptest.NewServer(o.Handler())
	t.Cleanup(func() { ots.Close(); o.Close() })
	go o.Run(ctx)

	n := &network{ctx: ctx, origin: o, originURL: ots.URL, originReg: reg, peerDirs: map[string]string{}, stopPeer: map[string]func(){}}
	for range 6 {
		n.addPeer(t)
	}
	n.waitHealthy(t, 6)
	deadline := time.Now().Add(20 * time.Second)

	d, err := publish.ImportDir(ctx, "../examples/site")
	if err != nil {
		t.Fatal(err)
	}
	client, err := publish.NewClient(ots.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate(nil)
	if _, err := client.Push(ctx, key, d, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.PublishName(ctx, "blog", key, d.Root, publish.NameOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := o.Storage().Manifest(ctx, d.Root); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the site was not striped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.root = d.Root
	return n
}

// waitHealthy waits until the origin counts want healthy storage peers.
func (n *network) waitHealthy(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		peers, _ := n.origin.Storage().Peers(n.ctx)
		healthy := 0
		for _, p := range peers {
			if p.Healthy {
				healthy++
			}
		}
		if healthy == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d healthy peers, want %d", healthy, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addPeer starts one more storage peer for the network's origin.
func (n *network) addPeer(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(n.ctx)
	ts := httptest.NewUnstartedServer(nil)
	dir := t.TempDir()
	s, err := storage.New(ctx, storage.Config{DataDir: dir, Origin: n.originURL, OriginID: n.origin.ID().ID,
		Capacity: 64 << 20, PublicAddr: "http://" + ts.Listener.Addr().String(),
		HeartbeatInterval: 100 * time.Millisecond, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	n.peerDirs[s.ID().String()] = dir
	ts.Config.Handler = s.Handler()
	ts.Start()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); ts.Close(); s.Close() }) }
	n.stopPeer[s.ID().String()] = stop
	t.Cleanup(stop)
	go s.Run(ctx)
}

// siteFile returns the example site's file name (a path in the site).
func siteFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../examples/site", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func get(t *testing.T, h http.Handler, host, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", "http://"+host+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEdgeServesSitesFromPeers(t *testing.T) {
	n := newNetwork(t)
	reg := prometheus.NewRegistry()
	e, err := New(context.Background(), Config{Origin: n.originURL, Domain: "cdn.test", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	site := func(name string) string { return siteFile(t, name) }
	v1 := n.root.String()
	sub, _ := cid.Decode(v1)
	tests := []struct {
		name, host, path string
		hdr              []string
		code             int
		ctype, want      string
		cacheControl     string
	}{
		{"site index", "blog.cdn.test", "/", nil, 200, "text/html", site("index.html"), "max-age="},
		{"site stylesheet", "blog.cdn.test", "/css/style.css", nil, 200, "text/css", site("css/style.css"), ""},
		{"site image", "blog.cdn.test", "/img/logo.png", nil, 200, "image/png", site("img/logo.png"), ""},
		{"nested index", "blog.cdn.test", "/docs/", nil, 200, "text/html", site("docs/index.html"), ""},
		{"multi-block file", "blog.cdn.test", "/docs/manual.txt", nil, 200, "text/plain", site("docs/manual.txt"), ""},
		{"range", "blog.cdn.test", "/docs/manual.txt", []string{"Range", "bytes=300000-300099"}, 206, "", site("docs/manual.txt")[300000:300100], ""},
		{"site 404 page", "blog.cdn.test", "/no/such/page", nil, 404, "text/html", site("404.html"), ""},
		{"path gateway", "127.0.0.1", "/ipfs/" + v1 + "/about.html", nil, 200, "text/html", site("about.html"), "immutable"},
		{"subdomain gateway", sub.String() + ".ipfs.cdn.test", "/about.html", nil, 200, "text/html", site("about.html"), "immutable"},
		{"unknown site", "nosuch.cdn.test", "/", nil, 404, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, e, tc.host, tc.path, tc.hdr...)
			got := body(t, resp)
			if resp.StatusCode != tc.code {
				t.Fatalf("HTTP %d, want %d: %.200s", resp.StatusCode, tc.code, got)
			}
			if tc.want != "" && got != tc.want {
				t.Fatalf("body differs (%d bytes, want %d)", len(got), len(tc.want))
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Fatalf("Content-Type %q, want %s", ct, tc.ctype)
			}
			if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, tc.cacheControl) {
				t.Fatalf("Cache-Control %q, want it to contain %q", cc, tc.cacheControl)
			}
		})
	}
	// Conditional request: the ETag of an immutable file gives a 304.
	resp := get(t, e, "127.0.0.1", "/ipfs/"+v1+"/about.html")
	etag := resp.Header.Get("Etag")
	if resp = get(t, e, "127.0.0.1", "/ipfs/"+v1+"/about.html", "If-None-Match", etag); etag == "" || resp.StatusCode != 304 {
		t.Fatalf("If-None-Match %q: HTTP %d, want 304", etag, resp.StatusCode)
	}
	// Repeats come ready-made from the response cache, with Range and
	// conditional requests answered from the stored body.
	hitsBefore := testutil.ToFloat64(e.metrics.responseHits)
	manual := site("docs/manual.txt")
	if r := get(t, e, "blog.cdn.test", "/docs/manual.txt"); body(t, r) != manual {
		t.Fatal("cached manual differs")
	}
	r := get(t, e, "blog.cdn.test", "/docs/manual.txt", "Range", "bytes=10-19")
	if b := body(t, r); r.StatusCode != 206 || b != manual[10:20] {
		t.Fatalf("cached range: HTTP %d %q", r.StatusCode, b)
	}
	cachedEtag := r.Header.Get("Etag")
	if r := get(t, e, "blog.cdn.test", "/docs/manual.txt", "If-None-Match", cachedEtag); cachedEtag == "" || r.StatusCode != 304 {
		t.Fatalf("cached If-None-Match %q: HTTP %d", cachedEtag, r.StatusCode)
	}
	if got := testutil.ToFloat64(e.metrics.responseHits) - hitsBefore; got < 3 {
		t.Fatalf("%v response cache hits, want 3", got)
	}
	// Every block came from the storage peers, none through the origin's
	// gateway (which no longer has the content), and repeats hit the cache.
	if v := testutil.ToFloat64(e.metrics.misses); v == 0 {
		t.Fatal("no upstream fetches counted")
	}
	if v := testutil.ToFloat64(e.metrics.hits.WithLabelValues("memory")); v == 0 {
		t.Fatal("no memory cache hits")
	}
	if f, err := testutil.GatherAndCount(n.originReg, "topcdn_origin_striped_reads_total"); err == nil && f > 0 {
		mf, _ := n.originReg.Gather()
		for _, m := range mf {
			if m.GetName() == "topcdn_origin_striped_reads_total" {
				for _, mm := range m.Metric {
					if mm.Counter.GetValue() > 0 {
						t.Fatalf("the origin read %v blocks from peers for the edge: %s", mm.Counter.GetValue(), fmt.Sprint(mm.Label))
					}
				}
			}
		}
	}
}

// TestEdgeRoutesAroundRottenPeers: two storage peers whose shards rotted on
// disk make reads slower, never wrong, and nothing wrong is cached.
func TestEdgeRoutesAroundRottenPeers(t *testing.T) {
	n := newNetwork(t)
	m, err := n.origin.Storage().Manifest(context.Background(), n.root)
	if err != nil {
		t.Fatal(err)
	}
	// Rot the peers of data shards 0 and 1: the ones reads go to first.
	for _, sh := range m.Segments[0].Shards[:2] {
		dir := n.peerDirs[sh.Peer]
		filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for i := range b {
				b[i] ^= 0x5a
			}
			return os.WriteFile(p, b, 0o600)
		})
	}
	disk, err := OpenDiskCache(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(context.Background(), Config{Origin: n.originURL, Disk: disk})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"index.html", "docs/manual.txt", "img/logo.png", "about.html"} {
		want, _ := os.ReadFile(filepath.Join("../examples/site", name))
		for range 2 { // the second time from the caches
			resp := get(t, e, "blog.cdn.test", "/"+name)
			if got := body(t, resp); resp.StatusCode != 200 || got != string(want) {
				t.Fatalf("%s: HTTP %d, %d bytes, want %d correct bytes", name, resp.StatusCode, len(got), len(want))
			}
		}
	}
	// HEAD answers the headers alone.
	req := httptest.NewRequest("HEAD", "http://blog.cdn.test/docs/manual.txt", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Fatalf("HEAD: HTTP %d, %d body bytes, Content-Length %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
	if disk.Len() == 0 {
		t.Fatal("nothing reached the disk cache")
	}
}

// TestEdgeFollowsRepairedManifest: when repair moves shards off dead peers,
// an edge that loaded the site's manifest before takes up the origin's new
// one, and reads from the peers that now hold the shards instead of
// falling back to the origin for every block from then on.
func TestEdgeFollowsRepairedManifest(t *testing.T) {
	ctx := context.Background()
	n := newNetwork(t)
	e, err := New(ctx, Config{Origin: n.originURL})
	if err != nil {
		t.Fatal(err)
	}
	if resp := get(t, e, "blog.cdn.test", "/"); resp.StatusCode != 200 {
		t.Fatalf("site: HTTP %d", resp.StatusCode)
	}
	v1, err := n.origin.Storage().Manifest(ctx, n.root)
	if err != nil {
		t.Fatal(err)
	}

	// Two peers die; repair moves their shards to two new ones.
	for range 2 {
		n.addPeer(t)
	}
	n.waitHealthy(t, 8)
	shards := v1.Segments[0].Shards
	n.stopPeer[shards[0].Peer]()
	n.stopPeer[shards[1].Peer]()
	n.waitHealthy(t, 6)
	if placed, err := n.origin.Storage().Repair(ctx); err != nil || placed == 0 {
		t.Fatalf("repair placed %d shards: %v", placed, err)
	}
	v2, err := n.origin.Storage().Manifest(ctx, n.root)
	if err != nil || v2.Version <= v1.Version {
		t.Fatalf("manifest after repair: version %d (was %d), %v", v2.Version, v1.Version, err)
	}
	// A third dies: under the old manifest every segment has 3 shards
	// left of the 4 it needs; under the new one, 5.
	n.stopPeer[shards[2].Peer]()
	n.waitHealthy(t, 5)

	striped := func() float64 {
		var sum float64
		mfs, _ := n.originReg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "topcdn_origin_striped_reads_total" {
				for _, m := range mf.Metric {
					sum += m.Counter.GetValue()
				}
			}
		}
		return sum
	}
	loaded := func() uint64 {
		e.src.mu.Lock()
		defer e.src.mu.Unlock()
		if lr, ok := e.src.readers[n.root]; ok {
			return lr.r.Manifest().Version
		}
		return 0
	}
	// Read blocks upstream (past the caches): reads that fail on the old
	// manifest come through the origin, and make the edge ask for the
	// manifest again.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; loaded() < v2.Version; i++ {
		c, _ := cid.Decode(v2.Blocks[i%len(v2.Blocks)].CID)
		if _, err := e.src.get(ctx, c); err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge kept manifest version %d from before the repair (now %d)", loaded(), v2.Version)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// From then on every block comes from the peers, none through the
	// origin.
	before := striped()
	for _, ref := range v2.Blocks {
		c, _ := cid.Decode(ref.CID)
		if _, err := e.src.get(ctx, c); err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
	}
	if after := striped(); after != before {
		t.Fatalf("with the repaired manifest, %v blocks still came through the origin", after-before)
	}
}

// TestEdgesShareState: a new edge built with the State of an earlier one
// (as Caddy's module does on a config reload) starts with its caches and
// what it learnt: the pages the first served come ready-made, with no
// upstream fetch, not even of a name.
func TestEdgesShareState(t *testing.T) {
	ctx := context.Background()
	n := newNetwork(t)
	st := NewState(64 << 20)
	first, err := New(ctx, Config{Origin: n.originURL, MemoryBytes: 64 << 20, State: st})
	if err != nil {
		t.Fatal(err)
	}
	index := siteFile(t, "index.html")
	for _, path := range []string{"/", "/css/style.css"} {
		if resp := get(t, first, "blog.cdn.test", path); resp.StatusCode != 200 {
			t.Fatalf("%s: HTTP %d", path, resp.StatusCode)
		}
	}
	n.origin.Close() // nothing may come from the origin from here on
	second, err := New(ctx, Config{Origin: n.originURL, MemoryBytes: 64 << 20, State: st})
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, second, "blog.cdn.test", "/")
	if got := body(t, resp); resp.StatusCode != 200 || got != index {
		t.Fatalf("the new edge: HTTP %d, %d bytes; want the index", resp.StatusCode, len(got))
	}
	if hits := testutil.ToFloat64(second.metrics.responseHits); hits != 1 {
		t.Fatalf("the new edge's response cache hits: %v, want 1 (the first edge's answer)", hits)
	}
	if misses := testutil.ToFloat64(second.metrics.misses); misses != 0 {
		t.Fatalf("the new edge fetched %v blocks upstream", misses)
	}
	if _, err := New(ctx, Config{Origin: n.originURL, MemoryBytes: 32 << 20, State: st}); err == nil {
		t.Fatal("a State made for 64 MiB was taken for a 32 MiB edge")
	}
}

// TestEdgeFailsOverToTheNextOrigin: an edge given several origins serves
// while the first is gone, asking the next, and counts the failover.
func TestEdgeFailsOverToTheNextOrigin(t *testing.T) {
	n := newNetwork(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	reg := prometheus.NewRegistry()
	e, err := New(context.Background(), Config{Origins: []string{dead, n.originURL}, Domain: "cdn.test", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/docs/manual.txt"} {
		resp := get(t, e, "blog.cdn.test", p)
		if got := body(t, resp); resp.StatusCode != 200 || got != siteFile(t, strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/")+map[bool]string{true: "index.html"}[p == "/"]) {
			t.Fatalf("GET %s: HTTP %d (%d bytes)", p, resp.StatusCode, len(got))
		}
	}
	var failovers float64
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "topcdn_edge_origin_failovers_total" {
			for _, m := range mf.GetMetric() {
				failovers += m.GetCounter().GetValue()
			}
		}
	}
	if failovers == 0 {
		t.Error("no failover counted")
	}
}
