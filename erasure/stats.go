package erasure

import (
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// PeerStats tracks how peers perform (latency, failures) so readers try
// the fastest first. It is safe for concurrent use and meant to be shared
// by every Reader of a process.
type PeerStats struct {
	mu    sync.Mutex
	peers map[peer.ID]*peerStat
	// Testing.
	now func() time.Time
}

type peerStat struct {
	ewma     time.Duration // smoothed latency of successful reads
	fails    int           // consecutive failures
	lastFail time.Time
}

// NewPeerStats returns an empty tracker.
func NewPeerStats() *PeerStats {
	return &PeerStats{peers: map[peer.ID]*peerStat{}, now: time.Now}
}

// Observe records one read from p that took d and ended with err.
func (s *PeerStats) Observe(p peer.ID, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peers[p]
	if st == nil {
		st = &peerStat{}
		s.peers[p] = st
	}
	if err != nil {
		st.fails++
		st.lastFail = s.now()
		return
	}
	st.fails = 0
	if st.ewma == 0 { // first success: a failure's latency says nothing
		st.ewma = d
		return
	}
	st.ewma = (st.ewma*7 + d) / 8
}

// maxHedgeDelay caps how long latency history can delay a hedge.
const maxHedgeDelay = 2 * time.Second

// failPenalty is how long a failed peer stays at the back of the line.
const failPenalty = 30 * time.Second

// score orders peers: lower is better. Unknown peers rank as fast as the
// best known one would after a first read; recently failed peers go last.
func (s *PeerStats) score(p peer.ID) time.Duration {
	st := s.peers[p]
	if st == nil {
		return 0
	}
	if st.fails > 0 && s.now().Sub(st.lastFail) < failPenalty {
		return time.Hour * time.Duration(st.fails)
	}
	return st.ewma
}

// hedgeDelay is how long to wait for reads from ps before asking other
// peers too: floor, or four times the slowest peer's usual latency when
// that is longer, so a loaded machine (every read slow) does not hedge
// every read and double its own load.
func (s *PeerStats) hedgeDelay(floor time.Duration, ps ...peer.ID) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := floor
	for _, p := range ps {
		if st := s.peers[p]; st != nil {
			d = max(d, 4*st.ewma)
		}
	}
	// A slow peer must not push its own hedge out of reach.
	return min(d, max(floor, maxHedgeDelay))
}

// failing reports whether p failed recently: readers go around it.
func (s *PeerStats) failing(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peers[p]
	return st != nil && st.fails > 0 && s.now().Sub(st.lastFail) < failPenalty
}

// rank sorts ps, fastest first (stable, so callers' preferences break ties).
func (s *PeerStats) rank(ps []peer.ID) {
	s.mu.Lock()
	scores := make(map[peer.ID]time.Duration, len(ps))
	for _, p := range ps {
		scores[p] = s.score(p)
	}
	s.mu.Unlock()
	sort.SliceStable(ps, func(i, j int) bool { return scores[ps[i]] < scores[ps[j]] })
}
