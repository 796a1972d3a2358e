package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

// storageProc is a running `topcdn storage` peer.
type storageProc struct {
	*service
	data string
	id   string
}

func startPeer(t *testing.T, bin, dir, originURL string, i int) *storageProc {
	t.Helper()
	data := filepath.Join(dir, "peer", string(rune('a'+i)))
	p := startService(t, bin, "storage", "--data", data, "--listen", "127.0.0.1:0", "--origin", originURL,
		"--heartbeat", "1s", "--capacity", "64MiB")
	var st struct {
		PeerID string `json:"peer_id"`
	}
	testkit.GetJSON(t, p.url+"/status", &st)
	return &storageProc{service: p, data: data, id: st.PeerID}
}

// rotShards flips every byte of every shard a storage peer keeps in its
// data dir, as a disk that rots (or a peer that lies) would.
func rotShards(t *testing.T, data string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(data, "shards"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i := range b {
			b[i] ^= 0xa5
		}
		n++
		return os.WriteFile(p, b, 0o600)
	})
	if err != nil || n == 0 {
		t.Fatalf("rotting the shards in %s: %d files, %v", data, n, err)
	}
}

func peersByID(t *testing.T, originURL string) map[string]originapi.PeerInfo {
	t.Helper()
	var ps []originapi.PeerInfo
	testkit.GetJSON(t, originURL+"/api/v1/peers", &ps)
	out := map[string]originapi.PeerInfo{}
	for _, p := range ps {
		out[p.ID] = p
	}
	return out
}

