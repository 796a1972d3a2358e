package durability

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// placements tracks the shards being put on storage peers whose rows are
// not saved yet (a stripe job's or a repair's), and the shards being
// deleted from peers. A peer keeps one file per shard ID, and two segments
// can place the same shard (same bytes, same ID) on one peer, so repair
// checks that no saved row still places a shard on its old peer before
// deleting it there; placements covers what the database does not show
// yet: a delete never runs while the same shard is being put on the same
// peer, and a put of it there waits for such a delete to end.
type placements struct {
	mu       sync.Mutex
	inflight map[placement]int
	deleting map[placement]bool
	ended    chan struct{} // closed, and replaced, whenever a delete ends
}

// placement is one shard on one peer.
type placement struct {
	shard string
	peer  peer.ID
}

func newPlacements() *placements {
	return &placements{inflight: map[placement]int{}, deleting: map[placement]bool{}, ended: make(chan struct{})}
}

// begin notes that k's shard is being put on k's peer, first waiting for
// a delete of it there to end.
func (ps *placements) begin(ctx context.Context, k placement) error {
	for {
		ps.mu.Lock()
		if !ps.deleting[k] {
			ps.inflight[k]++
			ps.mu.Unlock()
			return nil
		}
		ended := ps.ended
		ps.mu.Unlock()
		select {
		case <-ended:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// end undoes one begin, once the put's row is saved (or will never be).
func (ps *placements) end(k placement) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.inflight[k]--; ps.inflight[k] <= 0 {
		delete(ps.inflight, k)
	}
}

// startDelete reports whether k's shard may be deleted from k's peer: no
// put of it there is in flight. If so, puts of it there wait until
// endDelete.
func (ps *placements) startDelete(k placement) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.inflight[k] > 0 || ps.deleting[k] {
		return false
	}
	ps.deleting[k] = true
	return true
}

// endDelete ends a delete startDelete allowed.
func (ps *placements) endDelete(k placement) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.deleting, k)
	close(ps.ended)
	ps.ended = make(chan struct{})
}

// placingShards is the ShardStore of one stripe job or repair: each shard
// it puts stays noted in the Keeper's placements until release, which the
// job calls once it has saved the rows placing them (or failed).
type placingShards struct {
	peerShards
	mu   sync.Mutex
	keys []placement
}

func (kp *Keeper) placingShards() *placingShards {
	return &placingShards{peerShards: peerShards{keeper: kp, client: kp.storage}}
}

// PutShard puts a shard on p, noted as in flight until release.
func (s *placingShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	k := placement{shard: shard, peer: p}
	if err := s.keeper.placing.begin(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	s.keys = append(s.keys, k)
	s.mu.Unlock()
	return s.peerShards.PutShard(ctx, p, shard, data)
}

// release ends every put of the job.
func (s *placingShards) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		s.keeper.placing.end(k)
	}
	s.keys = nil
}
