package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/publish"
)

// fakeRouter serves /api/v1/edges with counters the test moves.
type fakeRouter struct {
	mu    sync.Mutex
	edges []dnsrouteapi.EdgeInfo
}

func (f *fakeRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	json.NewEncoder(w).Encode(f.edges)
}

// testOrigin runs an origin that serves the example site as blog,
// published by key, and returns its URL and the site's root.
func testOrigin(t *testing.T, key *identity.Key) (string, cid.Cid) {
	t.Helper()
	ctx := context.Background()
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir(), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ots := httptest.NewServer(o.Handler())
	t.Cleanup(func() { ots.Close(); o.Close() })
	d0, err := publish.ImportDir(ctx, "../examples/site")
	if err != nil {
		t.Fatal(err)
	}
	client, _ := publish.NewClient(ots.URL, nil)
	if _, err := client.Push(ctx, key, d0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.PublishName(ctx, "blog", key, d0.Root, publish.NameOptions{}); err != nil {
		t.Fatal(err)
	}
	return ots.URL, d0.Root
}

func TestStateAndHistory(t *testing.T) {
	ctx := context.Background()
	key, _ := identity.Generate(nil)
	originURL, root := testOrigin(t, key)
	lat, lon := 50.11, 8.68
	router := &fakeRouter{edges: []dnsrouteapi.EdgeInfo{{Peer: "edge-a", City: "Frankfurt", Lat: &lat, Lon: &lon, Healthy: true,
		Requests: 10, Bytes: 1000, CacheHits: 5, CacheMisses: 5}}}
	rts := httptest.NewServer(router)
	defer rts.Close()
	// Billing is down: the page still shows the rest and names the failure.
	d, err := New(Config{Origin: originURL, Router: rts.URL, Billing: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/dashboard", d.Handler()))
	defer srv.Close()

	var st State
	testkit.GetJSON(t, srv.URL+"/dashboard/api/state", &st)
	if len(st.Sites) != 1 || st.Sites[0].Name != "blog" || st.Sites[0].CID != root.String() {
		t.Fatalf("sites %+v", st.Sites)
	}
	if st.Sites[0].Size != -1 {
		t.Fatalf("an unstriped site has size %d, want -1", st.Sites[0].Size)
	}
	if len(st.Edges) != 1 || st.Edges[0].City != "Frankfurt" || len(st.Storage) == 0 {
		t.Fatalf("edges %+v storage %s", st.Edges, st.Storage)
	}
	if st.Errors["billing"] == "" || st.Errors["origin"] != "" {
		t.Fatalf("errors %v: want billing named, origin not", st.Errors)
	}

	// History holds deltas between samples: the first sample of an edge
	// only sets its baseline; a restarted edge (counters went down) too.
	steps := []struct {
		req, bytes, hits, misses uint64
		want                     Sample
	}{
		{10, 1000, 5, 5, Sample{}},
		{30, 5000, 20, 10, Sample{Requests: 20, Bytes: 4000, HitRatio: 0.75}},
		{30, 5000, 20, 10, Sample{HitRatio: -1}},
		{3, 300, 1, 2, Sample{HitRatio: -1}},
	}
	for i, s := range steps {
		router.mu.Lock()
		router.edges[0].Requests, router.edges[0].Bytes, router.edges[0].CacheHits, router.edges[0].CacheMisses = s.req, s.bytes, s.hits, s.misses
		router.mu.Unlock()
		d.sample(ctx)
		var h []Sample
		testkit.GetJSON(t, srv.URL+"/dashboard/api/history", &h)
		if i == 0 {
			if len(h) != 1 || h[0].Requests != 0 {
				t.Fatalf("first sample %+v", h)
			}
			continue
		}
		got := h[len(h)-1]
		if got.Requests != s.want.Requests || got.Bytes != s.want.Bytes || got.HitRatio != s.want.HitRatio {
			t.Fatalf("step %d: sample %+v, want %+v", i, got, s.want)
		}
	}
}

// TestPageHasNoExternalLinks: the page works offline: every asset is
// embedded and nothing points off the dashboard.
func TestPageHasNoExternalLinks(t *testing.T) {
	d, _ := New(Config{Origin: "http://127.0.0.1:1", Interval: time.Hour})
	srv := httptest.NewServer(http.StripPrefix("/dashboard", d.Handler()))
	defer srv.Close()
	fs.WalkDir(assets, "assets", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		resp, err := http.Get(srv.URL + "/dashboard/" + strings.TrimPrefix(path, "assets/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: HTTP %d", path, resp.StatusCode)
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") || strings.Contains(text, "//cdn") {
			t.Fatalf("%s links outside the dashboard", path)
		}
		return nil
	})
	resp, err := http.Get(srv.URL + "/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "topcdn network") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("index: %.100s, CSP %q", b, resp.Header.Get("Content-Security-Policy"))
	}
}
