package edge

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/ipfs/go-cid"
)

// memoryCache is the edge's memory tier: verified blocks in an LRU
// bounded by bytes, not entries.
type memoryCache struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[cid.Cid, []byte]
	bytes int64
	max   int64
}

func newMemoryCache(maxBytes int64) *memoryCache {
	c := &memoryCache{max: maxBytes}
	c.lru, _ = simplelru.NewLRU[cid.Cid, []byte](1<<30, func(_ cid.Cid, b []byte) { c.bytes -= int64(len(b)) })
	return c
}

func (c *memoryCache) get(k cid.Cid) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(k)
}

func (c *memoryCache) add(k cid.Cid, b []byte) {
	if int64(len(b)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Contains(k) {
		return
	}
	c.lru.Add(k, b)
	c.bytes += int64(len(b))
	for c.bytes > c.max {
		c.lru.RemoveOldest()
	}
}

func (c *memoryCache) size() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}
