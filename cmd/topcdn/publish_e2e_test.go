package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/internal/testkit"
)

// writeHAMTSite writes a site whose one directory, files/, holds just
// enough tiny files for boxo to shard it as a HAMT: its links (a
// 15-byte name and a 36-byte CIDv1 each) add up to more than
// uio.HAMTShardingSize (256 KiB), so more than 5140 entries.
func writeHAMTSite(t *testing.T, site string) (entries int) {
	t.Helper()
	entries = uio.HAMTShardingSize/(len("entry-00000.txt")+36) + 200
	files := filepath.Join(site, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if err := os.WriteFile(filepath.Join(files, fmt.Sprintf("entry-%05d.txt", i)), []byte(fmt.Sprintf("entry %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("<h1>many files</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	return entries
}

// fetchCompleteCAR downloads root from a Trustless Gateway as one CAR
// (dag-scope=all), verifies every block against its CID, and checks that
// the CAR is the whole DAG: every link of every block is in it. It returns
// the number of blocks.
func fetchCompleteCAR(t *testing.T, gatewayURL string, root cid.Cid) int {
	t.Helper()
	code, data := testkit.Get(t, gatewayURL+"/ipfs/"+root.String()+"?format=car&dag-scope=all", "application/vnd.ipld.car")
	if code != http.StatusOK {
		t.Fatalf("CAR of %s: HTTP %d %.300s", root, code, data)
	}
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || br.Roots[0] != root {
		t.Fatalf("CAR roots %v, want [%s]", br.Roots, root)
	}
	blocks := map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("CAR of %s: %v", root, err)
		}
		if err := dag.Verify(b.Cid(), b.RawData()); err != nil {
			t.Fatalf("CAR of %s: %v", root, err)
		}
		blocks[b.Cid()] = b.RawData()
	}
	for c, raw := range blocks {
		links, err := dag.Links(c, raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if _, ok := blocks[l]; !ok && !dag.IsIdentity(l) {
				t.Fatalf("CAR of %s lacks %s, linked from %s", root, l, c)
			}
		}
	}
	if _, ok := blocks[root]; !ok {
		t.Fatalf("CAR of %s lacks its root", root)
	}
	return len(blocks)
}

// TestPublishHAMTEndToEnd publishes, for real, a site with a directory big
// enough to be HAMT-sharded: through the origin, striped onto storage
// peers, and read back through an edge as a Trustless Gateway CAR, every
// block verified. `topcdn publish` used to crash on such a directory (a
// nil dereference in its DAG service) while --only-hash worked.
func TestPublishHAMTEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin, 6 storage peers and an edge")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	site := filepath.Join(dir, "site")
	entries := writeHAMTSite(t, site)

	o := startOrigin(t, bin, filepath.Join(dir, "origin"), "--data-shards", "4", "--parity-shards", "2",
		"--segment-size", "256KiB", "--chunk-size", "4KiB", "--heartbeat-interval", "1s")
	defer func() {
		if t.Failed() {
			t.Logf("origin log (last lines):\n%s", o.Tail(30))
		}
	}()
	for i := range 6 {
		startPeer(t, bin, dir, o.url, i)
	}

	var root string
	if !t.Run("publish is striped and gives --only-hash's root", func(t *testing.T) {
		want := strings.TrimSpace(testkit.Run(t, bin, "publish", "--only-hash", "-Q", site))
		waitHealthyPeers(t, o.url, 6)
		root = publishStriped(t, bin, o.url, key, site)
		if root != want {
			t.Fatalf("published root %s, --only-hash said %s", root, want)
		}
		if ni := lookupName(t, o.url, "blog"); ni.CID != root {
			t.Fatalf("blog -> %s, want %s", ni.CID, root)
		}
	}) {
		return
	}

	port := freePort(t)
	caddyfile := filepath.Join(dir, "Caddyfile")
	conf := fmt.Sprintf(`{
	auto_https off
	admin off
	persist_config off
}

http://127.0.0.1:%d {
	topcdn {
		origin %s
		domain cdn.test
		memory_cache 64MiB
	}
}
`, port, o.url)
	if err := os.WriteFile(caddyfile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startEdge(t, bin, caddyfile)
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d", port)

	t.Run("the edge serves the whole DAG as one verified CAR", func(t *testing.T) {
		n := fetchCompleteCAR(t, edgeURL, cid.MustParse(root))
		// Every file is a block; the root and files/ are more.
		if n < entries+2 {
			t.Fatalf("CAR holds %d blocks for %d files", n, entries)
		}
	})

	t.Run("the edge resolves a path through the shards", func(t *testing.T) {
		for _, i := range []int{0, entries / 2, entries - 1} {
			name := fmt.Sprintf("entry-%05d.txt", i)
			code, body := testkit.Get(t, edgeURL+"/ipfs/"+root+"/files/"+name+"?format=raw", "")
			// The path gateway answers the file's block, raw.
			if want := fmt.Sprintf("entry %d\n", i); code != http.StatusOK || string(body) != want {
				t.Fatalf("%s through the edge: HTTP %d %q, want %q", name, code, body, want)
			}
		}
	})
}
