package edge

import (
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/namestream"
)

// State is what an edge caches and learns as it serves: its memory caches
// (blocks, ready-to-send responses, spans rebuilt from parity), how fast
// each storage peer answers, and the names, manifests and peer addresses
// it learnt from the origin. Edges built with one State (Config.State)
// share it, so that a new edge for the same configuration starts warm and
// keeps what it needs to ride out an origin outage: Caddy's module builds
// an edge per config load and hands each reload the State of the last.
// A State is safe for concurrent use.
type State struct {
	memoryBytes int64
	mem         *memoryCache
	resp        *responseCache
	spans       *erasure.SpanCache
	stats       *erasure.PeerStats
	names       *lru.Cache[string, []byte]  // IPNS routing key → best valid record seen
	links       *lru.Cache[string, dnsLink] // site host → the origin's last DNSLink answer
	learnt      *learnt
	gens        *generations                    // changes of named sites, for the caches
	resolutions *lru.Cache[string, *resolution] // the name cache
	// cursor is where the edge's follower of the origin's name changes
	// stands, so a reloaded edge resumes there; follower is the one
	// running, for its health.
	cursor   namestream.Cursor
	follower atomic.Pointer[namestream.Follower]
}

// NewState returns an empty State for edges whose memory caches hold
// memoryBytes (Config.MemoryBytes; DefaultMemoryBytes if memoryBytes <= 0):
// an eighth (at most 64 MiB) for rebuilt spans, the rest half for blocks,
// half for responses.
func NewState(memoryBytes int64) *State {
	if memoryBytes <= 0 {
		memoryBytes = DefaultMemoryBytes
	}
	spans := min(memoryBytes/8, 64<<20)
	rest := memoryBytes - spans
	names, _ := lru.New[string, []byte](keptNames) // only fails for a size ≤ 0
	links, _ := lru.New[string, dnsLink](keptNames)
	resolutions := newResolutionCache()
	gens := newGenerations()
	return &State{memoryBytes: memoryBytes, mem: newMemoryCache(rest / 2), resp: newResponseCache(rest/2, gens),
		spans: erasure.NewSpanCache(spans), stats: erasure.NewPeerStats(), names: names, links: links, learnt: newLearnt(),
		gens: gens, resolutions: resolutions}
}
