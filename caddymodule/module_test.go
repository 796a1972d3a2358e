package caddymodule

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/topcdn/topcdn/edge"
)

// global is the global options block of the test configs.
const global = `{
	admin off
	auto_https off
	persist_config off
}
`

// isolateDataDir points Caddy's data and config directories (where the
// default key goes) into a new temporary directory, which it returns.
func isolateDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	return dir
}

// peerOf returns the peer ID the edge at url answers its health probe
// with.
func peerOf(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url + edge.HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct{ Peer string }
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != http.StatusOK || h.Peer == "" {
		t.Fatalf("health of %s: status %d, %+v, %v", url, resp.StatusCode, h, err)
	}
	return h.Peer
}

// TestTwoHandlers: a config with two topcdn handlers provisions and
// serves from both, whether they are configured alike (sharing one edge)
// or not; before, the second failed with "duplicate metrics collector
// registration attempted".
func TestTwoHandlers(t *testing.T) {
	tests := []struct {
		name      string
		caddyfile string
		urls      []string // PORT and PORT2 replaced
		samePeer  bool
	}{
		{name: "one block with two addresses",
			caddyfile: "http://127.0.0.1:PORT, http://127.0.0.1:PORT2 {\n topcdn http://127.0.0.1:1\n}\n",
			urls:      []string{"http://127.0.0.1:PORT", "http://127.0.0.1:PORT2"}, samePeer: true},
		{name: "two site blocks alike",
			caddyfile: "http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1\n}\nhttp://127.0.0.1:PORT2 {\n topcdn http://127.0.0.1:1\n}\n",
			urls:      []string{"http://127.0.0.1:PORT", "http://127.0.0.1:PORT2"}, samePeer: true},
		{name: "two site blocks configured otherwise",
			caddyfile: "http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1 {\n  domain cdn.test\n }\n}\n" +
				"http://127.0.0.1:PORT2 {\n topcdn http://127.0.0.1:1 {\n  domain cdn.example\n  key KEYDIR/other.key\n }\n}\n",
			urls: []string{"http://127.0.0.1:PORT", "http://127.0.0.1:PORT2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolateDataDir(t)
			port, port2 := freePort(t), freePort(t)
			r := strings.NewReplacer("PORT2", port2, "PORT", port, "KEYDIR", dir)
			if err := loadCaddy(t, global+r.Replace(tc.caddyfile), port); err != nil {
				t.Fatal(err)
			}
			a, b := peerOf(t, r.Replace(tc.urls[0])), peerOf(t, r.Replace(tc.urls[1]))
			if (a == b) != tc.samePeer {
				t.Fatalf("peers %s and %s, want the same: %v", a, b, tc.samePeer)
			}
		})
	}
}

// TestValidateHasNoSideEffects: validating a config (caddy validate)
// writes no key file and no cache directory and contacts neither the
// router nor billing; running it does.
func TestValidateHasNoSideEffects(t *testing.T) {
	dir := isolateDataDir(t)
	var contacted atomic.Int64
	services := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contacted.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer services.Close()
	port := freePort(t)
	text := global + strings.NewReplacer("DIR", dir, "SVC", services.URL).Replace(`
http://127.0.0.1:PORT {
	topcdn http://127.0.0.1:1 {
		key DIR/keys/edge.key
		disk_cache DIR/cache 1MiB
		router SVC
		billing SVC
		public_url http://127.0.0.1:PORT
		heartbeat 1s
	}
}
http://127.0.0.2:PORT {
	topcdn http://127.0.0.1:1 {
		disk_cache DIR/cache2 1MiB
	}
}
`)
	var cfg caddy.Config
	if err := json.Unmarshal(adapt(t, text, port), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatal(err)
	}
	var written []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if path != dir {
			written = append(written, path)
		}
		return err
	})
	if len(written) > 0 || contacted.Load() > 0 {
		t.Fatalf("validation wrote %q and made %d requests", written, contacted.Load())
	}

	if err := loadCaddy(t, text, port); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"keys/edge.key", "cache", "cache2", "data/caddy/topcdn/edge.key"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("running the config: %v", err)
		}
	}
}

// TestDefaultKeyKept: an edge without a key option keeps one in Caddy's
// data directory, so it has the same peer ID after a restart.
func TestDefaultKeyKept(t *testing.T) {
	dir := isolateDataDir(t)
	text := global + "http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1\n}\n"
	var peers []string
	for range 2 {
		port := freePort(t)
		if err := loadCaddy(t, text, port); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, peerOf(t, "http://127.0.0.1:"+port))
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if peers[0] != peers[1] {
		t.Fatalf("peer %s after a restart, %s before", peers[1], peers[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "caddy", "topcdn", "edge.key")); err != nil {
		t.Fatal(err)
	}
}

// TestFailedReloadKeepsSharedState: a reload whose handler fails to start
// (here: a disk cache directory it may not use) after taking the running
// handler's State lets go of it, and the running config keeps it and
// serves on.
func TestFailedReloadKeepsSharedState(t *testing.T) {
	dir := isolateDataDir(t)
	port := runCaddy(t, global+"http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1\n}\n")
	peer := peerOf(t, "http://127.0.0.1:"+port)
	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "not-a-cache"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload := global + "http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1 {\n  disk_cache " + foreign + "\n }\n}\n"
	if err := caddy.Load(adapt(t, reload, port), true); err == nil {
		t.Fatal("a disk cache in a foreign directory was started")
	}
	if got := peerOf(t, "http://127.0.0.1:"+port); got != peer {
		t.Fatalf("after the failed reload the edge is %s, was %s", got, peer)
	}
	var refs []int
	states.Range(func(key, _ any) bool {
		n, _ := states.References(key)
		refs = append(refs, n)
		return true
	})
	if len(refs) != 1 || refs[0] != 1 {
		t.Fatalf("States' references after the failed reload: %v, want [1]", refs)
	}
}

// TestInvalidStartsNothing: a configuration Validate refuses fails to load
// and opens nothing.
func TestInvalidStartsNothing(t *testing.T) {
	dir := isolateDataDir(t)
	cache := filepath.Join(dir, "cache")
	text := global + "http://127.0.0.1:PORT {\n topcdn http://127.0.0.1:1 {\n  disk_cache " + cache +
		"\n  router http://127.0.0.1:2\n }\n}\n" // no public_url
	if err := loadCaddy(t, text, freePort(t)); err == nil {
		t.Fatal("a router without public_url was loaded")
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("the disk cache was opened for a configuration Validate refuses: %v", err)
	}
}

// TestMetricsNameTheBuild: the config's metrics, served by Caddy's
// metrics handler, carry topcdn_build_info, as every topcdn role's do,
// next to the edge's own metrics and the Go runtime's.
func TestMetricsNameTheBuild(t *testing.T) {
	isolateDataDir(t)
	port := freePort(t)
	caddyfile := global + "http://127.0.0.1:" + port + " {\n handle /metrics {\n  metrics\n }\n topcdn http://127.0.0.1:1\n}\n"
	if err := loadCaddy(t, caddyfile, port); err != nil {
		t.Fatal(err)
	}
	peerOf(t, "http://127.0.0.1:"+port) // the edge is started
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"topcdn_build_info{", "topcdn_edge_", "go_goroutines "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%.2000s", strings.TrimSpace(want), body)
		}
	}
}
