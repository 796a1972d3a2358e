package edge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/publish"
)

// newLocalEdge is an edge over an origin that keeps the example site on
// its own disk (no storage peers), published as "blog": enough for the
// gateway semantics, which do not depend on where blocks come from.
func newLocalEdge(t *testing.T, opts ...func(*Config, cid.Cid)) (*Edge, cid.Cid) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ots := httptest.NewServer(o.Handler())
	t.Cleanup(func() { ots.Close(); o.Close() })
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
	cfg := Config{Origin: ots.URL, Domain: "cdn.test"}
	for _, o := range opts {
		o(&cfg, d.Root)
	}
	e, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, d.Root
}

// TestEdgeCORS: content-addressed data is readable cross-origin, as from
// kubo: GET (first answer and response-cache hit alike) and preflights.
func TestEdgeCORS(t *testing.T) {
	e, root := newLocalEdge(t)
	for _, method := range []string{"GET", "GET", "OPTIONS"} { // the second GET is a cache hit
		req := httptest.NewRequest(method, "http://127.0.0.1/ipfs/"+root.String()+"/about.html", nil)
		req.Header.Set("Origin", "https://app.example")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		h := rec.Result().Header
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", method, rec.Code)
		}
		if got := h.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Fatalf("%s: Access-Control-Allow-Origin %q, want *", method, got)
		}
		if got := strings.Join(h.Values("Access-Control-Allow-Methods"), ","); !strings.Contains(got, "GET") {
			t.Fatalf("%s: Access-Control-Allow-Methods %q", method, got)
		}
		if got := strings.Join(h.Values("Access-Control-Expose-Headers"), ","); !strings.Contains(got, "Content-Range") {
			t.Fatalf("%s: Access-Control-Expose-Headers %q", method, got)
		}
	}
	if hits := e.resp.lru.Len(); hits == 0 {
		t.Fatal("nothing was cached: the second GET did not test a hit")
	}
}

// TestEdgeForwardedHost: the gateway answers for X-Forwarded-Host, so the
// response cache must key on it too: an answer kept for one host is never
// served for another, whichever header named it.
func TestEdgeForwardedHost(t *testing.T) {
	e, root := newLocalEdge(t)
	p := "/ipfs/" + root.String() + "/about.html"
	if r := get(t, e, "fake.example", p); r.StatusCode != http.StatusOK {
		t.Fatalf("path gateway on an unknown host: HTTP %d", r.StatusCode)
	}
	// Same Host, same path: the forwarded host is the edge's domain, which
	// is a subdomain gateway, so this redirects instead of hitting the
	// answer just cached for fake.example.
	r := get(t, e, "fake.example", p, "X-Forwarded-Host", "cdn.test")
	if r.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("X-Forwarded-Host cdn.test: HTTP %d, want 301", r.StatusCode)
	}
	if loc, want := r.Header.Get("Location"), root.String()+".ipfs.cdn.test/about.html"; !strings.Contains(loc, want) {
		t.Fatalf("Location %q, want …%s", loc, want)
	}
	// A site's answer is kept under the site's name: a request for it by
	// Host: blog.cdn.test with another forwarded host gets that host's
	// answer, and the site's own key stays clean.
	site := body(t, get(t, e, "blog.cdn.test", "/about.html"))
	if r := get(t, e, "blog.cdn.test", "/about.html", "X-Forwarded-Host", "nosuch.cdn.test"); r.StatusCode != http.StatusNotFound {
		t.Fatalf("forwarded to an unknown site: HTTP %d, want 404", r.StatusCode)
	}
	if got := body(t, get(t, e, "blog.cdn.test", "/about.html")); got != site {
		t.Fatal("the site's cached answer changed")
	}
}

// TestEdgeInlinesDNSLink: /ipns/{fqdn} on the edge's domain redirects to
// one inlined label ({fqdn with - and --}.ipns.DOMAIN), which a wildcard
// certificate covers, and that label serves the name.
func TestEdgeInlinesDNSLink(t *testing.T) {
	e, _ := newLocalEdge(t)
	r := get(t, e, "cdn.test", "/ipns/blog.cdn.test/about.html")
	if r.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("HTTP %d, want 301", r.StatusCode)
	}
	if loc, want := r.Header.Get("Location"), "//blog-cdn-test.ipns.cdn.test/about.html"; !strings.HasSuffix(loc, want) {
		t.Fatalf("Location %q, want …%s", loc, want)
	}
	r = get(t, e, "blog-cdn-test.ipns.cdn.test", "/about.html")
	if got := body(t, r); r.StatusCode != http.StatusOK || !strings.Contains(got, "<html") {
		t.Fatalf("inlined label: HTTP %d %.100q", r.StatusCode, got)
	}
}

