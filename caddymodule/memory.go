package caddymodule

import (
	"math"
	"os"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
)

// cacheShare is the part of a handler's memory budget its caches may
// fill; the rest is headroom for requests in flight, Caddy and the Go
// runtime.
const cacheShare = 0.7

// limitShare is the part of the budgets the Go memory limit allows; the
// rest is for what the Go runtime does not count: the binary's mapped
// code and data, and memory outside the Go heap.
const limitShare = 0.9

// minMemoryLimit is the lowest Go memory limit the module sets: Caddy and
// the edge need a few tens of MiB before any cache, and a limit below
// what the process lives on makes the collector run without pause.
const minMemoryLimit = 96 << 20

// budgets holds the memory budget of every provisioned handler. The
// process's Go memory limit follows their sum, so the garbage collector
// keeps the heap within what the operator gave the edge instead of
// letting it grow to twice the live caches (the default GOGC=100).
//
// While a budget is set the collector is paced by that limit alone
// (GOGC off): a heap of a few MiB of live data (cold caches, small
// sites) would otherwise be collected every few MiB allocated, which
// on cache hits cost a quarter of the edge's CPU per request. With the
// caches full the limit paces the collector either way.
var budgets struct {
	mu        sync.Mutex
	set       map[*Handler]int64
	gcPercent int  // the GOGC in effect before the module turned it off
	gcOff     bool // the module turned GOGC off
}

// addBudget registers h's budget and applies the new memory limit.
func addBudget(h *Handler, n int64, log *zap.Logger) {
	budgets.mu.Lock()
	defer budgets.mu.Unlock()
	if budgets.set == nil {
		budgets.set = map[*Handler]int64{}
	}
	budgets.set[h] = n
	applyMemoryLimit(log)
}

// dropBudget forgets h's budget (on Cleanup, after a config reload).
func dropBudget(h *Handler, log *zap.Logger) {
	budgets.mu.Lock()
	defer budgets.mu.Unlock()
	delete(budgets.set, h)
	applyMemoryLimit(log)
}

// applyMemoryLimit sets the Go memory limit to 90% of the budgets' sum
// (at least minMemoryLimit) and turns GOGC off so that limit paces the
// collector, unless the operator set GOMEMLIMIT (theirs wins: the module
// changes neither) or GOGC (kept). With no handler left it lifts the
// limit and restores GOGC.
func applyMemoryLimit(log *zap.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	var sum int64
	for _, n := range budgets.set {
		sum += n
	}
	if sum == 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		if budgets.gcOff {
			debug.SetGCPercent(budgets.gcPercent)
			budgets.gcOff = false
		}
		return
	}
	limit := max(int64(float64(sum)*limitShare), minMemoryLimit)
	debug.SetMemoryLimit(limit)
	if !budgets.gcOff && os.Getenv("GOGC") == "" {
		budgets.gcPercent = debug.SetGCPercent(-1)
		budgets.gcOff = true
	}
	if log != nil {
		log.Debug("go memory limit follows the edges' memory budgets", zap.Int64("bytes", limit),
			zap.Bool("gogc_off", budgets.gcOff))
	}
}
