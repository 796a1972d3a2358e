package storage

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// TestMetricNames: a metric with a unit names it last (before _total), as
// Prometheus' conventions ask: topcdn_storage_used_bytes, not
// topcdn_storage_bytes_used.
func TestMetricNames(t *testing.T) {
	st, err := openStore(t.TempDir(), 1<<20, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg, st); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		names[name] = true
		base := strings.TrimSuffix(name, "_total")
		for _, unit := range []string{"bytes", "seconds"} {
			if strings.Contains(base, "_"+unit+"_") {
				t.Errorf("%s: the unit %s is not last", name, unit)
			}
		}
	}
	for _, want := range []string{"topcdn_storage_used_bytes", "topcdn_storage_free_bytes", "topcdn_storage_capacity_bytes"} {
		if !names[want] {
			t.Errorf("no metric %s", want)
		}
	}
}
