package erasure

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/ipfs/go-cid"
)

// FuzzManifest feeds arbitrary JSON as a manifest. Whatever the input: no
// panic; a manifest that validates gives a Reader, and every block's
// pieces and chunk spans stay inside its shards.
func FuzzManifest(f *testing.F) {
	s, _ := New(4, 2, WithSegmentSize(64<<10), WithChunkSize(1024))
	m := stripe(f, s, randomBlocks(f, 6, 9), testPeers(f, 6), newMemStore())
	good, _ := json.Marshal(m)
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"root":"bafkqaaa","data_shards":1,"parity_shards":1,"chunk_size":512}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Manifest
		if json.Unmarshal(data, &m) != nil || m.Validate() != nil {
			return
		}
		r, err := NewReader(&m, newMemStore())
		if err != nil {
			t.Fatalf("valid manifest, no reader: %v", err)
		}
		for _, b := range m.Blocks {
			seg := m.Segments[b.Segment]
			var total int64
			for _, p := range dataPieces(seg.ShardSize, b.Offset, b.Length) {
				if p.shard < 0 || p.shard >= m.DataShards || p.off < 0 || p.off+p.length > seg.ShardSize {
					t.Fatalf("piece %+v outside shard of %d bytes", p, seg.ShardSize)
				}
				span := r.spanSize()
				for a := p.off; a < p.off+p.length; {
					start, end := spanOf(a, span, seg.ShardSize)
					if start > a || end <= a || end > seg.ShardSize || start%int64(m.ChunkSize) != 0 {
						t.Fatalf("span [%d,%d) wrong for column %d of piece %+v", start, end, a, p)
					}
					a = end
				}
				total += p.length
			}
			if total != b.Length {
				t.Fatalf("pieces cover %d of %d bytes", total, b.Length)
			}
		}
		// Reads against peers that hold nothing fail cleanly.
		for _, b := range m.Blocks[:min(len(m.Blocks), 2)] {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r.ReadBlock(ctx, cid.MustParse(b.CID))
		}
	})
}
