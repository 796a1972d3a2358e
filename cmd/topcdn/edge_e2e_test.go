package main

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/compress/zstd"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestEdgeWithCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin, 6 storage peers and Caddy")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	o := startOrigin(t, bin, filepath.Join(dir, "origin"), "--data-shards", "4", "--parity-shards", "2",
		"--segment-size", "256KiB", "--chunk-size", "4KiB", "--heartbeat-interval", "1s")
	peers := map[string]*storageProc{}
	for i := range 6 {
		p := startPeer(t, bin, dir, o.url, i)
		peers[p.id] = p
	}
	site := "../../examples/site"
	var root string
	if !t.Run("the publish is striped onto 6 peers", func(t *testing.T) {
		waitHealthyPeers(t, o.url, 6)
		root = publishStriped(t, bin, o.url, key, site)
	}) {
		return
	}

	// The peer holding the first data shard lies: every byte it returns
	// is wrong. The edge must notice, read around it, and neither serve
	// nor cache a wrong byte.
	rotShards(t, peers[manifest(t, o.url, root).Segments[0].Shards[0].Peer].data)

	// The repository's Caddyfile, pointed at this origin, ports and dir,
	// with Caddy's own local CA in place of the demo's ACME CA (whose
	// DNS-01 challenges need the router: the devnet's tests cover that).
	port, httpsPort := freePort(t), freePort(t)
	conf, err := os.ReadFile("../../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	// A stand-in for the DNS router and billing records what the edge
	// reports: signed heartbeats and, when it stops, its receipt batch.
	reports := &edgeReports{}
	stub := httptest.NewServer(reports)
	defer stub.Close()
	acmeTLS := "\ttls {\n\t\tdns topcdn {\n\t\t\trouter http://127.0.0.1:8053\n\t\t\tkey demo/edge.key\n\t\t}\n\t\tresolvers 127.0.0.1:5301\n\t}\n"
	acmeCA := "\tacme_ca https://127.0.0.1:14000/dir\n\tacme_ca_root demo/ca/pebble-tls.pem\n"
	for _, s := range []string{acmeTLS, acmeCA, "http_port 8080", "https_port 8443", ":8443 {"} {
		if !strings.Contains(string(conf), s) {
			t.Fatalf("the Caddyfile no longer holds %q: update this test with it", s)
		}
	}
	c := strings.NewReplacer(acmeTLS, "\ttls internal\n", acmeCA, "\tlocal_certs\n",
		"http_port 8080", fmt.Sprintf("http_port %d", port), "https_port 8443", fmt.Sprintf("https_port %d", httpsPort),
		":8443", fmt.Sprintf(":%d", httpsPort),
		"http://127.0.0.1:7070", o.url, "http://:8080", fmt.Sprintf("http://:%d", port),
		"http://127.0.0.1:8080", fmt.Sprintf("http://127.0.0.1:%d", port),
		"http://127.0.0.1:8053", stub.URL, "http://127.0.0.1:7080", stub.URL, "demo/", dir+"/").Replace(string(conf))
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	edge := startEdge(t, bin, caddyfile)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Names are served over HTTPS (HTTP/2), verified against the local
	// CA's root; IP addresses over HTTP, as the router's probes ask.
	roots := x509.NewCertPool()
	testkit.WaitFor(t, 30*time.Second, "Caddy's local CA", func() bool {
		pem, err := os.ReadFile(filepath.Join(dir, "edge-caddy", "pki", "authorities", "local", "root.crt"))
		return err == nil && roots.AppendCertsFromPEM(pem)
	})
	tlsTransport := &http.Transport{DisableCompression: true, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", httpsPort))
		}}
	defer tlsTransport.CloseIdleConnections()
	// Caddy issues the wildcard certificate in the background as it
	// starts: wait for a handshake to verify.
	waitTLS := func() {
		testkit.WaitFor(t, 30*time.Second, "the edge's certificate for *.cdn.test", func() bool {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort), &tls.Config{RootCAs: roots, ServerName: "blog.cdn.test"})
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
	}
	waitTLS()
	do := func(t *testing.T, method, host, path string, hdr ...string) (*http.Response, string) {
		u, client := base+path, &http.Client{Transport: &http.Transport{DisableCompression: true}}
		if net.ParseIP(host) == nil {
			u, client = fmt.Sprintf("https://%s:%d%s", host, httpsPort, path), &http.Client{Transport: tlsTransport}
		}
		req, _ := http.NewRequest(method, u, nil)
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	fetch := func(t *testing.T, host, path string, hdr ...string) (*http.Response, string) {
		return do(t, "GET", host, path, hdr...)
	}
	want := func(t *testing.T, name string) string {
		b, err := os.ReadFile(filepath.Join(site, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("the site and an image, over HTTPS with HTTP/2; plain HTTP redirects", func(t *testing.T) {
		if resp, body := fetch(t, "blog.cdn.test", "/"); resp.StatusCode != 200 || body != want(t, "index.html") || resp.Proto != "HTTP/2.0" {
			t.Fatalf("site index: HTTP %d, %s, %d bytes", resp.StatusCode, resp.Proto, len(body))
		}
		req, _ := http.NewRequest("GET", base+"/about.html", nil)
		req.Host = "blog.cdn.test"
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != fmt.Sprintf("https://blog.cdn.test:%d/about.html", httpsPort) {
			t.Fatalf("plain HTTP by name: HTTP %d to %q, want 308 to the HTTPS port", resp.StatusCode, loc)
		}
		if resp, body := fetch(t, "blog.cdn.test", "/img/logo.png"); resp.StatusCode != 200 || body != want(t, "img/logo.png") ||
			resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("image: HTTP %d, %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	})

	// Caddy's encode compresses what the edge sends, misses and response
	// cache hits alike, in whatever encoding each request asks for; what
	// one request's encoding did to the headers never leaks into the next.
	t.Run("Caddy's encode compresses misses and hits alike", func(t *testing.T) {
		for _, path := range []string{"/css/style.css", "/docs/"} {
			file := strings.TrimPrefix(path, "/")
			if strings.HasSuffix(file, "/") {
				file += "index.html"
			}
			for i, enc := range []string{"gzip", "zstd", "identity", "zstd", "gzip", ""} {
				resp, raw := fetch(t, "blog.cdn.test", path, "Accept-Encoding", enc)
				if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(raw)) {
					t.Fatalf("%s #%d (%s): Content-Length %s but %d bytes sent", path, i, enc, cl, len(raw))
				}
				got, ce := raw, resp.Header.Get("Content-Encoding")
				switch ce {
				case "gzip":
					zr, err := gzip.NewReader(strings.NewReader(raw))
					if err != nil {
						t.Fatalf("%s #%d: %v", path, i, err)
					}
					b, err := io.ReadAll(zr)
					if err != nil {
						t.Fatalf("%s #%d: gunzip: %v", path, i, err)
					}
					got = string(b)
				case "zstd":
					zr, err := zstd.NewReader(strings.NewReader(raw))
					if err != nil {
						t.Fatalf("%s #%d: %v", path, i, err)
					}
					b, err := io.ReadAll(zr)
					zr.Close()
					if err != nil {
						t.Fatalf("%s #%d: unzstd: %v", path, i, err)
					}
					got = string(b)
				case "":
				default:
					t.Fatalf("%s #%d: Content-Encoding %q", path, i, ce)
				}
				if wantCE := map[string]string{"gzip": "gzip", "zstd": "zstd"}[enc]; ce != wantCE {
					t.Fatalf("%s #%d asked %q, got Content-Encoding %q", path, i, enc, ce)
				}
				if resp.StatusCode != 200 || got != want(t, file) {
					t.Fatalf("%s #%d (%s): HTTP %d, %d bytes decoded, want the file's %d", path, i, enc, resp.StatusCode, len(got), len(want(t, file)))
				}
			}
		}
	})

	t.Run("a missing page, the path and the subdomain gateways", func(t *testing.T) {
		if resp, body := fetch(t, "blog.cdn.test", "/nope.html"); resp.StatusCode != 404 || body != want(t, "404.html") {
			t.Fatalf("missing page: HTTP %d, want the site's 404.html", resp.StatusCode)
		}
		if resp, body := fetch(t, "127.0.0.1", "/ipfs/"+root+"/about.html"); resp.StatusCode != 200 || body != want(t, "about.html") ||
			!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
			t.Fatalf("path gateway: HTTP %d, Cache-Control %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
		// The subdomain gateway: {cid}.ipfs.cdn.test.
		if resp, body := fetch(t, root+".ipfs.cdn.test", "/about.html"); resp.StatusCode != 200 || body != want(t, "about.html") {
			t.Fatalf("subdomain gateway: HTTP %d, %d bytes", resp.StatusCode, len(body))
		}
	})

	t.Run("Range, HEAD and conditional requests, on a miss and on a hit", func(t *testing.T) {
		manual := want(t, "docs/manual.txt")
		for i := range 2 {
			resp, body := fetch(t, "blog.cdn.test", "/docs/manual.txt", "Range", "bytes=100-1099")
			if resp.StatusCode != 206 || body != manual[100:1100] ||
				resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-1099/%d", len(manual)) {
				t.Fatalf("range #%d: HTTP %d, Content-Range %q, %d bytes", i, resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
			}
			if i == 0 {
				fetch(t, "blog.cdn.test", "/docs/manual.txt") // now a whole answer is cached
			}
		}
		// HEAD of a page not asked for yet (a miss), then after a GET kept it
		// (a hit).
		about := want(t, "about.html")
		for i := range 2 {
			resp, body := do(t, "HEAD", "blog.cdn.test", "/about.html")
			if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != strconv.Itoa(len(about)) {
				t.Fatalf("HEAD #%d: HTTP %d, Content-Length %q, %d body bytes", i, resp.StatusCode, resp.Header.Get("Content-Length"), len(body))
			}
			if i == 0 {
				fetch(t, "blog.cdn.test", "/about.html")
			}
		}
		resp, _ := fetch(t, "blog.cdn.test", "/img/logo.png")
		etag := resp.Header.Get("Etag")
		for _, u := range []struct{ host, path string }{
			{"blog.cdn.test", "/img/logo.png"},               // a hit
			{"127.0.0.1", "/ipfs/" + root + "/img/logo.png"}, // a miss: same file, same ETag
			{root + ".ipfs.cdn.test", "/img/logo.png"},       // and again by subdomain
		} {
			if resp, body := fetch(t, u.host, u.path, "If-None-Match", etag); etag == "" || resp.StatusCode != 304 || body != "" {
				t.Fatalf("%s%s If-None-Match %s: HTTP %d, %d bytes", u.host, u.path, etag, resp.StatusCode, len(body))
			}
		}
	})

	// Every file of the site, twice (the second time from the caches):
	// the rotten peer changed no byte.
	t.Run("every file twice: the rotten peer changed no byte", func(t *testing.T) {
		err := filepath.WalkDir(site, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(site, p)
			for i := range 2 {
				if resp, body := fetch(t, "blog.cdn.test", "/"+filepath.ToSlash(rel)); resp.StatusCode != 200 || body != want(t, rel) {
					t.Fatalf("%s #%d: HTTP %d, %d bytes, want the file's %d", rel, i, resp.StatusCode, len(body), len(want(t, rel)))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	// The edge read the striped blocks from the peers itself: the origin,
	// which keeps no copy, read none for it.
	t.Run("the edge read the striped blocks itself, and its disk cache verifies", func(t *testing.T) {
		_, metrics := testkit.Get(t, o.url+"/metrics", "")
		for _, line := range strings.Split(string(metrics), "\n") {
			if strings.HasPrefix(line, `topcdn_origin_striped_reads_total{result="ok"}`) && !strings.HasSuffix(line, " 0") {
				t.Fatalf("origin served striped blocks to the edge: %s", line)
			}
		}
		// The disk cache filled, and every block in it matches its CID.
		cached := checkDiskCache(t, filepath.Join(dir, "edge-cache"))
		if cached < 2 {
			t.Fatalf("disk cache has %d blocks", cached)
		}
	})

	// The edge told the router where it is and how much it served, and,
	// stopping, sent billing a signed batch with a record per response.
	if !t.Run("heartbeats, and a receipt batch when the edge stops", func(t *testing.T) {
		testkit.WaitFor(t, 10*time.Second, "a heartbeat counting the requests and, for billing, their bytes this epoch", func() bool {
			hb, _ := reports.last()
			return hb.Requests > 0 && hb.Epoch > 0 && hb.EpochBytes+hb.PrevEpochBytes > 0
		})
		hb, _ := reports.last()
		if hb.URL != fmt.Sprintf("http://127.0.0.1:%d", port) || len(hb.Addrs) != 1 || hb.Addrs[0] != "127.0.0.1" || hb.City != "Frankfurt" {
			t.Fatalf("heartbeat %+v", hb)
		}
		edge.Stop(t)
		_, batch := reports.last()
		if batch == nil || len(batch.Records) == 0 || batch.Edge != hb.Peer {
			t.Fatalf("no receipt batch from the edge %s at shutdown (%+v)\n%s", hb.Peer, batch, edge.Tail(40))
		}
		var served int64
		for _, r := range batch.Records {
			served += r.Bytes
		}
		if served < int64(len(want(t, "index.html"))) {
			t.Fatalf("the batch claims %d bytes for %d records", served, len(batch.Records))
		}
		// What the heartbeats said of the epoch bounds what billing pays:
		// the batch holds every byte they counted, and no more than was
		// served.
		if batch.Epoch == hb.Epoch && uint64(served) < hb.EpochBytes {
			t.Fatalf("the batch of epoch %d claims %d bytes, its heartbeats counted %d", batch.Epoch, served, hb.EpochBytes)
		}
	}) {
		return
	}

	// A stock Caddy built with the module (cmd/caddy, what xcaddy makes)
	// serves the same site from the same Caddyfile.
	caddyBin := filepath.Join(dir, "caddy")
	if out, err := exec.Command("go", "build", "-o", caddyBin, "../caddy").CombinedOutput(); err != nil {
		t.Fatalf("build cmd/caddy: %v\n%s", err, out)
	}
	port2 := freePort(t)
	c2 := strings.ReplaceAll(c, fmt.Sprintf("http://:%d", port), fmt.Sprintf("http://:%d", port2))
	c2 = strings.ReplaceAll(c2, dir+"/edge-cache", dir+"/edge-cache-2")
	adminPort := freePort(t)
	c2 = strings.Replace(c2, "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	if err := os.WriteFile(caddyfile+"2", []byte(c2), 0o644); err != nil {
		t.Fatal(err)
	}
	stock := testkit.Start(t, caddyBin, "run", "--config", caddyfile+"2", "--adapter", "caddyfile")
	base = fmt.Sprintf("http://127.0.0.1:%d", port2)
	stock.WaitUntil(t, 30*time.Second, "stock Caddy to serve", func(ctx context.Context) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port2))
		if err == nil {
			c.Close()
		}
		return err
	})
	tlsTransport.CloseIdleConnections() // the connections were to the edge, stopped
	waitTLS()
	if !t.Run("a stock Caddy built with the module serves the same site", func(t *testing.T) {
		if resp, body := fetch(t, "blog.cdn.test", "/about.html"); resp.StatusCode != 200 || body != want(t, "about.html") {
			t.Fatalf("stock Caddy: HTTP %d, %d bytes", resp.StatusCode, len(body))
		}
	}) {
		return
	}

	// A config reload keeps what the edge cached and learnt: with the
	// origin gone, the reloaded edge still serves the page from the
	// previous config's caches (a new, empty edge could not even resolve
	// the name).
	t.Run("a reload keeps what the edge cached, with the origin gone", func(t *testing.T) {
		o.Stop(t)
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), strings.NewReader(c2))
		req.Header.Set("Content-Type", "text/caddyfile")
		req.Header.Set("Cache-Control", "must-revalidate") // reload even though the config is the same
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reload: HTTP %d %s\n%s", resp.StatusCode, msg, stock.Tail(40))
		}
		if resp, body := fetch(t, "blog.cdn.test", "/about.html"); resp.StatusCode != 200 || body != want(t, "about.html") {
			t.Fatalf("after a reload, with the origin gone: HTTP %d, %d bytes\n%s", resp.StatusCode, len(body), stock.Tail(40))
		}
	})
}

// checkDiskCache verifies every block file of an edge's disk cache
// (DIR/<shard>/<CIDv1>) against its name and returns how many there are;
// DIR/answers holds the origin's last answers (names, manifests, peers).
func checkDiskCache(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p == filepath.Join(dir, "answers") {
			return fs.SkipDir // the origin's last answers, not blocks
		}
		if err != nil || d.IsDir() || filepath.Dir(p) == dir {
			return err // the marker file sits at the top
		}
		c, err := cid.Decode(d.Name())
		if err != nil {
			return fmt.Errorf("%s: not a block file: %w", p, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if got, err := c.Prefix().Sum(b); err != nil || !got.Equals(c) {
			return fmt.Errorf("%s: the cached bytes do not hash to their CID", p)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startEdge runs `topcdn edge --config FILE` and waits for it to load.
func startEdge(t *testing.T, bin, caddyfile string) *testkit.Process {
	t.Helper()
	p := testkit.Start(t, bin, "edge", "--config", caddyfile)
	p.WaitLine(t, "edge running")
	return p
}

// edgeReports stands in for the DNS router and billing: it keeps the last
// heartbeat and receipt batch an edge sent, each checked against its
// signature.
type edgeReports struct {
	mu    sync.Mutex
	hb    dnsrouteapi.Heartbeat
	batch *billingapi.Batch
}

func (s *edgeReports) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/api/v1/edges/heartbeat":
		var env identity.Envelope
		var hb dnsrouteapi.Heartbeat
		if err := json.Unmarshal(body, &env); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if signer, err := env.Open(dnsrouteapi.TypeHeartbeat, &hb); err != nil || signer.String() != hb.Peer {
			http.Error(w, fmt.Sprint("bad heartbeat: ", err), 403)
			return
		}
		s.hb = hb
	case "/api/v1/batches":
		_, b, _, err := billingapi.DecodeBatch(body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.batch = b
	default:
		http.NotFound(w, r)
	}
}

func (s *edgeReports) last() (dnsrouteapi.Heartbeat, *billingapi.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hb, s.batch
}