// TestEdgeStaticDNSLink: a static DNSLink record serves its host name
// (custom domains), /ipns/{host} on the path gateway and its inlined label
// on the subdomain gateway; a target that is not a content path is refused.
func TestEdgeStaticDNSLink(t *testing.T) {
	e, root := newLocalEdge(t, func(c *Config, root cid.Cid) {
		c.DNSLinks = map[string]string{"Blog.Example.org.": "/ipfs/" + root.String()}
	})
	want := body(t, get(t, e, "127.0.0.1", "/ipfs/"+root.String()+"/about.html"))
	for _, tc := range []struct{ host, path string }{
		{"blog.example.org", "/about.html"},
		{"127.0.0.1", "/ipns/blog.example.org/about.html"},
		{"blog-example-org.ipns.cdn.test", "/about.html"},
	} {
		r := get(t, e, tc.host, tc.path)
		if got := body(t, r); r.StatusCode != http.StatusOK || got != want {
			t.Fatalf("%s%s: HTTP %d %.100q", tc.host, tc.path, r.StatusCode, got)
		}
	}
	if _, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1",
		DNSLinks: map[string]string{"x.example": "bafy"}}); err == nil {
		t.Fatal("a DNSLink target that is no content path was accepted")
	}
}

// TestPathStaysUnderItsRoot: encoded slashes and dot segments never take
// a request out of the content root its URL names (/ipfs/{cid},
// /ipns/{name}, a site or a subdomain): boxo's gateway cleans the decoded
// path, so /ipfs/{cid}/..%2f..%2fipns%2f{name} served another name.
// Requests are built from raw paths (r.URL.RawPath as a client sent it).
func TestPathStaysUnderItsRoot(t *testing.T) {
	other := mdag.NewRawNode([]byte("elsewhere")).Cid().String() // content the edge does not have
	e, root := newLocalEdge(t, func(c *Config, _ cid.Cid) {
		c.DNSLinks = map[string]string{"elsewhere.example": "/ipfs/" + other}
	})
	about := siteFile(t, "about.html")
	tests := []struct {
		name, host, rawPath string
		code                int
	}{
		{"control: the file under its root", "127.0.0.1", "/ipfs/" + root.String() + "/about.html", http.StatusOK},
		{"encoded slashes to a name", "127.0.0.1", "/ipfs/" + other + "/..%2f..%2fipns%2fblog.cdn.test/about.html", http.StatusBadRequest},
		{"encoded slashes, upper case", "127.0.0.1", "/ipfs/" + other + "/..%2F..%2Fipfs%2F" + root.String() + "/about.html", http.StatusBadRequest},
		{"encoded slashes from a name", "127.0.0.1", "/ipns/nosuch.example%2f..%2f..%2fipfs%2f" + root.String() + "/about.html", http.StatusBadRequest},
		{"encoded dots", "127.0.0.1", "/ipfs/" + other + "/%2e%2e/%2e%2e/ipfs/" + root.String() + "/about.html", http.StatusBadRequest},
		{"plain dot segments", "127.0.0.1", "/ipfs/" + other + "/../../ipfs/" + root.String() + "/about.html", http.StatusBadRequest},
		{"a single dot", "127.0.0.1", "/ipfs/" + root.String() + "/./about.html", http.StatusBadRequest},
		{"an encoded slash inside the root", "127.0.0.1", "/ipfs/" + root.String() + "%2fabout.html", http.StatusBadRequest},
		{"out of a site", "elsewhere.example", "/..%2f..%2fipfs%2f" + root.String() + "/about.html", http.StatusBadRequest},
		{"out of a subdomain", other + ".ipfs.cdn.test", "/..%2f..%2fipfs%2f" + root.String() + "/about.html", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://"+tc.host+tc.rawPath, nil)
			if got := req.URL.EscapedPath(); got != tc.rawPath {
				t.Fatalf("the request's raw path is %q, not %q", got, tc.rawPath)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("HTTP %d, want %d: %.200q", rec.Code, tc.code, rec.Body)
			}
			if tc.code != http.StatusOK && strings.Contains(rec.Body.String(), about) {
				t.Fatal("served the content of another root")
			}
		})
	}
}
