// Package erasure stripes published content across storage peers with a
// systematic Reed-Solomon code (github.com/klauspost/reedsolomon) and
// reads it back, verified.
//
// Blocks are packed into segments; a segment is split into k data shards
// (shard i is the contiguous i-th 1/k of the segment, the last one zero
// padded) and m parity shards, each placed on a different peer. Any k of
// the k+m shards rebuild the segment. A Manifest, signed by the origin,
// records every shard's peer, its content ID and the hashes of its
// fixed-size chunks, and where each block lies.
//
// A Reader serves a block by reading exactly its bytes from the data
// shard(s) holding it (the fast path: no decoding, no extra bytes). When a
// peer is slow, down, or sends bytes that do not verify, it reads the same
// columns from other shards, checks each piece against the manifest's chunk
// hashes, reconstructs only that range, and flags the lying peer. Every
// block is checked against its CID before it is returned.
package erasure
