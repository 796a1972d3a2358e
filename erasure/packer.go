package erasure

import (
	"context"
	"iter"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
)

// Packer lays blocks out one after another in segments of about a target
// size; a block is never split across segments.
type Packer struct {
	target int64
	room   int // capacity to allocate: the largest segment's shards, parity included
	buf    []byte
	refs   []BlockRef
}

// NewPacker returns a Packer filling segments of the Striper's size. Its
// segments come with room for their parity, so Encode allocates nothing.
func (s *Striper) NewPacker() *Packer {
	most := s.opts.segmentSize + dag.MaxBlockSize
	perShard := (most + int64(s.k) - 1) / int64(s.k)
	return &Packer{target: s.opts.segmentSize, room: int(perShard) * (s.k + s.m)}
}

// Add appends block c. It reports whether the segment has reached its
// target size and should be taken with Take.
func (p *Packer) Add(c cid.Cid, data []byte) (full bool) {
	if p.buf == nil {
		p.buf = make([]byte, 0, p.room)
	}
	p.refs = append(p.refs, BlockRef{CID: c.String(), Offset: int64(len(p.buf)), Length: int64(len(data))})
	p.buf = append(p.buf, data...)
	return int64(len(p.buf)) >= p.target
}

// Len returns the bytes pending in the current segment.
func (p *Packer) Len() int { return len(p.buf) }

// Take returns the current segment's bytes and its blocks (whose Segment
// field the caller sets), and starts a new segment.
func (p *Packer) Take() ([]byte, []BlockRef) {
	buf, refs := p.buf, p.refs
	p.buf, p.refs = nil, nil
	return buf, refs
}

// StoreAll packs the blocks yields into segments and stores each with
// Store, keeping up to two segments in flight so packing and encoding the
// next overlaps uploading the last. done is called once per stored
// segment, in order, with the segment and its blocks (Segment field
// unset); an error from it or from a Store stops everything.
func (s *Striper) StoreAll(ctx context.Context, blocks iter.Seq2[cid.Cid, []byte], candidates []peer.ID, store ShardStore,
	done func(Segment, []BlockRef) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type pending struct {
		refs []BlockRef
		res  chan storeResult
	}
	queue := make(chan pending, 1) // one waiting while one is stored: two in flight
	finished := make(chan error, 1)
	go func() {
		var err error
		for p := range queue {
			r := <-p.res
			if err == nil {
				err = r.err
				if err == nil {
					err = done(r.seg, p.refs)
				}
				if err != nil {
					cancel()
				}
			}
		}
		finished <- err
	}()
	packer := s.NewPacker()
	flush := func() bool {
		data, refs := packer.Take()
		res := make(chan storeResult, 1)
		select {
		case queue <- pending{refs, res}:
		case <-ctx.Done():
			return false
		}
		go func() {
			seg, err := s.Store(ctx, data, candidates, store)
			res <- storeResult{seg, err}
		}()
		return true
	}
	ok := true
	for c, data := range blocks {
		if packer.Add(c, data) {
			if ok = flush(); !ok {
				break
			}
		}
	}
	if ok && packer.Len() > 0 {
		flush()
	}
	close(queue)
	if err := <-finished; err != nil {
		return err
	}
	return ctx.Err()
}

type storeResult struct {
	seg Segment
	err error
}