func manifest(t *testing.T, originURL string, root string) *erasure.Manifest {
	t.Helper()
	var env identity.Envelope
	testkit.GetJSON(t, originURL+"/api/v1/manifests/"+root, &env)
	var health struct {
		PeerID string `json:"peer_id"`
	}
	testkit.GetJSON(t, originURL+"/healthz", &health)
	m, err := erasure.OpenManifest(&env, peer.ID(mustPeer(t, health.PeerID)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustPeer(t *testing.T, s string) peer.ID {
	t.Helper()
	p, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkSite fetches every file of the site directory through the origin's
// gateway and compares it with the file on disk.
func checkSite(t *testing.T, originURL, root, site string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(site, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(site, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		code, got := testkit.Get(t, originURL+"/ipfs/"+root+"/"+filepath.ToSlash(rel), "")
		if code != 200 || !bytes.Equal(got, want) {
			t.Fatalf("%s: HTTP %d, %d bytes, want %d identical bytes", rel, code, len(got), len(want))
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("checked only %d files", n)
	}
}

// allShardsOn reports whether every shard of m is held by one of alive.
func allShardsOn(m *erasure.Manifest, alive map[string]bool) bool {
	for _, seg := range m.Segments {
		for _, sh := range seg.Shards {
			if !alive[sh.Peer] {
				return false
			}
		}
	}
	return true
}

// waitHealthyPeers waits until the origin at originURL sees n healthy
// storage peers.
func waitHealthyPeers(t *testing.T, originURL string, n int) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("%d healthy peers", n), func() bool {
		healthy := 0
		for _, p := range peersByID(t, originURL) {
			if p.Healthy {
				healthy++
			}
		}
		return healthy == n
	})
}

// publishStriped publishes site as blog on the origin at originURL with
// the key in keyFile, waits until the origin has striped it, and returns
// its root.
func publishStriped(t *testing.T, bin, originURL, keyFile, site string) string {
	t.Helper()
	root := strings.TrimSpace(testkit.Run(t, bin, "publish", site, "--name", "blog", "--origin", originURL, "--key", keyFile, "-Q"))
	testkit.WaitFor(t, 30*time.Second, "the publish to be striped", func() bool {
		code, _ := testkit.Get(t, originURL+"/api/v1/manifests/"+root, "")
		return code == 200
	})
	return root
}

func TestStripedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin and 20 storage peers")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	originData := filepath.Join(dir, "origin")
	o := startOrigin(t, bin, originData, "--deserialized", "--segment-size", "256KiB", "--chunk-size", "4KiB",
		"--heartbeat-interval", "1s", "--audit-interval", "1h", "--repair-interval", "500ms", "--lost-after", "4s")
	defer func() {
		if t.Failed() {
			t.Logf("origin log (last lines):\n%s", o.Tail(40))
		}
	}()

	peers := map[string]*storageProc{}
	alive := map[string]bool{}
	startPeers := func(first, n int) {
		for i := range n {
			p := startPeer(t, bin, dir, o.url, first+i)
			peers[p.id] = p
			alive[p.id] = true
		}
	}
	startPeers(0, 14)
	site := "../../examples/site"
	// repaired waits until the manifest of root is newer than m's and
	// every shard is on a peer in on.
	repaired := func(t *testing.T, what, root string, m *erasure.Manifest, on map[string]bool) *erasure.Manifest {
		t.Helper()
		testkit.WaitFor(t, 3*time.Minute, what, func() bool {
			m2 := manifest(t, o.url, root)
			return (m == nil || m2.Version > m.Version) && allShardsOn(m2, on)
		})
		return manifest(t, o.url, root)
	}

	var root string
	var m *erasure.Manifest
	if !t.Run("the publish is striped onto 14 peers", func(t *testing.T) {
		waitHealthyPeers(t, o.url, 14)
		root = publishStriped(t, bin, o.url, key, site)
		m = manifest(t, o.url, root)
		if len(m.Segments) < 2 || m.DataShards != 10 || m.ParityShards != 4 {
			t.Fatalf("manifest: %d segments of %d+%d", len(m.Segments), m.DataShards, m.ParityShards)
		}
		// The origin keeps no copy of its own: it drops it once the
		// manifest is signed.
		testkit.WaitFor(t, 10*time.Second, "the origin to drop its own copy", func() bool {
			var local int
			filepath.WalkDir(filepath.Join(originData, "blocks"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, ".data") {
					local++
				}
				return nil
			})
			return local == 0
		})
		checkSite(t, o.url, root, site)
		fetchCAR(t, o.url, cid.MustParse(root))
	}) {
		return
	}

	if !t.Run("the site reads with 4 peers killed, one holding a data shard", func(t *testing.T) {
		victims := []string{m.Segments[0].Shards[0].Peer}
		ids := make([]string, 0, len(peers))
		for id := range peers {
			ids = append(ids, id)
		}
		rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for _, id := range ids {
			if len(victims) == 4 {
				break
			}
			if id != victims[0] {
				victims = append(victims, id)
			}
		}
		for _, id := range victims {
			peers[id].Kill()
			alive[id] = false
		}
		checkSite(t, o.url, root, site)
		testkit.WaitFor(t, 30*time.Second, "the origin to see the 4 peers gone", func() bool {
			ps := peersByID(t, o.url)
			for _, id := range victims {
				if ps[id].Healthy {
					return false
				}
			}
			return true
		})
	}) {
		return
	}

	// Four fresh peers: repair brings every segment back to 14 shards on
	// live peers, under a re-signed manifest.
	startPeers(14, 4)
	if !t.Run("repair onto 4 fresh peers", func(t *testing.T) {
		m = repaired(t, "repair onto the fresh peers", root, m, alive)
		checkSite(t, o.url, root, site)
	}) {
		return
	}

	// One peer gone for good: 13 healthy shards are above the repair
	// threshold (12), but once the peer has been silent for --lost-after
	// its shard is rebuilt on a spare, and redundancy is whole again.
	startPeers(22, 1)
	if !t.Run("a lost peer's shards are rebuilt on a spare", func(t *testing.T) {
		gone := m.Segments[0].Shards[m.DataShards].Peer // a parity shard's peer
		peers[gone].Kill()
		alive[gone] = false
		m = repaired(t, "repair of the lost peer's shards", root, m, alive)
		checkSite(t, o.url, root, site)
	}) {
		return
	}

	// Two peers holding data shards rot on disk: reads stay correct and
	// catch them, audits catch them too.
	liars := map[string]bool{}
	if !t.Run("reads and audits catch 2 peers whose shards rot", func(t *testing.T) {
		for _, sh := range m.Segments[0].Shards[:m.DataShards] {
			if len(liars) < 2 {
				liars[sh.Peer] = true
			}
		}
		for id := range liars {
			rotShards(t, peers[id].data)
		}
		checkSite(t, o.url, root, site)
		// A rotten answer that lost the race to a rebuild is checked when it
		// arrives, so the flag may come a little after the page.
		testkit.WaitFor(t, 30*time.Second, "reads to flag the peers serving rotten bytes", func() bool {
			ps := peersByID(t, o.url)
			for id := range liars {
				if ps[id].Flags == 0 {
					return false
				}
			}
			return true
		})
		resp, err := http.Post(o.url+"/api/v1/storage/audit", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for id := range liars {
			if pi := peersByID(t, o.url)[id]; pi.AuditsFailed == 0 {
				t.Errorf("peer %s holds rotten shards but passed every audit", id)
			}
		}
	}) {
		return
	}

	// With two spare peers, repair moves the rotten shards away.
	startPeers(18, 2)
	t.Run("repair moves the rotten shards to 2 spares", func(t *testing.T) {
		trusted := map[string]bool{}
		for id, ok := range alive {
			trusted[id] = ok && !liars[id]
		}
		repaired(t, "repair away from the rotten peers", root, nil, trusted)
		checkSite(t, o.url, root, site)
		var st originapi.StorageStatus
		testkit.GetJSON(t, o.url+"/api/v1/storage/status", &st)
		if len(st.AtRisk) != 0 {
			t.Fatalf("segments still at risk: %+v", st.AtRisk)
		}
		out := testkit.Run(t, bin, "storage", "status", "--origin", o.url)
		if !strings.Contains(out, "0 at risk") || strings.Count(out, "true") < 14 {
			t.Fatalf("storage status:\n%s", out)
		}
	})
}

func TestStripingResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin and 6 storage peers")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	originData := filepath.Join(dir, "origin")
	args := []string{"--data-shards", "4", "--parity-shards", "2", "--segment-size", "256KiB", "--chunk-size", "4KiB",
		"--heartbeat-interval", "1s", "--audit-interval", "1h", "--repair-interval", "1h"}
	o := startOrigin(t, bin, originData, args...)
	alive := map[string]bool{}
	for i := range 6 {
		p := startPeer(t, bin, dir, o.url, i)
		alive[p.id] = true
	}
	site := filepath.Join(dir, "site")

	var root string
	if !t.Run("kill -9 the origin while it stores segments", func(t *testing.T) {
		waitHealthyPeers(t, o.url, 6)
		writeRandomSite(t, site, 24, 11)
		root = strings.TrimSpace(testkit.Run(t, bin, "publish", site, "--name", "big", "--origin", o.url, "--key", key, "-Q"))
		testkit.WaitFor(t, 60*time.Second, "the first segment to be stored", func() bool {
			return strings.Contains(o.Tail(100), "segment striped")
		})
		o.Kill()
		if strings.Contains(o.Tail(100), "root striped") {
			t.Log("striping finished before the kill; the restart still has to serve it")
		}
	}) {
		return
	}

	o = startOrigin(t, bin, originData, append(args, "--deserialized")...)
	t.Run("striping resumes and finishes after a restart", func(t *testing.T) {
		testkit.WaitFor(t, 60*time.Second, "striping to resume and finish", func() bool {
			code, _ := testkit.Get(t, o.url+"/api/v1/manifests/"+root, "")
			return code == 200
		})
		m := manifest(t, o.url, root)
		if !allShardsOn(m, alive) || len(m.Segments) < 24*4 {
			t.Fatalf("manifest after resume: %d segments", len(m.Segments))
		}
		checkSite(t, o.url, root, site)
	})
}
