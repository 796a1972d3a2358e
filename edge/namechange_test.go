package edge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/namestream"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// pushSite is a site "blog" on an in-process origin (no storage peers),
// published with a 10-minute TTL, so that only a pushed change can explain
// an edge serving a new version within a test; nameReads counts the
// origin's answers about names.
type pushSite struct {
	ctx       context.Context
	client    *publish.Client
	key       *identity.Key
	edge      *Edge
	reg       *prometheus.Registry
	nameReads atomic.Int64
	id        int64 // the last change ID given out
}

func newPushSite(t *testing.T) *pushSite {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := &pushSite{ctx: ctx, reg: prometheus.NewRegistry()}
	oh := o.Handler()
	ots := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/names/") || strings.HasPrefix(r.URL.Path, "/ipns/") {
			s.nameReads.Add(1)
		}
		oh.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { ots.Close(); o.Close() })
	if s.client, err = publish.NewClient(ots.URL, nil); err != nil {
		t.Fatal(err)
	}
	s.key, _ = identity.Generate(nil)
	s.publish(t, "version 1")
	if s.edge, err = New(ctx, Config{Origin: ots.URL, Domain: "cdn.test", Registry: s.reg,
		DNSLinks: map[string]string{"blog.example.org": "/ipns/" + s.ipns().String()}}); err != nil {
		t.Fatal(err)
	}
	s.edge.noWarm = true
	return s
}

func (s *pushSite) ipns() ipns.Name { return ipns.NameFromPeer(s.key.ID) }

// publish uploads a site whose pages say text and moves blog to it at the
// origin; it returns the change the origin streams for it.
func (s *pushSite) publish(t *testing.T, text string) namestream.Change {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"index.html": text, "about.html": "about " + text} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := publish.ImportDir(s.ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Push(s.ctx, s.key, d, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.PublishName(s.ctx, "blog", s.key, d.Root, publish.NameOptions{TTL: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.client.CurrentRecord(s.ctx, s.ipns())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ipns.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return s.change(t, originapi.NameChange{Kind: originapi.ChangeRecord, Name: "blog", IPNS: s.ipns().String(), Record: raw})
}

// change verifies nc as the stream's follower does.
func (s *pushSite) change(t *testing.T, nc originapi.NameChange) namestream.Change {
	t.Helper()
	s.id++
	nc.ID = s.id
	c, err := namestream.Verify(nc, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *pushSite) purge(t *testing.T, paths ...string) namestream.Change {
	t.Helper()
	env, err := originapi.SignPurge(s.key, "blog", paths)
	if err != nil {
		t.Fatal(err)
	}
	return s.change(t, originapi.NameChange{Kind: originapi.ChangePurge, Name: "blog", IPNS: s.ipns().String(), Purge: env})
}

// page GETs host/p from the edge and returns its body and Age header.
func (s *pushSite) page(t *testing.T, host, p string) (string, string) {
	t.Helper()
	resp := get(t, s.edge, host, p)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s%s: %d", host, p, resp.StatusCode)
	}
	return body(t, resp), resp.Header.Get("Age")
}

// TestPushedRecordServedAtOnce: a pushed record moves every way a site is
// reached (its name, its IPNS name on the path and subdomain gateways, a
// static DNSLink host) to the new version at once, though the old
// record's TTL has ten minutes to go, and with no round trip to the origin
// for the name; an older record pushed after it changes nothing.
func TestPushedRecordServedAtOnce(t *testing.T) {
	s := newPushSite(t)
	k := s.ipns().String()
	ways := []struct{ host, path string }{
		{"blog.cdn.test", "/"},
		{"127.0.0.1", "/ipns/" + k + "/"}, // the path gateway
		{k + ".ipns.cdn.test", "/"},
		{"blog-cdn-test.ipns.cdn.test", "/"},
		{"blog.example.org", "/"},
	}
	for _, w := range ways {
		for range 2 { // the second read is a response-cache hit
			if got, _ := s.page(t, w.host, w.path); got != "version 1" {
				t.Fatalf("%s%s: %q, want version 1", w.host, w.path, got)
			}
		}
	}
	old, err := s.client.CurrentRecord(s.ctx, s.ipns())
	if err != nil {
		t.Fatal(err)
	}
	oldRaw, _ := ipns.MarshalRecord(old)
	v2 := s.publish(t, "version 2")
	// The origin has v2, but the edge's answers for v1 live 10 minutes.
	if got, _ := s.page(t, "blog.cdn.test", "/"); got != "version 1" {
		t.Fatalf("before the push: %q, want version 1 (cached)", got)
	}
	reads := s.nameReads.Load()
	s.edge.applyChange(s.ctx, v2)
	for _, w := range ways {
		if got, _ := s.page(t, w.host, w.path); got != "version 2" {
			t.Errorf("%s%s after the push: %q, want version 2", w.host, w.path, got)
		}
	}
	if n := s.nameReads.Load() - reads; n != 0 {
		t.Errorf("%d name reads from the origin after the push, want 0", n)
	}
	// A replay of the older record is ignored.
	s.edge.applyChange(s.ctx, s.change(t, originapi.NameChange{Kind: originapi.ChangeRecord, Name: "blog", IPNS: k, Record: oldRaw}))
	if got, _ := s.page(t, "blog.cdn.test", "/"); got != "version 2" {
		t.Errorf("after an older record: %q, want version 2", got)
	}
	if got := testutil.ToFloat64(s.edge.metrics.changes.WithLabelValues("record", "stale")); got != 1 {
		t.Errorf("stale changes counted %v, want 1", got)
	}
}

// TestPurge: a purge of a path drops that path's cached answer only; a
// purge of the whole name drops them all.
func TestPurge(t *testing.T) {
	s := newPushSite(t)
	for _, p := range []string{"/", "/about.html", "/", "/about.html"} {
		s.page(t, "blog.cdn.test", p)
	}
	if _, age := s.page(t, "blog.cdn.test", "/about.html"); age == "" {
		t.Fatal("second read of /about.html is not a cache hit (no Age)")
	}
	s.edge.applyChange(s.ctx, s.purge(t, "/about.html"))
	if _, age := s.page(t, "blog.cdn.test", "/about.html"); age != "" {
		t.Errorf("/about.html after its purge: Age %s, want a fresh answer", age)
	}
	if _, age := s.page(t, "blog.cdn.test", "/"); age == "" {
		t.Errorf("/ after a purge of /about.html: no Age, want it still cached")
	}
	s.edge.applyChange(s.ctx, s.purge(t))
	if _, age := s.page(t, "blog.cdn.test", "/"); age != "" {
		t.Errorf("/ after a purge of the name: Age %s, want a fresh answer", age)
	}
}

// TestResponseMadeBeforeChangeNeverServed: an answer whose request started
// before its site changed, and finished after, is not served again.
func TestResponseMadeBeforeChangeNeverServed(t *testing.T) {
	gens := newGenerations()
	e := &Edge{cfg: Config{Domain: "cdn.test"}, resp: newResponseCache(1<<20, gens)}
	release := make(chan struct{})
	var calls atomic.Int64
	h := e.withResponseCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-release // the name changes while this answer is made
		}
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Write([]byte("old"))
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://blog.cdn.test/", nil))
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	gens.bump("blog.cdn.test")
	close(release)
	<-done
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://blog.cdn.test/", nil))
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2: the answer made across the change was served from the cache", n)
	}
	// Answers made after the change are cached as usual; another site's
	// change does not touch them.
	gens.bump("docs.cdn.test")
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://blog.cdn.test/", nil))
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2: an answer made after the change was not cached", n)
	}
}

