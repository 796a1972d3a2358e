package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// service is a running topcdn service and the URL it listens on.
type service struct {
	*testkit.Process
	url string
}

// startOrigin runs `topcdn origin` on a free loopback port and waits until
// it says it is listening.
func startOrigin(t *testing.T, bin, data string, extra ...string) *service {
	t.Helper()
	return startService(t, bin, append([]string{"origin", "--data", data, "--listen", "127.0.0.1:0"}, extra...)...)
}

// startService runs a topcdn service and waits for its "listening on" line.
func startService(t *testing.T, bin string, args ...string) *service {
	t.Helper()
	return listening(t, testkit.Start(t, bin, args...))
}

// listening waits for a started service's "listening on" line.
func listening(t *testing.T, p *testkit.Process) *service {
	t.Helper()
	return &service{Process: p, url: p.WaitLine(t, "listening on ")}
}

func lookupName(t *testing.T, originURL, name string) originapi.NameInfo {
	t.Helper()
	code, body := testkit.Get(t, originURL+"/api/v1/names/"+name, "")
	if code != 200 {
		t.Fatalf("GET name %s: %d %s", name, code, body)
	}
	var ni originapi.NameInfo
	if err := json.Unmarshal(body, &ni); err != nil {
		t.Fatal(err)
	}
	return ni
}

// fetchDAG walks the DAG under root block by block as raw responses,
// verifying each, and returns the set of blocks.
func fetchDAG(t *testing.T, originURL string, root cid.Cid) map[cid.Cid]bool {
	t.Helper()
	seen := map[cid.Cid]bool{}
	queue := []cid.Cid{root}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if seen[c] {
			continue
		}
		seen[c] = true
		code, data := testkit.Get(t, originURL+"/ipfs/"+c.String(), "application/vnd.ipld.raw")
		if code != 200 {
			t.Fatalf("raw %s: %d %s", c, code, data)
		}
		if err := dag.Verify(c, data); err != nil {
			t.Fatalf("raw block from origin: %v", err)
		}
		links, err := dag.Links(c, data)
		if err != nil {
			t.Fatal(err)
		}
		queue = append(queue, links...)
	}
	return seen
}

