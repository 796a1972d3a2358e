package caddymodule

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestMemoryLimitFollowsBudgets: the Go memory limit is 90% of the sum of
// the provisioned handlers' budgets, follows reloads, is lifted when no
// handler is left, and GOMEMLIMIT overrides it. While a budget is set
// GOGC is off (the limit paces the collector); it comes back after.
func TestMemoryLimitFollowsBudgets(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	defer debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	a, b := new(Handler), new(Handler)
	steps := []struct {
		do   func()
		want int64
	}{
		{func() { addBudget(a, 200<<20, nil) }, 180 << 20},
		{func() { addBudget(b, 400<<20, nil) }, 540 << 20},
		{func() { dropBudget(a, nil) }, 360 << 20},
		{func() { addBudget(a, 1, nil) }, 360<<20 + 0},
		{func() { dropBudget(b, nil) }, minMemoryLimit}, // a 1-byte budget does not starve the process
		{func() { dropBudget(a, nil) }, math.MaxInt64},
		{func() { addBudget(b, 400<<20, nil) }, 360 << 20},
		{func() { dropBudget(b, nil) }, math.MaxInt64},
	}
	for i, s := range steps {
		s.do()
		if got := debug.SetMemoryLimit(-1); got != s.want {
			t.Fatalf("step %d: limit %d, want %d", i, got, s.want)
		}
		wantGC := -1
		if s.want == math.MaxInt64 {
			wantGC = 100
		}
		if got := gcPercent(); got != wantGC {
			t.Fatalf("step %d: GOGC %d, want %d", i, got, wantGC)
		}
	}
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	addBudget(b, 400<<20, nil)
	if got := gcPercent(); got != 50 {
		t.Fatalf("with GOGC set the module changed it to %d", got)
	}
	dropBudget(b, nil)
	t.Setenv("GOMEMLIMIT", "1GiB")
	addBudget(a, 200<<20, nil)
	defer dropBudget(a, nil)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("with GOMEMLIMIT set the module changed the limit to %d", got)
	}
}

// gcPercent returns the current GOGC without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}
