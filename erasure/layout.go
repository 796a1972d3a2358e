package erasure

// piece is the part of a block held by one data shard: bytes
// [off, off+length) of that shard, which are the same byte columns in
// every shard of the segment.
type piece struct {
	shard       int
	off, length int64
}

// dataPieces splits the segment range [off, off+length) into the pieces of
// the data shards that hold it, in order. Data shard i holds segment bytes
// [i*shardSize, (i+1)*shardSize).
func dataPieces(shardSize, off, length int64) []piece {
	var out []piece
	for length > 0 {
		i := off / shardSize
		inner := off % shardSize
		n := min(length, shardSize-inner)
		out = append(out, piece{shard: int(i), off: inner, length: n})
		off += n
		length -= n
	}
	return out
}

// spanOf returns the rebuild span holding shard column a: spans are span
// bytes wide (a whole number of chunks), aligned, and clipped to the shard.
func spanOf(a, span, shardSize int64) (start, end int64) {
	start = a / span * span
	return start, min(start+span, shardSize)
}
