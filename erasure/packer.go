package erasure

import "github.com/ipfs/go-cid"

// Packer lays blocks out one after another in segments of about a target
// size; a block is never split across segments.
type Packer struct {
	target int64
	buf    []byte
	refs   []BlockRef
}

// NewPacker returns a Packer filling segments of the Striper's size.
func (s *Striper) NewPacker() *Packer { return &Packer{target: s.opts.segmentSize} }

// Add appends block c. It reports whether the segment has reached its
// target size and should be taken with Take.
func (p *Packer) Add(c cid.Cid, data []byte) (full bool) {
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
