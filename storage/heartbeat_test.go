package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
)

// heartbeatOrigin is a fake origin that verifies heartbeats as an origin
// would and passes them on.
func heartbeatOrigin(t *testing.T, status int) (*httptest.Server, <-chan storageapi.Heartbeat) {
	t.Helper()
	got := make(chan storageapi.Heartbeat, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != HeartbeatPath {
			t.Errorf("heartbeat sent as %s %s", r.Method, r.URL.Path)
		}
		var env identity.Envelope
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
			t.Errorf("heartbeat body: %v", err)
			return
		}
		var hb storageapi.Heartbeat
		signer, err := env.Open(storageapi.TypeHeartbeat, &hb)
		if err != nil {
			t.Errorf("heartbeat does not open: %v", err)
			return
		}
		if signer.String() != hb.Peer {
			t.Errorf("heartbeat for %s signed by %s", hb.Peer, signer)
		}
		got <- hb
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestHeartbeat(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv, got := heartbeatOrigin(t, status)
			keys := newTestKeys(t)
			loc := &storageapi.Location{Lat: 50.11, Lon: 8.68, Region: "eu-fra"}
			s, err := New(context.Background(), Config{
				DataDir: t.TempDir(), Key: keys.peer, Origin: srv.URL + "/", OriginID: keys.origin.ID,
				Capacity: 5000, PublicAddr: "http://127.0.0.1:9001", Location: loc,
				HeartbeatInterval: 10 * time.Millisecond, Registry: prometheus.NewRegistry(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			data := randomShard(30, 1200)
			sum := blake3.Sum256(data)
			if _, err := s.store.put(storageapi.ShardID(data), sum[:], 1200, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			// Failed heartbeats do not stop the loop: wait for three.
			for i := range 3 {
				select {
				case hb := <-got:
					if hb.Peer != s.ID().String() || hb.Addr != "http://127.0.0.1:9001" || hb.Capacity != 5000 ||
						hb.Free != 3800 || hb.Shards != 1 || *hb.Location != *loc {
						t.Fatalf("heartbeat %d: %+v", i, hb)
					}
					if d := time.Since(hb.Time); d < 0 || d > time.Minute {
						t.Fatalf("heartbeat time %s is not now", hb.Time)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no heartbeat")
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not stop")
			}
			result := map[int]string{http.StatusNoContent: "ok"}[status]
			if result == "" {
				result = "error"
			}
			if n := counterValue(s.metrics.heartbeats.WithLabelValues(result)); n < 2 {
				t.Fatalf("heartbeats_total{result=%q} = %v, want >= 2 (the third may be cut short)", result, n)
			}
		})
	}
}

func TestRunNeedsOriginAndAddr(t *testing.T) {
	ts := newTestServer(t, 1000)
	if err := ts.Run(context.Background()); err == nil {
		t.Fatal("Run without Origin or PublicAddr succeeded")
	}
}

func TestDefaultKey(t *testing.T) {
	dir := t.TempDir()
	id := newTestKeys(t).origin.ID
	var ids []string
	for range 2 {
		s, err := New(context.Background(), Config{DataDir: dir, OriginID: id})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID().String())
		s.Close()
	}
	if ids[0] != ids[1] {
		t.Fatalf("peer ID changed across restarts: %v", ids)
	}
	if st, err := os.Stat(filepath.Join(dir, "peer.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("peer.key: %v", err)
	}
}

// TestHeartbeatFailsOver: heartbeats go to the next origin while the
// first answers 503, each signed anew, and the failover is counted.
func TestHeartbeatFailsOver(t *testing.T) {
	busy, busyGot := heartbeatOrigin(t, http.StatusServiceUnavailable)
	ok, okGot := heartbeatOrigin(t, http.StatusNoContent)
	keys := newTestKeys(t)
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), Config{
		DataDir: t.TempDir(), Key: keys.peer, Origins: []string{busy.URL, ok.URL}, OriginID: keys.origin.ID,
		Capacity: 5000, PublicAddr: "http://127.0.0.1:9001", HeartbeatInterval: time.Hour, Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.heartbeat(context.Background()); err != nil {
		t.Fatalf("heartbeat with one origin up: %v", err)
	}
	first, second := <-busyGot, <-okGot
	if !second.Time.After(first.Time) {
		t.Errorf("heartbeat to the second origin not signed anew: %s, then %s", first.Time, second.Time)
	}
	n := testutil.ToFloat64(counterOf(t, reg, "topcdn_storage_origin_failovers_total"))
	if n != 1 {
		t.Errorf("failovers %v, want 1", n)
	}
}

// counterOf returns the sum of the counter family name in reg, as a
// collector testutil can read.
func counterOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sum"}, func() float64 { return sum })
}
