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

// chunkSpan widens the shard columns [off, off+length) to whole chunks,
// clipped to the shard: the span a degraded read must fetch so every byte
// can be checked against a chunk hash. It returns [start, end) and the
// index of the first chunk.
func chunkSpan(off, length int64, chunkSize int, shardSize int64) (start, end int64, first int) {
	cs := int64(chunkSize)
	start = off / cs * cs
	end = min((off+length+cs-1)/cs*cs, shardSize)
	return start, end, int(start / cs)
}
