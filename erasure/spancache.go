package erasure

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// SpanCache keeps rebuilt column spans (see WithRebuildSpan) so degraded
// reads of neighbouring blocks, and of the other lost shards of a
// segment, reuse one rebuild. It is bounded by bytes, safe for concurrent
// use, and meant to be shared by every Reader of a process.
type SpanCache struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[spanKey, [][]byte]
	bytes int64
	max   int64
}

// NewSpanCache returns a cache holding at most maxBytes of rebuilt
// columns. If maxBytes <= 0, it defaults to 256 MiB.
func NewSpanCache(maxBytes int64) *SpanCache {
	if maxBytes <= 0 {
		maxBytes = 256 << 20
	}
	c := &SpanCache{max: maxBytes}
	c.lru, _ = simplelru.NewLRU[spanKey, [][]byte](1<<30, func(_ spanKey, cols [][]byte) {
		c.bytes -= spanBytes(cols)
	})
	return c
}

func spanBytes(cols [][]byte) int64 {
	var n int64
	for _, c := range cols {
		n += int64(len(c))
	}
	return n
}

func (c *SpanCache) get(k spanKey) ([][]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(k)
}

func (c *SpanCache) add(k spanKey, cols [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Contains(k) {
		return
	}
	c.lru.Add(k, cols)
	c.bytes += spanBytes(cols)
	for c.bytes > c.max && c.lru.Len() > 1 {
		c.lru.RemoveOldest()
	}
}
