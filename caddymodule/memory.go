package caddymodule

import (
	"encoding/json"
	"fmt"
)

// cacheShare is the part of a handler's memory budget its caches may
// fill; the rest is headroom for requests in flight, Caddy and the Go
// runtime.
const cacheShare = 0.7

// MemoryBudget returns the sum of the memory budgets (memory_cache, or
// its default) of the topcdn handlers in a Caddy JSON config, wherever
// they sit in it (servers, routes, subroutes): what the process serving
// that config should keep its memory within. It is 0 for a config
// without a topcdn handler.
//
// A module does not set process-wide limits: the program embedding Caddy
// does, from this budget. `topcdn edge` sets the Go memory limit to 90%
// of it (see edge/README.md); a stock Caddy build needs GOMEMLIMIT set.
func MemoryBudget(config []byte) (int64, error) {
	var v any
	if err := json.Unmarshal(config, &v); err != nil {
		return 0, fmt.Errorf("topcdn: memory budget: %w", err)
	}
	return memoryBudget(v)
}

// memoryBudget sums the budgets of the topcdn handlers in v, a decoded
// JSON value.
func memoryBudget(v any) (int64, error) {
	var children []any
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "topcdn" {
			raw, _ := json.Marshal(v) // it was JSON a moment ago
			var h Handler
			if err := json.Unmarshal(raw, &h); err != nil {
				return 0, fmt.Errorf("topcdn: memory budget: %w", err)
			}
			h.setDefaults()
			return h.MemoryCacheBytes, nil
		}
		for _, e := range v {
			children = append(children, e)
		}
	case []any:
		children = v
	}
	var sum int64
	for _, e := range children {
		n, err := memoryBudget(e)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}
