package storage

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storageapi"
)

func TestRestartKeepsShards(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ts := openTestServer(t, dir, 10_000)
	a, b := randomShard(20, 3000), randomShard(21, 4000)
	ida, idb := ts.putShard(t, a), ts.putShard(t, b)
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}

	// What a crash leaves: a half-written upload in tmp/, and files that
	// are not shards next to the shards.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "shard-123"), randomShard(22, 2500), 0o600); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "shards", shardSubdir(ida), "not-a-shard")
	if err := os.WriteFile(stray, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	misplaced := filepath.Join(dir, "shards", "zz", idb)
	os.MkdirAll(filepath.Dir(misplaced), 0o700)
	if err := os.WriteFile(misplaced, b, 0o600); err != nil {
		t.Fatal(err)
	}

	ts = openTestServer(t, dir, 10_000)
	if files := ts.tmpFiles(t); len(files) != 0 {
		t.Fatalf("temp files survived a restart: %v", files)
	}
	want := []storageapi.ShardInfo{{ID: ida, Size: 3000}, {ID: idb, Size: 4000}}
	if idb < ida {
		want[0], want[1] = want[1], want[0]
	}
	got := ts.store.list()
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("shards after restart %v, want %v", got, want)
	}
	if _, used, free, _ := ts.store.stats(); used != 7000 || free != 3000 {
		t.Fatalf("used %d free %d after restart, want 7000 and 3000", used, free)
	}
	// The shards read back whole, and the capacity left is what it was.
	url := ts.serve(t)
	got1, err := testClient(ts.keys.reader).GetRange(ctx, ts.ID(), url, ida, 0, 3000)
	if err != nil || string(got1) != string(a) {
		t.Fatalf("shard after restart: %v", err)
	}
	c := randomShard(23, 3001)
	if err := testClient(ts.keys.origin).Put(ctx, ts.ID(), url, storageapi.ShardID(c), c); !errors.Is(err, storageapi.ErrInsufficientStorage) {
		t.Fatalf("put of 3001 bytes into 3000 free: err = %v, want 507", err)
	}
	if err := testClient(ts.keys.origin).Put(ctx, ts.ID(), url, storageapi.ShardID(c[:3000]), c[:3000]); err != nil {
		t.Fatalf("put of 3000 bytes into 3000 free: %v", err)
	}
	// Served orders survive a restart too: a replay is still refused.
	req := getRequest(t, ts.keys.reader, ts.readOrder(ida, 0, 10, "once"), ida, "bytes=0-9")
	if rec := ts.do(req); rec.Code != http.StatusPartialContent {
		t.Fatalf("read: %d", rec.Code)
	}
	ts.Close()
	ts = openTestServer(t, dir, 10_000)
	if rec := ts.do(req); rec.Code != http.StatusConflict {
		t.Fatalf("replay after restart: %d, want 409", rec.Code)
	}
}

// fakeOrigin serves GET /healthz with a peer ID that can change.
type fakeOrigin struct {
	id   atomic.Value // peer.ID
	down atomic.Bool
}

