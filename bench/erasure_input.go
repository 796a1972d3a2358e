package main

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// erasureInput is the benchmark's input: deterministic bytes cut into raw
// blocks.
type erasureInput struct {
	data   []byte
	blocks []inputBlock
}

// inputBlock is one raw block of the input: data[off:off+n].
type inputBlock struct {
	cid    cid.Cid
	off, n int
}

// makeErasureInput returns size bytes of the ChaCha8 keystream seeded by
// seed (label "erasure-input"), cut into blockSize raw blocks (the last
// may be shorter), each with its CIDv1 (raw, sha2-256).
func makeErasureInput(size int64, blockSize int, seed uint64) *erasureInput {
	in := &erasureInput{data: make([]byte, size)}
	rand.NewChaCha8(deriveSeed(seed, "erasure-input")).Read(in.data) // never fails
	prefix := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}
	for off := 0; off < len(in.data); off += blockSize {
		n := min(blockSize, len(in.data)-off)
		c, err := prefix.Sum(in.data[off : off+n])
		if err != nil {
			panic(err) // sha2-256 always works
		}
		in.blocks = append(in.blocks, inputBlock{cid: c, off: off, n: n})
	}
	return in
}

// block returns the bytes of block i, capped so nothing can append past
// them into the rest of the input.
func (in *erasureInput) block(i int) []byte {
	b := in.blocks[i]
	return in.data[b.off : b.off+b.n : b.off+b.n]
}

func (in *erasureInput) blockLens() []int {
	out := make([]int, len(in.blocks))
	for i, b := range in.blocks {
		out[i] = b.n
	}
	return out
}

func (in *erasureInput) sha256() string {
	sum := sha256.Sum256(in.data)
	return hex.EncodeToString(sum[:])
}

// segmentLengths returns the lengths of the segments erasure.Packer makes
// of blocks of the given lengths: blocks are appended until a segment
// reaches target bytes.
func segmentLengths(blockLens []int, target int64) []int64 {
	var out []int64
	var cur int64
	for _, n := range blockLens {
		cur += int64(n)
		if cur >= target {
			out = append(out, cur)
			cur = 0
		}
	}
	if cur > 0 {
		out = append(out, cur)
	}
	return out
}

// shardSize is the size of each shard of a segment of n bytes split into
// k data shards.
func shardSize(n int64, k int) int64 { return (n + int64(k) - 1) / int64(k) }

// storedBytes is what striping segments of the given lengths writes: k+m
// shards of each.
func storedBytes(segs []int64, k, m int) int64 {
	var total int64
	for _, n := range segs {
		total += int64(k+m) * shardSize(n, k)
	}
	return total
}
