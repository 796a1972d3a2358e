package witness

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
)

// t0 is a fixed time, the heartbeats' clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

func TestDNSDirectory(t *testing.T) {
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/edges" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"peer":"12D3KooWa","healthy":true,"load":0.5,"answers":7,"url":"http://127.0.0.1:8080","extra":1,` +
			`"interval_ms":2000,"last_heartbeat":"2030-01-02T03:04:05.5Z","requests":3,"bytes":4096,"cache_hits":2,"cache_misses":1}]`))
	}))
	defer router.Close()
	edges, err := NewDNSDirectory(router.URL+"/", nil).Edges(context.Background())
	if err != nil || len(edges) != 1 || edges[0].Peer != "12D3KooWa" || !edges[0].Healthy || edges[0].Answers != 7 ||
		edges[0].URL != "http://127.0.0.1:8080" || edges[0].IntervalMS != 2000 || edges[0].Requests != 3 || edges[0].Bytes != 4096 ||
		edges[0].CacheHits != 2 || edges[0].CacheMisses != 1 || !edges[0].LastHeartbeat.Equal(t0.Add(5500*time.Millisecond)) ||
		edges[0].MaxBytes != 4096 {
		t.Fatalf("edges %+v, %v", edges, err)
	}
	if _, err := NewDNSDirectory(router.URL+"/nothing", nil).Edges(context.Background()); err == nil {
		t.Fatal("a 404 from the router is not an error")
	}
}

// TestDNSDirectoryHeartbeats: across polls, the directory keeps each
// edge's highest byte counter (also when the edge restarts and its
// counter starts again) and the highest rate the counter grew at.
func TestDNSDirectoryHeartbeats(t *testing.T) {
	type poll struct {
		bytes uint64
		at    time.Duration // heartbeat time after t0; <0: none reported
	}
	const MiB = 1 << 20
	tests := []struct {
		name     string
		polls    []poll
		wantMax  uint64
		wantRate float64
		restart  time.Duration // when it restarted, after t0; <0: never
	}{
		{"one heartbeat: no rate yet", []poll{{10 * MiB, 0}}, 10 * MiB, 0, -1},
		{"growth gives the rate", []poll{{10 * MiB, 0}, {30 * MiB, 10 * time.Second}}, 30 * MiB, 2 * MiB, -1},
		{"the same heartbeat twice", []poll{{10 * MiB, 0}, {30 * MiB, 10 * time.Second}, {30 * MiB, 10 * time.Second}}, 30 * MiB, 2 * MiB, -1},
		{"an older heartbeat is ignored", []poll{{10 * MiB, 0}, {30 * MiB, 10 * time.Second}, {50 * MiB, 5 * time.Second}}, 50 * MiB, 2 * MiB, -1},
		{"restarted: the high-water mark stays", []poll{{10 * MiB, 0}, {30 * MiB, 10 * time.Second}, {1 * MiB, 14 * time.Second}}, 30 * MiB, 2 * MiB, 14 * time.Second},
		{"restarted: growth after it is measured from the new counter",
			[]poll{{10 * MiB, 0}, {30 * MiB, 10 * time.Second}, {1 * MiB, 14 * time.Second}, {10 * MiB, 17 * time.Second}}, 30 * MiB, 3 * MiB, 14 * time.Second},
		{"the highest rate is kept", []poll{{0, 0}, {30 * MiB, 10 * time.Second}, {31 * MiB, 20 * time.Second}}, 31 * MiB, 3 * MiB, -1},
		{"a router without heartbeat times", []poll{{10 * MiB, -1}}, 0, 0, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu  sync.Mutex
				cur dnsrouteapi.EdgeInfo
			)
			router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				json.NewEncoder(w).Encode([]dnsrouteapi.EdgeInfo{cur})
			}))
			defer router.Close()
			d := NewDNSDirectory(router.URL, nil)
			var got EdgeInfo
			for _, p := range tc.polls {
				mu.Lock()
				cur = dnsrouteapi.EdgeInfo{Peer: "12D3KooWa", Answers: 1, IntervalMS: 2000, Bytes: p.bytes}
				if p.at >= 0 {
					cur.LastHeartbeat = t0.Add(p.at)
				}
				mu.Unlock()
				edges, err := d.Edges(context.Background())
				if err != nil || len(edges) != 1 {
					t.Fatalf("edges %+v, %v", edges, err)
				}
				got = edges[0]
			}
			if got.MaxBytes != tc.wantMax || got.ByteRate != tc.wantRate || got.Bytes != tc.polls[len(tc.polls)-1].bytes {
				t.Fatalf("max %d rate %v bytes %d, want max %d rate %v", got.MaxBytes, got.ByteRate, got.Bytes, tc.wantMax, tc.wantRate)
			}
			if restarted := !got.Restarted.IsZero(); restarted != (tc.restart >= 0) || (restarted && !got.Restarted.Equal(t0.Add(tc.restart))) {
				t.Fatalf("restarted %v, want after %v", got.Restarted, tc.restart)
			}
		})
	}
}

// TestDNSDirectoryReadsTheRouter: the router's own EdgeInfo, as it
// encodes it, gives billing the heartbeat totals.
func TestDNSDirectoryReadsTheRouter(t *testing.T) {
	at := t0.Add(3 * time.Second)
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]dnsrouteapi.EdgeInfo{{Peer: "12D3KooWa", URL: "http://e", Healthy: true, IntervalMS: 2000,
			LastHeartbeat: at, Answers: 9, Requests: 5, Bytes: 12345, CacheHits: 4, CacheMisses: 1}})
	}))
	defer router.Close()
	edges, err := NewDNSDirectory(router.URL, nil).Edges(context.Background())
	if err != nil || len(edges) != 1 {
		t.Fatalf("edges %+v, %v", edges, err)
	}
	if e := edges[0]; e.Answers != 9 || e.IntervalMS != 2000 || !e.LastHeartbeat.Equal(at) || e.Bytes != 12345 ||
		e.MaxBytes != 12345 || e.Requests != 5 || e.CacheHits != 4 || e.CacheMisses != 1 {
		t.Fatalf("edge %+v", e)
	}
}
