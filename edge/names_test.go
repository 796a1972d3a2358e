package edge

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/routing"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// fakeNameOrigin answers GET /ipns/{name} with whatever it is set to.
type fakeNameOrigin struct {
	mu     sync.Mutex
	status int
	body   []byte
}

func (f *fakeNameOrigin) set(status int, body []byte) {
	f.mu.Lock()
	f.status, f.body = status, body
	f.mu.Unlock()
}

func (f *fakeNameOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	status, body := f.status, f.body
	f.mu.Unlock()
	w.WriteHeader(status)
	w.Write(body)
}

// testRecord signs a record of key for a made-up root.
func testRecord(t *testing.T, key *identity.Key, seq uint64, eol time.Time) []byte {
	t.Helper()
	h, _ := mh.Sum([]byte{byte(seq)}, mh.SHA2_256, -1)
	return testkit.IPNSRecord(t, key, cid.NewCidV1(cid.Raw, h), seq, eol)
}

// TestNameRecords: the edge serves the best valid record it has seen for
// a name. The origin cannot roll a name back, and while the origin cannot
// answer, the last valid record stands until its own end of validity.
func TestNameRecords(t *testing.T) {
	ctx := context.Background()
	origin := &fakeNameOrigin{}
	srv := httptest.NewServer(origin)
	defer srv.Close()
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fallbacks"}, []string{"kind", "reason"})
	pool, err := originapi.NewPool([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	names := newNameRecords(pool, srv.Client(), zap.NewNop(), fallbacks, NewState(0).names, nil)

	alice, _ := identity.Generate(nil)
	mallory, _ := identity.Generate(nil)
	key := string(ipns.NameFromPeer(alice.ID).RoutingKey())
	later := time.Now().Add(time.Hour)
	rec1, rec2 := testRecord(t, alice, 1, later), testRecord(t, alice, 2, later)
	forged := testRecord(t, mallory, 3, later) // Mallory's record offered for Alice's name

	steps := []struct {
		name   string
		status int
		body   []byte
		want   []byte // nil: an error
		reason string // the fallback counted, if any
	}{
		{"fresh", 200, rec1, rec1, ""},
		{"origin down", 503, []byte("down"), rec1, "origin_unavailable"},
		{"origin lost the name", 404, nil, rec1, "origin_not_found"},
		{"newer", 200, rec2, rec2, ""},
		{"rolled back", 200, rec1, rec2, "rollback"},
		{"forged", 200, forged, rec2, "origin_unavailable"},
		{"not a record", 200, []byte("<html>"), rec2, "origin_unavailable"},
		{"oversized", 200, append(bytes.Clone(rec2), make([]byte, ipns.MaxRecordSize)...), rec2, "origin_unavailable"},
		{"same again", 200, rec2, rec2, ""},
	}
	want := map[string]float64{}
	for _, st := range steps {
		origin.set(st.status, st.body)
		got, err := names.GetValue(ctx, key)
		if st.want == nil && err == nil || st.want != nil && !bytes.Equal(got, st.want) {
			t.Fatalf("%s: GetValue = %d bytes, %v; want the %d-byte record", st.name, len(got), err, len(st.want))
		}
		if st.reason != "" {
			want[st.reason]++
		}
		for _, reason := range []string{"origin_unavailable", "origin_not_found", "rollback"} {
			if got := testutil.ToFloat64(fallbacks.WithLabelValues("ipns", reason)); got != want[reason] {
				t.Fatalf("%s: %s fallbacks = %v, want %v", st.name, reason, got, want[reason])
			}
		}
	}
	ch, err := names.SearchValue(ctx, key)
	if err != nil || !bytes.Equal(<-ch, rec2) {
		t.Fatalf("SearchValue: %v", err)
	}

	// Nothing kept: the origin's failure is the answer.
	bob, _ := identity.Generate(nil)
	bobKey := string(ipns.NameFromPeer(bob.ID).RoutingKey())
	origin.set(503, nil)
	if _, err := names.GetValue(ctx, bobKey); err == nil {
		t.Fatal("a name never seen, origin down: no error")
	}
	origin.set(404, nil)
	if _, err := names.GetValue(ctx, bobKey); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("a name the origin does not have: %v, want routing.ErrNotFound", err)
	}

	// A kept record is a fallback only within its validity.
	brief := testRecord(t, bob, 1, time.Now().Add(300*time.Millisecond))
	origin.set(200, brief)
	if got, err := names.GetValue(ctx, bobKey); err != nil || !bytes.Equal(got, brief) {
		t.Fatalf("brief record: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	origin.set(503, nil)
	if got, err := names.GetValue(ctx, bobKey); err == nil {
		t.Fatalf("an expired record (%d bytes) was served while the origin was down", len(got))
	}

	if _, err := names.GetValue(ctx, "/pk/whatever"); !errors.Is(err, routing.ErrNotSupported) {
		t.Fatalf("non-IPNS key: %v", err)
	}
	if err := names.PutValue(ctx, key, rec2); !errors.Is(err, routing.ErrNotSupported) {
		t.Fatalf("PutValue: %v", err)
	}
	if _, err := names.GetValue(ctx, "/ipns/"+strings.Repeat("x", 5)); err == nil {
		t.Fatal("malformed routing key accepted")
	}
}

// newOutageNet is newNetwork with the site also published as "brief" with
// a 1 s TTL, and an origin URL (sw) that reaches the origin through a
// switch: while down is set, it answers 503.
func newOutageNet(t *testing.T) (n *network, ni *originapi.NameInfo, sw string, down *atomic.Bool) {
	t.Helper()
	n = newNetwork(t)
	client, err := publish.NewClient(n.originURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate(nil)
	ni, err = client.PublishName(context.Background(), "brief", key, n.root, publish.NameOptions{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	down = new(atomic.Bool)
	target, _ := url.Parse(n.originURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "origin down", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return n, ni, srv.URL, down
}

// checkPage fetches host+path from h and wants want.
func checkPage(t *testing.T, h http.Handler, host, path, want string) {
	t.Helper()
	resp := get(t, h, host, path)
	if got := body(t, resp); resp.StatusCode != 200 || got != want {
		t.Fatalf("%s%s: HTTP %d, %d bytes; want 200 and %d bytes", host, path, resp.StatusCode, len(got), len(want))
	}
}

// TestEdgeThroughOriginOutage: sites an edge has served stay up while the
// origin is down, past their names' TTLs: names from the last valid
// answers, blocks from the storage peers. A site never seen cannot be.
func TestEdgeThroughOriginOutage(t *testing.T) {
	ctx := context.Background()
	_, ni, sw, down := newOutageNet(t)
	e, err := New(ctx, Config{Origin: sw})
	if err != nil {
		t.Fatal(err)
	}
	site := func(name string) string { return siteFile(t, name) }
	check := func(host, path, want string) { t.Helper(); checkPage(t, e, host, path, want) }
	check("brief.cdn.test", "/", site("index.html"))
	check("127.0.0.1", "/ipns/"+ni.IPNS+"/about.html", site("about.html"))

	down.Store(true)
	time.Sleep(1500 * time.Millisecond) // past the name's TTL (1 s)
	// Pages not asked for before, so that nothing comes from the
	// response cache: the names resolve from what the edge kept.
	check("brief.cdn.test", "/docs/", site("docs/index.html"))
	check("127.0.0.1", "/ipns/"+ni.IPNS+"/blog/", site("blog/index.html"))
	check("brief.cdn.test", "/img/logo.png", site("img/logo.png"))
	if resp := get(t, e, "blog.cdn.test", "/about.html"); resp.StatusCode == 200 {
		t.Fatal("a site the edge never resolved was served while the origin was down")
	}
	for _, kind := range []string{"dnslink", "ipns"} {
		if v := testutil.ToFloat64(e.metrics.fallbacks.WithLabelValues(kind, "origin_unavailable")); v == 0 {
			t.Errorf("no %s fallback counted", kind)
		}
	}

	// Back up: the origin's answers are taken again.
	down.Store(false)
	before := testutil.ToFloat64(e.metrics.fallbacks.WithLabelValues("ipns", "origin_unavailable"))
	time.Sleep(1100 * time.Millisecond)
	check("brief.cdn.test", "/docs/getting-started.html", site("docs/getting-started.html"))
	if after := testutil.ToFloat64(e.metrics.fallbacks.WithLabelValues("ipns", "origin_unavailable")); after != before {
		t.Fatalf("fallbacks went on after the origin came back: %v → %v", before, after)
	}
}

// TestEdgeRestartsThroughOriginOutage: an edge with a disk cache keeps the
// names' last answers on disk too, so an edge restarted while the origin
// is down still serves the pages whose blocks its disk holds.
func TestEdgeRestartsThroughOriginOutage(t *testing.T) {
	ctx := context.Background()
	_, ni, sw, down := newOutageNet(t)
	dir := t.TempDir()
	disk, err := OpenDiskCache(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(ctx, Config{Origin: sw, Disk: disk})
	if err != nil {
		t.Fatal(err)
	}
	checkPage(t, e, "brief.cdn.test", "/", siteFile(t, "index.html"))
	checkPage(t, e, "127.0.0.1", "/ipns/"+ni.IPNS+"/about.html", siteFile(t, "about.html"))

	// The origin goes down and the edge restarts: new process, same disk.
	down.Store(true)
	disk.Close()
	disk, err = OpenDiskCache(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	restarted, err := New(ctx, Config{Origin: sw, Disk: disk})
	if err != nil {
		t.Fatal(err)
	}
	checkPage(t, restarted, "brief.cdn.test", "/", siteFile(t, "index.html"))
	checkPage(t, restarted, "127.0.0.1", "/ipns/"+ni.IPNS+"/about.html", siteFile(t, "about.html"))
	// A page whose blocks the edge never fetched: from the storage peers,
	// through the manifest and peer list kept on disk.
	checkPage(t, restarted, "brief.cdn.test", "/docs/", siteFile(t, "docs/index.html"))
	if resp := get(t, restarted, "blog.cdn.test", "/"); resp.StatusCode == 200 {
		t.Fatal("a site the edge never resolved was served while the origin was down")
	}
}
