package billing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

func TestHTTPProber(t *testing.T) {
	good := blocks.NewBlock([]byte("the object as published"))
	other := blocks.NewBlock([]byte("something else"))
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ipfs/" + good.Cid().String():
			w.Write(good.RawData())
		case "/ipfs/" + other.Cid().String():
			w.Write([]byte("tampered bytes")) // a lying edge
		default:
			http.NotFound(w, r)
		}
	}))
	defer edge.Close()
	missing := blocks.NewBlock([]byte("never cached"))
	tests := []struct {
		name    string
		cid     string
		want    billingapi.Reason
		wantErr bool
	}{
		{"right bytes", good.Cid().String(), "", false},
		{"wrong bytes", other.Cid().String(), billingapi.ReasonWrongContent, true},
		{"not served: inconclusive", missing.Cid().String(), "", true},
		{"not a CID", "nope", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := HTTPProber{}.Probe(context.Background(), edge.URL, tc.cid)
			if (err != nil) != tc.wantErr || reasonOf(err) != tc.want {
				t.Fatalf("err %v, want reason %q", err, tc.want)
			}
		})
	}
}

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

// TestHeartbeatCheckThroughRouter runs the heartbeat check on what a
// DNSDirectory learns from successive polls of a router.
func TestHeartbeatCheckThroughRouter(t *testing.T) {
	ctx := context.Background()
	const MiB = 1 << 20
	pub, edge := testkit.Key(t, 54), testkit.Key(t, 55)
	e0 := t0.Unix() - 60 // ends at t0
	var (
		mu  sync.Mutex
		cur dnsrouteapi.EdgeInfo
	)
	beat := func(bytes uint64, at time.Duration) {
		mu.Lock()
		cur = dnsrouteapi.EdgeInfo{Peer: edge.ID.String(), Healthy: true, Answers: 4, IntervalMS: 2000, Bytes: bytes, LastHeartbeat: t0.Add(at)}
		mu.Unlock()
	}
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode([]dnsrouteapi.EdgeInfo{cur})
	}))
	defer router.Close()
	batch := func(epoch int64, seq uint64, mib int) *identity.Envelope {
		var rs []billingapi.Record
		for i := range mib {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", MiB, epoch))
		}
		return signBatch(t, edge, epoch, seq, rs)
	}
	setup := func() (*testLedger, *DNSDirectory) {
		dir := NewDNSDirectory(router.URL, nil)
		tl := newTestLedger(t, "", Config{DNS: dir})
		tl.content.publish("blog", pub.ID, map[string]int64{"big": MiB})
		return tl, dir
	}

	t.Run("staleness slack from the rate between polls", func(t *testing.T) {
		// Polled 10 s apart, 2 s heartbeats: 8 MiB, then 18 MiB 2 s before
		// the epoch ended: 1 MiB/s. The edge served 2 MiB more before the
		// epoch closed; 20 MiB ≤ 18 MiB + 2 × 1 MiB/s × (2.5 s + 2 s) + 1 MiB.
		tl, dir := setup()
		beat(8*MiB, -12*time.Second)
		if _, err := dir.Edges(ctx); err != nil {
			t.Fatal(err)
		}
		beat(18*MiB, -2*time.Second)
		tl.setNow(t0.Add(500 * time.Millisecond))
		if res, err := tl.IngestBatch(ctx, batch(e0, 1, 20), netip.Addr{}); err != nil || res.Bytes != 20*MiB {
			t.Fatalf("honest claim within the slack: %+v, %v", res, err)
		}
		// Without a rate (a single poll), only 1 MiB of slack: deferred,
		// not refused, until a heartbeat after the batch counts it.
		tl, _ = setup()
		tl.setNow(t0.Add(500 * time.Millisecond))
		env := batch(e0, 1, 20)
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) || reasonOf(err) != "" {
			t.Fatalf("claim beyond the slack, heartbeats behind: %v, want it deferred", err)
		}
		beat(21*MiB, 6*time.Second)
		tl.setNow(t0.Add(7 * time.Second))
		if res, err := tl.IngestBatch(ctx, env, netip.Addr{}); err != nil || res.Bytes != 20*MiB {
			t.Fatalf("resent after the heartbeat counted it: %+v, %v", res, err)
		}
	})

	t.Run("a restarted edge keeps its high-water mark", func(t *testing.T) {
		tl, dir := setup()
		beat(50*MiB, -30*time.Second) // the process that served
		if _, err := dir.Edges(ctx); err != nil {
			t.Fatal(err)
		}
		beat(1*MiB, 6*time.Second) // restarted: its counter starts again
		tl.setNow(t0.Add(7 * time.Second))
		if res, err := tl.IngestBatch(ctx, batch(e0, 1, 40), netip.Addr{}); err != nil || res.Bytes != 40*MiB {
			t.Fatalf("batch of the earlier process: %+v, %v", res, err)
		}
		// More than either process ever counted, sent around the restart:
		// perhaps by the process before, whose last counter billing may not
		// have seen. Deferred, not refused, even after later heartbeats.
		env := batch(e0-60, 2, 52)
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) {
			t.Fatalf("first send: %v, want it deferred", err)
		}
		beat(3*MiB, 19*time.Second)
		tl.setNow(t0.Add(20 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) || reasonOf(err) != "" {
			t.Fatalf("resent around the restart: %v, want it deferred", err)
		}
		// Sent well after the restart: refused once a heartbeat after the
		// batch shows no more.
		env = batch(e0-120, 3, 60)
		beat(4*MiB, 89*time.Second)
		tl.setNow(t0.Add(90 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) {
			t.Fatalf("first send: %v, want it deferred", err)
		}
		beat(5*MiB, 99*time.Second)
		tl.setNow(t0.Add(100 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); reasonOf(err) != billingapi.ReasonImplausibleHeartbeats {
			t.Fatalf("resent: %v, want %s", err, billingapi.ReasonImplausibleHeartbeats)
		}
	})
}
