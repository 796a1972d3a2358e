package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestSetMemoryLimit: the Go memory limit is 90% of the edges' budget (at
// least minMemoryLimit) with GOGC off; the operator's GOGC is kept, their
// GOMEMLIMIT wins, and a process without an edge is left alone.
func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tests := []struct {
		name             string
		gomemlimit, gogc string
		budget           int64
		wantLimit        int64 // as set; math.MaxInt64: none
		wantGC           int
	}{
		{name: "a budget", budget: 200 << 20, wantLimit: 180 << 20, wantGC: -1},
		{name: "a tiny budget", budget: 1, wantLimit: minMemoryLimit, wantGC: -1},
		{name: "no edge", budget: 0, wantLimit: math.MaxInt64, wantGC: 100},
		{name: "the operator's GOGC", gogc: "50", budget: 200 << 20, wantLimit: 180 << 20, wantGC: 100},
		{name: "the operator's GOMEMLIMIT", gomemlimit: "1GiB", budget: 200 << 20, wantLimit: math.MaxInt64, wantGC: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			t.Setenv("GOGC", tc.gogc)
			debug.SetMemoryLimit(math.MaxInt64)
			debug.SetGCPercent(100) // what the runtime read from GOGC stands for 100 here
			set := setMemoryLimit(tc.budget)
			if got := debug.SetMemoryLimit(-1); got != tc.wantLimit {
				t.Fatalf("limit %d, want %d", got, tc.wantLimit)
			}
			if (set != 0) != (tc.wantLimit != math.MaxInt64) || (set != 0 && set != tc.wantLimit) {
				t.Fatalf("setMemoryLimit returned %d, the limit is %d", set, tc.wantLimit)
			}
			if got := debug.SetGCPercent(100); got != tc.wantGC {
				t.Fatalf("GOGC %d, want %d", got, tc.wantGC)
			}
		})
	}
}
