package edge

import (
	"context"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDeepPathAfterCancel measures the CPU an edge spends on one
// request for a path depth links into a deep DAG after its client has
// gone: the request runs for 100 ms, is cancelled, and the benchmark
// reports the process CPU seconds spent from the cancel until the
// handler returned (cpu-s-after-cancel), and the wall time of that
// (wall-s-after-cancel). Every block is in the memory cache, as for a
// site an edge has served before: the work is CPU alone. With
// bounds=off, the path depth and block budget are lifted, which leaves
// the context checks alone to stop the work.
func BenchmarkDeepPathAfterCancel(b *testing.B) {
	for _, bounded := range []bool{true, false} {
		for _, depth := range []int{maxPathSegments - 2, 1000, 3000} {
			name := "depth=" + strconv.Itoa(depth)
			if !bounded {
				name += ",bounds=off"
			}
			b.Run(name, func(b *testing.B) { benchDeepPathAfterCancel(b, depth, bounded) })
		}
	}
}

func benchDeepPathAfterCancel(b *testing.B, depth int, bounded bool) {
	d := newDeepDAG(b, depth)
	o := newFakeOrigin(b, d, nil)
	e, err := New(context.Background(), Config{Origin: o.URL})
	if err != nil {
		b.Fatal(err)
	}
	if !bounded {
		e.pathBound, e.blockBudget = 1<<30, 1<<62
	}
	for c, blk := range d.blocks {
		e.mem.add(c, blk)
	}
	var cpu, wall time.Duration
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequestWithContext(ctx, "GET", "http://127.0.0.1"+d.path(depth), nil)
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { e.ServeHTTP(rec, req); close(done) }()
		select {
		case <-done:
		case <-time.After(100 * time.Millisecond):
		}
		cancel()
		c0, w0 := cpuTime(b), time.Now()
		<-done
		cpu += cpuTime(b) - c0
		wall += time.Since(w0)
		b.Logf("depth %d: HTTP %d", depth, rec.Code)
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s-after-cancel")
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s-after-cancel")
}
