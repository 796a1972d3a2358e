package main

import (
	"os"
	"runtime/debug"
)

// limitShare is the part of the edges' memory budget the Go memory limit
// allows; the rest is for what the Go runtime does not count: the
// binary's mapped code and data, and memory outside the Go heap.
const limitShare = 0.9

// minMemoryLimit is the lowest Go memory limit `topcdn edge` sets: Caddy
// and the edge need a few tens of MiB before any cache, and a limit below
// what the process lives on makes the collector run without pause.
const minMemoryLimit = 96 << 20

// setMemoryLimit makes the garbage collector keep the heap within budget,
// the memory budget of the edges the process serves
// (caddymodule.MemoryBudget), instead of letting it grow to twice the live
// caches (the default GOGC=100). It sets the Go memory limit to 90% of
// budget, at least minMemoryLimit, and turns GOGC off, so that the limit
// alone paces the collector: a heap of a few MiB of live data (cold
// caches, small sites) would otherwise be collected every few MiB
// allocated, which on cache hits cost a quarter of the edge's CPU per
// request. The operator's GOMEMLIMIT wins (nothing changes) and their GOGC
// is kept; a budget of 0 (no edge) changes nothing. It returns the limit
// it set, 0 if none.
//
// As Caddy's own main sets GOMAXPROCS and its memory limit once at start,
// this is set once, for the config `topcdn edge` starts with.
func setMemoryLimit(budget int64) int64 {
	if budget <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := max(int64(float64(budget)*limitShare), minMemoryLimit)
	debug.SetMemoryLimit(limit)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(-1)
	}
	return limit
}
