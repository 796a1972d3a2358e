package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNames: every constructor names its metric topcdn_<sub>_<name>, and
// Register stops at a duplicate and ignores a nil registry.
func TestNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := Counter("edge", "hits_total", "h")
	cv := CounterVec("edge", "misses_total", "h", "tier")
	g := Gauge("edge", "bytes", "h")
	gv := GaugeVec("edge", "edges", "h", "state")
	h := Histogram("edge", "seconds", "h", nil)
	hv := HistogramVec("edge", "fetch_seconds", "h", []float64{1}, "tier")
	c.Inc()
	cv.WithLabelValues("memory").Inc()
	g.Set(1)
	gv.WithLabelValues("up").Set(1)
	h.Observe(1)
	hv.WithLabelValues("disk").Observe(1)
	if err := Register(reg, c, cv, g, gv, h, hv); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "topcdn_edge_hits_total", "topcdn_edge_misses_total", "topcdn_edge_bytes",
		"topcdn_edge_edges", "topcdn_edge_seconds", "topcdn_edge_fetch_seconds")
	if err != nil || n != 6 {
		t.Fatalf("%d metrics under their names (%v), want 6", n, err)
	}
	if err := Register(reg, Counter("edge", "hits_total", "again")); err == nil {
		t.Fatal("a second topcdn_edge_hits_total registered")
	}
	if err := Register(nil, c); err != nil {
		t.Fatalf("nil registry: %v", err)
	}
}

// TestNewRegistry: every role's registry carries the build, the Go runtime
// and the process.
func TestNewRegistry(t *testing.T) {
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, want := range []string{"topcdn_build_info", "go_goroutines", "process_start_time_seconds"} {
		if !have[want] {
			t.Errorf("registry lacks %s", want)
		}
	}
}
