package witness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// t0 is a fixed time, the heartbeats' clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

// TestDNSDirectory: the router's edges, with their epoch counters and
// demand, come through as the router said them.
func TestDNSDirectory(t *testing.T) {
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/edges" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"peer":"12D3KooWa","healthy":true,"load":0.5,"answers":7,"url":"http://127.0.0.1:8080","extra":1,` +
			`"interval_ms":2000,"last_heartbeat":"2030-01-02T03:04:05.5Z","requests":3,"bytes":4096,"cache_hits":2,"cache_misses":1,` +
			`"epochs":[{"epoch":1893553440,"bytes":4000,"closed":true}],` +
			`"demand":[{"epoch":1893553440,"probe_bytes":96,"sites":[{"site":"name:blog","first":3,"other":1}]}]}]`))
	}))
	defer router.Close()
	edges, err := NewDNSDirectory(router.URL+"/", nil).Edges(context.Background())
	if err != nil || len(edges) != 1 {
		t.Fatalf("edges %+v, %v", edges, err)
	}
	e := edges[0]
	if e.Peer != "12D3KooWa" || !e.Healthy || e.Answers != 7 || e.URL != "http://127.0.0.1:8080" || e.IntervalMS != 2000 ||
		e.Requests != 3 || e.Bytes != 4096 || !e.LastHeartbeat.Equal(t0.Add(5500*time.Millisecond)) {
		t.Fatalf("edge %+v", e)
	}
	if len(e.Epochs) != 1 || e.Epochs[0].Epoch != 1893553440 || e.Epochs[0].Bytes != 4000 || !e.Epochs[0].Closed {
		t.Fatalf("epochs %+v", e.Epochs)
	}
	if len(e.Demand) != 1 || e.Demand[0].ProbeBytes != 96 || len(e.Demand[0].Sites) != 1 ||
		e.Demand[0].Sites[0].Site != "name:blog" || e.Demand[0].Sites[0].First != 3 || e.Demand[0].Sites[0].Other != 1 {
		t.Fatalf("demand %+v", e.Demand)
	}
	if _, err := NewDNSDirectory(router.URL+"/nothing", nil).Edges(context.Background()); err == nil {
		t.Fatal("a 404 from the router is not an error")
	}
}
