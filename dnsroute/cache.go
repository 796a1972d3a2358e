package dnsroute

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// maxCachedResponses bounds a snapshot's response cache; when it is full
// it starts over.
const maxCachedResponses = 1 << 16

// respCache holds ready-to-send UDP responses of one snapshot, keyed by
// the query's bytes after its ID and the client's subnet: an answer is a
// function of exactly these (see answer), so a hit only needs the query's
// ID copied in. A new snapshot starts with an empty cache.
type respCache struct {
	mu sync.RWMutex
	m  map[string]*cachedResp
}

// cachedResp is one ready response and what sending it counts.
type cachedResp struct {
	b       []byte
	handed  handout
	counted countMark
	rrlKey  uint64 // the response's rate limiting key (rrl.key)
	queries prometheus.Counter
}

func newRespCache() *respCache {
	return &respCache{m: make(map[string]*cachedResp)}
}

func (c *respCache) get(key []byte) *cachedResp {
	c.mu.RLock()
	r := c.m[string(key)]
	c.mu.RUnlock()
	return r
}

func (c *respCache) put(key []byte, r *cachedResp) {
	c.mu.Lock()
	if len(c.m) >= maxCachedResponses {
		clear(c.m)
	}
	c.m[string(key)] = r
	c.mu.Unlock()
}