// fetchCAR downloads root as a CAR (dag-scope=all) and verifies every block.
func fetchCAR(t *testing.T, originURL string, root cid.Cid) map[cid.Cid]bool {
	t.Helper()
	code, data := testkit.Get(t, originURL+"/ipfs/"+root.String()+"?format=car&dag-scope=all", "")
	if code != 200 {
		t.Fatalf("car %s: %d %s", root, code, data)
	}
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || br.Roots[0] != root {
		t.Fatalf("CAR roots %v, want [%s]", br.Roots, root)
	}
	got := map[cid.Cid]bool{}
	for {
		b, err := br.Next() // verifies each block's hash
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("CAR from origin: %v", err)
		}
		got[b.Cid()] = true
	}
	return got
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	peerID := strings.TrimSpace(testkit.Run(t, bin, "keygen", "--out", key))
	if !strings.HasPrefix(peerID, "12D3KooW") {
		t.Fatalf("keygen printed %q, want an ed25519 peer ID", peerID)
	}
	o := startOrigin(t, bin, filepath.Join(dir, "origin"))
	site := filepath.Join(dir, "site")
	copyDir(t, "../../examples/site", site)

	var root string
	if !t.Run("publish the example site", func(t *testing.T) {
		want := strings.TrimSpace(testkit.Run(t, bin, "publish", "--only-hash", "-Q", site))
		root = strings.TrimSpace(testkit.Run(t, bin, "publish", site, "--name", "blog", "--origin", o.url, "--key", key, "-Q"))
		if root != want {
			t.Fatalf("published root %s, --only-hash said %s", root, want)
		}
		if ni := lookupName(t, o.url, "blog"); ni.CID != root || ni.Sequence != 1 {
			t.Fatalf("blog -> %+v, want %s at sequence 1", ni, root)
		}
	}) {
		return
	}

	var raw map[cid.Cid]bool
	if !t.Run("every block comes back verified, raw and in one CAR", func(t *testing.T) {
		rootCID := cid.MustParse(root)
		raw = fetchDAG(t, o.url, rootCID)
		carBlocks := fetchCAR(t, o.url, rootCID)
		if len(raw) < 15 || len(raw) != len(carBlocks) {
			t.Fatalf("%d blocks as raw, %d in the CAR", len(raw), len(carBlocks))
		}
		for c := range raw {
			if !carBlocks[c] {
				t.Fatalf("CAR lacks %s", c)
			}
		}
	}) {
		return
	}

	if !t.Run("a republish sends only the changed blocks and moves the name", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(site, "about.html"), []byte("<h1>About this site, v2</h1>"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := exec.Command(bin, "publish", site, "--name", "blog", "--origin", o.url, "--key", key)
		var stderr bytes.Buffer
		out.Stderr = &stderr
		if err := out.Run(); err != nil {
			t.Fatalf("republish: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "uploaded 2 of") {
			t.Errorf("republish of one changed file should send only its new leaf and the new root: %s", stderr.String())
		}
		ni := lookupName(t, o.url, "blog")
		if ni.CID == root || ni.Sequence != 2 {
			t.Fatalf("after republish blog -> %+v, want a new root at sequence 2", ni)
		}
		newRoot := cid.MustParse(ni.CID)
		if n := len(fetchDAG(t, o.url, newRoot)); n != len(raw) {
			t.Fatalf("new version has %d blocks, want %d", n, len(raw))
		}
	}) {
		return
	}

	t.Run("another key cannot take the name", func(t *testing.T) {
		other := filepath.Join(dir, "other.key")
		testkit.Run(t, bin, "keygen", "--out", other)
		steal := exec.Command(bin, "publish", site, "--name", "blog", "--origin", o.url, "--key", other)
		if msg, err := steal.CombinedOutput(); err == nil || !strings.Contains(string(msg), "belongs to another key") {
			t.Fatalf("publishing blog with another key: err=%v\n%s", err, msg)
		}
	})

	t.Run("uploads are signed and charged to their signer", func(t *testing.T) {
		resp, err := http.Post(o.url+"/api/v1/car", "application/vnd.ipld.car", bytes.NewReader(nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unsigned upload: HTTP %d, want 401", resp.StatusCode)
		}
		code, body := testkit.Get(t, o.url+"/api/v1/publishers/"+peerID, "")
		var u originapi.PublisherUsage
		if err := json.Unmarshal(body, &u); code != 200 || err != nil || u.UsedBytes <= 0 || u.Uploads != 2 || u.Roots != 2 || u.QuotaBytes != 10<<30 {
			t.Fatalf("publisher usage: HTTP %d %s, want 2 uploads of 2 roots under the 10 GiB default quota", code, body)
		}
	})

	t.Run("a publisher over its quota is refused and told why", func(t *testing.T) {
		small := startOrigin(t, bin, filepath.Join(dir, "small"), "--no-stripe", "--publisher-quota", "4KiB")
		over := exec.Command(bin, "publish", site, "--name", "blog", "--origin", small.url, "--key", key)
		if msg, err := over.CombinedOutput(); err == nil || !strings.Contains(string(msg), "HTTP 413") || !strings.Contains(string(msg), "quota") {
			t.Fatalf("publishing over a 4 KiB quota: err=%v\n%s", err, msg)
		}
	})
}

// writeRandomSite writes n MiB of incompressible files under dir.
func writeRandomSite(t *testing.T, dir string, mib int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range mib {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%03d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKillDuringPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	data := filepath.Join(dir, "origin")
	o := startOrigin(t, bin, data)

	var root1 string
	if !t.Run("publish the first version", func(t *testing.T) {
		v1 := filepath.Join(dir, "v1")
		copyDir(t, "../../examples/site", v1)
		root1 = strings.TrimSpace(testkit.Run(t, bin, "publish", v1, "--name", "site", "--origin", o.url, "--key", key, "-Q"))
	}) {
		return
	}

	// Start publishing a bigger version, and kill -9 the origin while the
	// upload is streaming in.
	v2 := filepath.Join(dir, "v2")
	if !t.Run("kill -9 the origin mid-upload", func(t *testing.T) {
		writeRandomSite(t, v2, 96, 7)
		pub := exec.Command(bin, "publish", v2, "--name", "site", "--origin", o.url, "--key", key, "-Q")
		var pubErr bytes.Buffer
		pub.Stderr = &pubErr
		if err := pub.Start(); err != nil {
			t.Fatal(err)
		}
		staging := filepath.Join(data, "staging")
		deadline := time.Now().Add(60 * time.Second)
		for {
			entries, _ := os.ReadDir(staging)
			if len(entries) > 0 {
				if info, err := entries[0].Info(); err == nil && info.Size() > 1<<20 {
					break
				}
			}
			if time.Now().After(deadline) {
				pub.Process.Kill()
				pub.Wait()
				t.Fatal("upload never started")
			}
			time.Sleep(2 * time.Millisecond)
		}
		o.Kill()
		if err := pub.Wait(); err == nil {
			t.Fatal("publish succeeded although the origin was killed mid-upload")
		}
	}) {
		return
	}

	o = startOrigin(t, bin, data)
	if !t.Run("restarted, the name serves the old version, complete", func(t *testing.T) {
		if ni := lookupName(t, o.url, "site"); ni.CID != root1 {
			t.Fatalf("after kill -9, site -> %s, want the old %s", ni.CID, root1)
		}
		fetchDAG(t, o.url, cid.MustParse(root1))
	}) {
		return
	}

	t.Run("the publish can be retried and completes", func(t *testing.T) {
		root2 := strings.TrimSpace(testkit.Run(t, bin, "publish", v2, "--name", "site", "--origin", o.url, "--key", key, "-Q"))
		if ni := lookupName(t, o.url, "site"); ni.CID != root2 {
			t.Fatalf("after retry, site -> %s, want %s", ni.CID, root2)
		}
		if n := len(fetchCAR(t, o.url, cid.MustParse(root2))); n < 96*4 {
			t.Fatalf("retried version has %d blocks", n)
		}
	})
}

// checkRoleMetrics checks that a role's /metrics at base names its build
// (topcdn_build_info) and carries the Go runtime and process collectors,
// as every role's does.
func checkRoleMetrics(t *testing.T, base string) {
	t.Helper()
	code, body := testkit.Get(t, strings.TrimSuffix(base, "/")+"/metrics", "")
	if code != 200 {
		t.Fatalf("GET %s/metrics: %d", base, code)
	}
	for _, want := range []string{"topcdn_build_info{", "go_goroutines ", "process_start_time_seconds "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("%s/metrics lacks %s", base, strings.TrimSpace(want))
		}
	}
}
