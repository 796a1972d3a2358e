package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/edge"
	"github.com/topcdn/topcdn/internal/testkit"
)

// readBytes returns a storage peer's topcdn_storage_read_bytes_total: the
// bytes it served, every one under a read order it keeps for its claims.
func readBytes(t *testing.T, addr string) int64 {
	t.Helper()
	if !strings.HasPrefix(addr, "http") {
		addr = "http://" + addr
	}
	code, body := testkit.Get(t, addr+"/metrics", "")
	if code != 200 {
		t.Fatalf("peer metrics: HTTP %d", code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "topcdn_storage_read_bytes_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("peer metrics: %q: %v", line, err)
			}
			return int64(f)
		}
	}
	t.Fatalf("peer metrics lack topcdn_storage_read_bytes_total:\n%s", body)
	return 0
}

// TestBillingThroughEdge is issue #7 end to end on loopback, every party a
// process: an origin that stripes, two storage peers that claim their read
// orders from billing, billing, and a real edge (`topcdn edge --config
// Caddyfile`) that reads the striped site from the peers with signed read
// orders and reports each response to billing. The test fetches a fixed
// list of files through the edge, stops it (its reporter flushes), settles
// and checks that the edge is credited price × the body bytes the test
// received, each peer price × the bytes it served under read orders, and
// the publisher debited the sum.
func TestBillingThroughEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	start := time.Now()
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	pubKey := filepath.Join(dir, "publisher.key")
	pubID := strings.TrimSpace(testkit.Run(t, bin, "keygen", "--out", pubKey))
	edgeKey := filepath.Join(dir, "edge.key")
	edgeID := strings.TrimSpace(testkit.Run(t, bin, "keygen", "--out", edgeKey))
	// The edge sends no heartbeats here: a stand-in router vouches for it
	// (the devnet runs the real one).
	o, b := startStripedBilling(t, bin, dir, 2, 1, vouchingRouter(t, "name:blog", edgesOf(edgeID)))
	bdir := filepath.Join(dir, "billing")
	admitEdges(t, bin, b.url, bdir, edgeID)
	var edgeProc *testkit.Process
	var peerIDs []string
	defer func() {
		if t.Failed() {
			t.Logf("billing log:\n%s", b.Tail(40))
			if edgeProc != nil {
				t.Logf("edge log:\n%s", edgeProc.Tail(40))
			}
			for _, id := range append([]string{edgeID}, peerIDs...) {
				out, _ := exec.Command(bin, "billing", "statement", "--billing", b.url, "--account", id, "--json").CombinedOutput()
				t.Logf("statement of %s:\n%s", id, out)
			}
		}
	}()
	// Three peers for 2 + 1 shards: the edge reads the data shards, so
	// two peers serve it.
	startClaimingPeers(t, bin, dir, o.url, b.url, 3)
	const deposit = 100_000_000
	testkit.Run(t, bin, "billing", "deposit", "--billing", b.url, "--key", filepath.Join(bdir, "billing.key"),
		"--account", pubID, "--amount", strconv.Itoa(deposit), "--nonce", "start")

	site := "../../examples/site"
	peers := map[string]string{} // peer ID → address
	if !t.Run("the publish is striped", func(t *testing.T) {
		publishStriped(t, bin, o.url, pubKey, site)
		for id, p := range peersByID(t, o.url) {
			peers[id] = p.Addr
			peerIDs = append(peerIDs, id)
		}
	}) {
		return
	}

	// The edge, with its key, reporting to billing in billing's epochs. No
	// encode directive: the body bytes the edge reports are the bytes the
	// client receives.
	port := freePort(t)
	conf := fmt.Sprintf(`{
	auto_https off
	admin off
	persist_config off
}

http://:%d {
	bind 127.0.0.1
	topcdn {
		origin %s
		domain cdn.test
		memory_cache 64MiB
		key %s
		billing %s
		billing_epoch 1s
	}
}
`, port, o.url, edgeKey, b.url)
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	edgeProc = startEdge(t, bin, caddyfile)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 20 * time.Second}
	get := func(t *testing.T, host, path string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s%s: %v", host, path, err)
		}
		return resp.StatusCode, body
	}

	// The health probe is not a content response; billing never sees it.
	if !t.Run("the edge says who it is: the key the test gave it", func(t *testing.T) {
		var health struct {
			Peer string `json:"peer"`
		}
		if code, body := get(t, "127.0.0.1", edge.HealthPath); code != 200 || json.Unmarshal(body, &health) != nil || health.Peer != edgeID {
			t.Fatalf("health: HTTP %d %s, want peer %s", code, body, edgeID)
		}
	}) {
		return
	}

	// Known files only, each twice (the second from the edge's caches): a
	// missing file's 404 page, a redirect or a favicon would be a response
	// billing rightly pays nothing (or something else) for.
	var received int64
	if !t.Run("the edge serves known files, twice", func(t *testing.T) {
		files := map[string]string{
			"/":                           "index.html",
			"/about.html":                 "about.html",
			"/blog/2026/hello-world.html": "blog/2026/hello-world.html",
			"/css/style.css":              "css/style.css",
			"/docs/getting-started.html":  "docs/getting-started.html",
			"/docs/manual.txt":            "docs/manual.txt",
			"/img/logo.png":               "img/logo.png",
			"/img/pattern.svg":            "img/pattern.svg",
		}
		for range 2 {
			for path, file := range files {
				want, err := os.ReadFile(filepath.Join(site, file))
				if err != nil {
					t.Fatal(err)
				}
				code, body := get(t, "blog.cdn.test", path)
				if code != 200 || string(body) != string(want) {
					t.Fatalf("GET blog.cdn.test%s: HTTP %d, %d bytes, want the %d bytes of %s", path, code, len(body), len(want), file)
				}
				received += int64(len(body))
			}
		}
	}) {
		return
	}

	want := map[string]int64{}
	var servedByPeers int64
	if !t.Run("settlement pays the edge and the peers what they served", func(t *testing.T) {
		// SIGTERM: Caddy cleans the module up and the reporter sends the open
		// epoch's batch before the process exits.
		edgeProc.Stop(t)
		// Settle until the peers' claims are in and every epoch is closed and
		// paid. The peers' expected credit is what they served under read
		// orders, by their own counters (they serve nothing without one).
		settleUntilPaid(t, bin, b.url, func() map[string]int64 {
			servedByPeers = 0
			clear(want)
			want[edgeID] = pricePerByte * received
			for id, addr := range peers {
				n := readBytes(t, addr)
				want[id] = pricePerByte * n
				servedByPeers += n
			}
			want[pubID] = deposit - pricePerByte*(received+servedByPeers)
			return want
		})
		readers := 0
		for id := range peers {
			if want[id] > 0 {
				readers++
			}
		}
		if readers < 2 {
			t.Fatalf("the edge read from %d storage peers, want the 2 holding data shards", readers)
		}
		testkit.Run(t, bin, "billing", "settle", "--billing", b.url) // idempotent
		for id, w := range want {
			if w == 0 { // a peer holding parity only: billing never saw it
				continue
			}
			st := statement(t, bin, b.url, id)
			var sum, bytes int64
			for _, e := range st.Entries {
				sum += e.Amount
				if e.Kind == "served" || e.Kind == "storage_read" {
					bytes += e.Bytes
				}
			}
			if st.Balance != w || sum != w || st.Account != id {
				t.Errorf("%s: balance %d, entries sum %d, want %d", id, st.Balance, sum, w)
			}
			if len(st.Rejected) != 0 || len(st.Deferred) != 0 {
				t.Errorf("%s: refused %+v, deferred %+v", id, st.Rejected, st.Deferred)
			}
			if id != pubID && bytes*pricePerByte != w {
				t.Errorf("%s: entries price %d bytes, want %d", id, bytes, w/pricePerByte)
			}
		}
	}) {
		return
	}

	t.Run("the origin read nothing striped and the accounts balance", func(t *testing.T) {
		_, metrics := testkit.Get(t, o.url+"/metrics", "")
		for _, line := range strings.Split(string(metrics), "\n") {
			if strings.HasPrefix(line, "topcdn_origin_striped_reads_total{") && !strings.HasSuffix(line, " 0") {
				t.Errorf("the origin read striped blocks from the peers: %s", line)
			}
		}
		if s := accountsSum(t, b.url); s != 0 {
			t.Errorf("accounts sum to %d, want 0", s)
		}
	})
	t.Logf("edge served %d bytes, peers %d bytes, publisher paid %d; %s", received, servedByPeers,
		deposit-want[pubID], time.Since(start).Round(time.Millisecond))
}
