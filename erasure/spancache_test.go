package erasure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/storageapi"
)

// TestSpanCacheKeyedBySegmentContent: two segments that share their first
// data shard but differ in the others must not share rebuilt spans. The
// shared SpanCache was keyed by the first shard's ID alone, so a degraded
// read of one segment was answered with the other's columns and failed
// (and anyone able to publish such a segment, and make its reads degrade,
// could keep another publisher's blocks from being rebuilt).
func TestSpanCacheKeyedBySegmentContent(t *testing.T) {
	const k, shardSize = 4, 4096
	s, err := New(k, 2, WithChunkSize(1024))
	if err != nil {
		t.Fatal(err)
	}
	peers := testPeers(t, 6)
	store := newMemStore()
	fill := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed ^ byte(i*7+i>>8)
		}
		return b
	}
	sum := func(b []byte) cid.Cid {
		c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	head := fill(1, shardSize) // data shard 0 of both segments
	tests := []struct {
		name string
		tail []byte // data shards 1..k-1
	}{
		{"first segment", fill(2, (k-1)*shardSize)},
		{"second segment, same first shard", fill(3, (k-1)*shardSize)},
	}
	spans := NewSpanCache(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store.mu.Lock()
			store.down[peers[1]] = false
			store.mu.Unlock()
			segment := append(bytes.Clone(head), tc.tail...)
			seg, err := s.Store(context.Background(), segment[:len(segment):len(segment)], peers, store)
			if err != nil {
				t.Fatal(err)
			}
			tail := sum(tc.tail)
			m := &Manifest{Root: tail.String(), DataShards: k, ParityShards: 2, ChunkSize: 1024,
				Segments: []Segment{seg}, Blocks: []BlockRef{
					{CID: sum(head).String(), Offset: 0, Length: shardSize},
					{CID: tail.String(), Offset: shardSize, Length: int64(len(tc.tail))},
				}}
			// The tail's first data shard is down: its read is rebuilt.
			store.mu.Lock()
			store.down[peers[1]] = true
			store.mu.Unlock()
			r, err := NewReader(m, store, WithSpanCache(spans), WithHedgeAfter(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.ReadBlock(context.Background(), tail)
			if err != nil {
				t.Fatalf("degraded read: %v", err)
			}
			if !bytes.Equal(got, tc.tail) {
				t.Fatal("degraded read returned wrong bytes")
			}
		})
	}
}

// TestFailureReason: a read inside the shard (whose ID commits to its
// size) answered 416 is the peer's fault, like a 404 or a wrong body; it
// was counted as "unreachable", never flagging a peer that dropped shards.
func TestFailureReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"not found", &storageapi.PeerError{Status: 404}, "bad-bytes"},
		{"range not satisfiable", fmt.Errorf("get: %w", &storageapi.PeerError{Status: 416}), "bad-bytes"},
		{"short body", fmt.Errorf("get: %w: got 3 bytes", storageapi.ErrBadAnswer), "bad-bytes"},
		{"forbidden", &storageapi.PeerError{Status: 403}, "unreachable"},
		{"server error", &storageapi.PeerError{Status: 500}, "unreachable"},
		{"transport", errors.New("connection refused"), "unreachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failureReason(tc.err); got != tc.want {
				t.Fatalf("failureReason(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