// fakeResolver resolves every name to a fixed path with a fixed TTL and
// counts its calls.
type fakeResolver struct {
	val   path.Path
	ttl   time.Duration
	calls atomic.Int64
}

func (f *fakeResolver) Resolve(_ context.Context, p path.Path, _ ...namesys.ResolveOption) (namesys.Result, error) {
	f.calls.Add(1)
	return namesys.Result{Path: f.val, TTL: f.ttl}, nil
}

func (f *fakeResolver) ResolveAsync(ctx context.Context, p path.Path, o ...namesys.ResolveOption) <-chan namesys.AsyncResult {
	panic("not used")
}

func (f *fakeResolver) Publish(context.Context, ci.PrivKey, path.Path, ...namesys.PublishOption) error {
	panic("not used")
}

// TestNameCacheTTL: with no pushed change, a resolution lives for its TTL,
// as boxo's cache did, and its TTL counts down; a change of its site
// drops it at once.
func TestNameCacheTTL(t *testing.T) {
	root, _ := cid.Decode("bafkqaaa")
	inner := &fakeResolver{val: path.FromCid(root), ttl: time.Minute}
	gens := newGenerations()
	cache := newResolutionCache()
	n := newNameCache(inner, cache, gens)
	now := time.Now()
	n.now = func() time.Time { return now }
	p, _ := path.NewPath("/ipns/blog.cdn.test/a/b")
	for i, tt := range []struct {
		advance time.Duration
		calls   int64
		ttl     time.Duration
	}{
		{0, 1, time.Minute},
		{20 * time.Second, 1, 40 * time.Second},
		{50 * time.Second, 2, time.Minute}, // expired at 60 s: resolved anew
	} {
		now = now.Add(tt.advance)
		res, err := n.Resolve(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if res.Path.String() != "/ipfs/bafkqaaa/a/b" || inner.calls.Load() != tt.calls || res.TTL != tt.ttl {
			t.Fatalf("step %d: %s, TTL %s, %d calls; want /ipfs/bafkqaaa/a/b, TTL %s, %d calls", i, res.Path, res.TTL, inner.calls.Load(), tt.ttl, tt.calls)
		}
	}
	gens.bump("blog.cdn.test")
	if _, err := n.Resolve(context.Background(), p); err != nil || inner.calls.Load() != 3 {
		t.Fatalf("after a change: %d calls (%v), want 3", inner.calls.Load(), err)
	}
}
