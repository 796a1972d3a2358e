package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

// streamProxy stands between an edge and its origin: it can cut the edge
// off, and rewrite the pages of the origin's name-change stream.
type streamProxy struct {
	srv    *httptest.Server
	origin *url.URL
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	down    bool
	rewrite func(*originapi.NameChanges) *identity.Key // nil: pass pages through; else edit the page and name its signer
}

func newStreamProxy(t *testing.T, originURL string) *streamProxy {
	u, err := url.Parse(originURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &streamProxy{origin: u, rp: httputil.NewSingleHostReverseProxy(u)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

// cut closes the open connections (the edge's long-poll among them) and
// refuses requests until restore.
func (p *streamProxy) cut() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.srv.CloseClientConnections()
}

func (p *streamProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// setRewrite sets how pages are rewritten (nil: not at all) and cuts the
// open long-poll, so the next page goes through it.
func (p *streamProxy) setRewrite(f func(*originapi.NameChanges) *identity.Key) {
	p.mu.Lock()
	p.rewrite = f
	p.mu.Unlock()
	p.srv.CloseClientConnections()
}

func (p *streamProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	down, rewrite := p.down, p.rewrite
	p.mu.Unlock()
	if down {
		http.Error(w, "cut off", http.StatusBadGateway)
		return
	}
	if rewrite == nil || r.URL.Path != "/api/v1/names/changes" {
		p.rp.ServeHTTP(w, r)
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, p.origin.String()+r.URL.RequestURI(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	var env identity.Envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var page originapi.NameChanges
	if err := json.Unmarshal(env.Body, &page); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	signer := rewrite(&page)
	out, err := signer.Sign(originapi.TypeNameChanges, page)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// pushEdge is one `topcdn edge` (Caddy) whose origin is reached through a
// streamProxy, and where its metrics are served.
type pushEdge struct {
	base, metrics string
}

func (e pushEdge) page(t *testing.T, host string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", e.base+"/", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return ""
	}
	return string(b)
}

// cursor returns the edge's names_cursor (-1 before it has one).
func (e pushEdge) cursor(t *testing.T) int64 {
	t.Helper()
	var h struct {
		NamesCursor *int64 `json:"names_cursor"`
	}
	testkit.GetJSON(t, e.base+"/.well-known/topcdn/health", &h)
	if h.NamesCursor == nil {
		return -1
	}
	return *h.NamesCursor
}

// metric sums the samples of a metric whose labels contain every label
// given (as name="value").
func (e pushEdge) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	_, body := testkit.Get(t, e.metrics+"/metrics", "")
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// TestPushedNameChanges runs an origin and an edge (Caddy) that reaches it
// through a proxy the test controls, and publishes with a 10-minute TTL,
// so only the origin's stream of name changes can bring a new version to
// the edge within the test: the edge serves each publish at once, catches
// up after being cut off, ignores a forged record, a page not signed by
// the origin and an older record, and a purge drops its cached answer.
func TestPushedNameChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin and Caddy")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	pubKey, originKeyFile := filepath.Join(dir, "publisher.key"), filepath.Join(dir, "origin.key")
	testkit.Run(t, bin, "keygen", "--out", pubKey)
	testkit.Run(t, bin, "keygen", "--out", originKeyFile)
	originKey, err := identity.Load(originKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	// No storage peers: the origin keeps what it takes (an upload then
	// waits for no striping).
	o := startOrigin(t, bin, filepath.Join(dir, "origin"), "--key", originKeyFile, "--no-stripe")
	proxy := newStreamProxy(t, o.url)

	port, mport := freePort(t), freePort(t)
	caddyfile := filepath.Join(dir, "Caddyfile")
	conf := fmt.Sprintf(`{
	auto_https off
	admin off
	persist_config off
	storage file_system %[1]s/caddy
}

http://:%[2]d {
	bind 127.0.0.1
	topcdn {
		origin %[3]s
		domain cdn.test
		key %[1]s/edge.key
	}
}

http://:%[4]d {
	bind 127.0.0.1
	metrics
}
`, dir, port, proxy.srv.URL, mport)
	if err := os.WriteFile(caddyfile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	edge := pushEdge{base: fmt.Sprintf("http://127.0.0.1:%d", port), metrics: fmt.Sprintf("http://127.0.0.1:%d", mport)}

	version := 0
	siteDir := filepath.Join(dir, "site")
	publishVersion := func(t *testing.T) string {
		t.Helper()
		version++
		text := fmt.Sprintf("version %d", version)
		if err := os.MkdirAll(siteDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		testkit.Run(t, bin, "publish", siteDir, "--name", "blog", "--origin", o.url, "--key", pubKey, "--ttl", "10m")
		return text
	}
	// lastChange is the ID of the origin's last name change.
	lastChange := func(t *testing.T) int64 {
		t.Helper()
		var env identity.Envelope
		testkit.GetJSON(t, o.url+"/api/v1/names/changes?wait=0", &env)
		var page originapi.NameChanges
		if _, err := env.Open(originapi.TypeNameChanges, &page); err != nil {
			t.Fatal(err)
		}
		return page.Last
	}
	serves := func(t *testing.T, want string) {
		t.Helper()
		testkit.WaitFor(t, 10*time.Second, "the edge serves "+want, func() bool { return edge.page(t, "blog.cdn.test") == want })
	}

	v1 := publishVersion(t)
	startEdge(t, bin, caddyfile)
	serves(t, v1)
	testkit.WaitFor(t, 10*time.Second, "the edge follows the stream", func() bool { return edge.cursor(t) >= lastChange(t) })

	t.Run("a publish is served at once", func(t *testing.T) {
		serves(t, publishVersion(t))
	})

	t.Run("an edge cut off catches up", func(t *testing.T) {
		proxy.cut()
		publishVersion(t)
		v3 := publishVersion(t)
		id := lastChange(t)
		time.Sleep(500 * time.Millisecond)
		proxy.restore()
		serves(t, v3)
		testkit.WaitFor(t, 10*time.Second, "the edge's cursor covers both changes", func() bool { return edge.cursor(t) >= id })
	})

	current := fmt.Sprintf("version %d", version)
	latest := current // at the origin
	t.Run("a forged record is ignored", func(t *testing.T) {
		forger, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		fakeRoot, _ := cid.Decode("bafkqaaa")
		rejected := edge.metric(t, "topcdn_edge_name_stream_changes_total", `result="rejected"`)
		proxy.setRewrite(func(p *originapi.NameChanges) *identity.Key {
			for i := range p.Changes {
				// The same name, a record signed by another key; the
				// page re-signed by the origin's own key.
				p.Changes[i].Record = testkit.IPNSRecord(t, forger, fakeRoot, 99, time.Now().Add(time.Hour),
					ipns.WithMetadata(map[string]any{originapi.RecordNameKey: "blog"}))
			}
			return originKey
		})
		latest = publishVersion(t)
		id := lastChange(t)
		testkit.WaitFor(t, 10*time.Second, "the edge reads past the forged change", func() bool { return edge.cursor(t) >= id })
		if got := edge.page(t, "blog.cdn.test"); got != current {
			t.Fatalf("after a forged record the edge serves %q, want %q", got, current)
		}
		if got := edge.metric(t, "topcdn_edge_name_stream_changes_total", `result="rejected"`); got <= rejected {
			t.Fatalf("rejected changes %v, want more than %v", got, rejected)
		}
		proxy.setRewrite(nil)
	})

	t.Run("a page not signed by the origin is dropped", func(t *testing.T) {
		other, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		bad := edge.metric(t, "topcdn_edge_name_stream_pages_total", `result="bad_signature"`)
		proxy.setRewrite(func(*originapi.NameChanges) *identity.Key { return other })
		next := publishVersion(t)
		testkit.WaitFor(t, 10*time.Second, "a bad signature counted", func() bool {
			return edge.metric(t, "topcdn_edge_name_stream_pages_total", `result="bad_signature"`) > bad
		})
		if got := edge.page(t, "blog.cdn.test"); got != current {
			t.Fatalf("after a page signed by another key the edge serves %q, want %q", got, current)
		}
		proxy.setRewrite(nil)
		serves(t, next) // the real page, read again from the same cursor
		current, latest = next, next
	})

	t.Run("an older record is ignored", func(t *testing.T) {
		var env identity.Envelope
		testkit.GetJSON(t, o.url+"/api/v1/names/changes?since=0&wait=0", &env)
		var all originapi.NameChanges
		if _, err := env.Open(originapi.TypeNameChanges, &all); err != nil || len(all.Changes) == 0 {
			t.Fatalf("the origin's first changes: %v", err)
		}
		first := all.Changes[0] // version 1, a valid record signed by its key
		stale := edge.metric(t, "topcdn_edge_name_changes_total", `result="stale"`)
		proxy.setRewrite(func(p *originapi.NameChanges) *identity.Key {
			for i := range p.Changes {
				if p.Changes[i].Kind == originapi.ChangeRecord {
					p.Changes[i].Record = first.Record // replayed: older than what the edge has
				}
			}
			return originKey
		})
		latest = publishVersion(t)
		testkit.WaitFor(t, 10*time.Second, "the old record counted stale", func() bool {
			return edge.metric(t, "topcdn_edge_name_changes_total", `result="stale"`) > stale
		})
		proxy.setRewrite(nil)
		if got := edge.page(t, "blog.cdn.test"); got != current {
			t.Fatalf("after an older record the edge serves %q, want %q", got, current)
		}
	})

	t.Run("a purge drops the cached answer", func(t *testing.T) {
		edge.page(t, "blog.cdn.test")
		req, _ := http.NewRequest("GET", edge.base+"/", nil)
		req.Host = "blog.cdn.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Age") == "" {
			t.Fatal("the second read is not a cache hit (no Age)")
		}
		out := testkit.Run(t, bin, "purge", "--name", "blog", "--path", "/", "--origin", o.url, "--key", pubKey)
		id, err := strconv.ParseInt(strings.TrimSpace(out[strings.LastIndex(out, "change ")+len("change "):]), 10, 64)
		if err != nil {
			t.Fatalf("purge printed %q: %v", out, err)
		}
		testkit.WaitFor(t, 10*time.Second, "the edge applies the purge", func() bool { return edge.cursor(t) >= id })
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The purge also made the edge resolve the name anew: it serves
		// the version the origin has, which the replay above kept from it.
		if age := resp.Header.Get("Age"); age != "" || !bytes.Equal(b, []byte(latest)) {
			t.Fatalf("after the purge: Age %q, body %q; want a fresh answer of %q", age, b, latest)
		}
	})
}