func (f *fakeOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() || r.URL.Path != "/healthz" {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	json.NewEncoder(w).Encode(map[string]string{"status": "ok", "peer_id": f.id.Load().(peer.ID).String()})
}

func TestOriginPinning(t *testing.T) {
	ctx := context.Background()
	keys := newTestKeys(t)
	fake := &fakeOrigin{}
	fake.id.Store(keys.origin.ID)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	dir := t.TempDir()
	open := func(originID peer.ID) (*Server, error) {
		s, err := New(ctx, Config{DataDir: dir, Key: keys.peer, Origin: srv.URL, OriginID: originID,
			Registry: prometheus.NewRegistry()})
		if err == nil {
			s.Close()
		}
		return s, err
	}

	s, err := open("")
	if err != nil {
		t.Fatal(err)
	}
	if s.OriginID() != keys.origin.ID {
		t.Fatalf("learned origin %s, want %s", s.OriginID(), keys.origin.ID)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "origin-id"))
	if strings.TrimSpace(string(b)) != keys.origin.ID.String() {
		t.Fatalf("origin-id file holds %q", b)
	}

	tests := []struct {
		name     string
		serve    peer.ID // what /healthz says
		down     bool
		originID peer.ID // Config.OriginID
		wantErr  bool
	}{
		{name: "same origin", serve: keys.origin.ID},
		{name: "origin down, pinned one used", serve: keys.origin.ID, down: true},
		{name: "origin changed its key", serve: keys.other.ID, wantErr: true},
		{name: "configured another origin", serve: keys.origin.ID, originID: keys.other.ID, wantErr: true},
		{name: "configured the pinned origin", serve: keys.other.ID, originID: keys.origin.ID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake.id.Store(tc.serve)
			fake.down.Store(tc.down)
			s, err := open(tc.originID)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), keys.origin.ID.String()) {
					t.Fatalf("err = %v, want a refusal naming the pinned origin", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.OriginID() != keys.origin.ID {
				t.Fatalf("origin %s, want the pinned %s", s.OriginID(), keys.origin.ID)
			}
		})
	}

	// Nothing pinned and no origin to ask: New waits for the origin
	// (TestNewWaitsForOrigin) and fails when its ctx ends.
	fake.down.Store(true)
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := New(wctx, Config{DataDir: t.TempDir(), Key: keys.peer, Origin: srv.URL}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New without a reachable origin or a pinned ID: %v, want it to wait until ctx ends", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	id := newTestKeys(t).origin.ID
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "minimal", cfg: Config{DataDir: dir, OriginID: id}, ok: true},
		{name: "no data dir", cfg: Config{OriginID: id}},
		{name: "no origin", cfg: Config{DataDir: dir}},
		{name: "bad origin URL", cfg: Config{DataDir: dir, Origin: "ftp://x"}},
		{name: "bad public addr", cfg: Config{DataDir: dir, OriginID: id, PublicAddr: "127.0.0.1:9001"}},
		{name: "negative capacity", cfg: Config{DataDir: dir, OriginID: id, Capacity: -1}},
		{name: "bad location", cfg: Config{DataDir: dir, OriginID: id, Location: &storageapi.Location{Lat: 91}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok = %v", err, tc.ok)
			}
			if tc.ok && (got.Capacity != DefaultCapacity || got.HeartbeatInterval != storageapi.DefaultHeartbeatInterval ||
				got.Logger == nil || got.Registry == nil) {
				t.Fatalf("defaults not filled: %+v", got)
			}
		})
	}
}

// TestOriginSets: a network of several origins, each with its own key: the
// peer takes orders signed by any of them, from the set it pinned; the set
// learned from an origin that lists several (origin_ids) is pinned whole,
// one per line; a configured set sharing an ID with the pin replaces it
// (a key rotated), one sharing none is refused; a set the origin reports
// does not change the pin.
func TestOriginSets(t *testing.T) {
	ctx := context.Background()
	keys := newTestKeys(t)
	a, b, c := keys.origin.ID, keys.other.ID, testkit.Key(t, 5).ID
	var served atomic.Value // []string
	served.Store([]string{a.String(), b.String()})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"status": "ok", "peer_id": a.String(), "origin_ids": served.Load()})
	}))
	defer srv.Close()
	dir := t.TempDir()
	open := func(ids ...peer.ID) (*Server, error) {
		s, err := New(ctx, Config{DataDir: dir, Key: keys.peer, Origin: srv.URL, OriginIDs: ids, Registry: prometheus.NewRegistry()})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	pinned := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "origin-id"))
		return strings.Join(strings.Fields(string(b)), ",")
	}

	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if got := pinned(); got != a.String()+","+b.String() {
		t.Fatalf("pinned %q, want both origins the origin lists", got)
	}
	// Orders of either origin are taken, of no other.
	url := (&testServer{Server: s}).serve(t)
	s.now = func() time.Time { return testNow }
	for i, k := range []*identity.Key{keys.origin, keys.other} {
		d := randomShard(uint64(40+i), 100)
		if err := testClient(k).Put(ctx, s.ID(), url, storageapi.ShardID(d), d); err != nil {
			t.Fatalf("put signed by origin %d: %v", i, err)
		}
	}
	d := randomShard(42, 100)
	if err := testClient(keys.reader).Put(ctx, s.ID(), url, storageapi.ShardID(d), d); !errors.Is(err, storageapi.ErrForbidden) {
		t.Fatalf("put signed by a key outside the set: %v, want 403", err)
	}

	served.Store([]string{a.String(), c.String()})
	if _, err := open(); err != nil || pinned() != a.String()+","+b.String() {
		t.Fatalf("a reported set sharing an ID: %v, pinned %q; want the pin kept", err, pinned())
	}
	served.Store([]string{c.String()})
	if _, err := open(); err == nil {
		t.Fatal("a reported set sharing no ID with the pin was taken")
	}
	if _, err := open(b, c); err != nil || pinned() != b.String()+","+c.String() {
		t.Fatalf("a configured set sharing an ID (a rotation): %v, pinned %q; want it pinned", err, pinned())
	}
	if _, err := open(a); err == nil || !strings.Contains(err.Error(), b.String()) {
		t.Fatalf("a configured set sharing no ID: %v; want a refusal naming the pinned origins", err)
	}
}
