package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
)

func TestMakeErasureInput(t *testing.T) {
	const size = 1<<20 + 1000
	a := makeErasureInput(size, 256<<10, datasetSeed)
	b := makeErasureInput(size, 256<<10, datasetSeed)
	if !bytes.Equal(a.data, b.data) || len(a.data) != size {
		t.Fatal("input is not deterministic or has the wrong size")
	}
	// Pinned so a generator change, which would make results of different
	// versions incomparable, is noticed.
	if got, want := a.sha256()[:16], "e7416180f8fc6e19"; got != want {
		t.Errorf("input sha256 starts %s, want %s", got, want)
	}
	if c := makeErasureInput(size, 256<<10, datasetSeed+1); bytes.Equal(c.data, a.data) {
		t.Error("another seed gives the same input")
	}
	if got := a.blockLens(); !slices.Equal(got, []int{256 << 10, 256 << 10, 256 << 10, 256 << 10, 1000}) {
		t.Fatalf("block lengths %v", got)
	}
	for i, blk := range a.blocks {
		if err := dag.Verify(blk.cid, a.block(i)); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if cap(a.block(i)) != blk.n {
			t.Fatalf("block %d can be appended to in place", i)
		}
	}
}

func TestSegmentLengthsMatchPacker(t *testing.T) {
	lens := []int{300, 700, 1, 999, 1000, 5, 2000, 10, 10}
	for _, target := range []int64{1, 1000, 1001, 2500, 1 << 20} {
		s, err := erasure.New(4, 2, erasure.WithSegmentSize(target))
		if err != nil {
			t.Fatal(err)
		}
		in := makeErasureInput(1, 1, 1) // a valid CID for Add
		p := s.NewPacker()
		var want []int64
		for _, n := range lens {
			if p.Add(in.blocks[0].cid, make([]byte, n)) {
				data, _ := p.Take()
				want = append(want, int64(len(data)))
			}
		}
		if p.Len() > 0 {
			want = append(want, int64(p.Len()))
		}
		if got := segmentLengths(lens, target); !slices.Equal(got, want) {
			t.Errorf("target %d: segmentLengths = %v, the Packer makes %v", target, got, want)
		}
	}
	if got := storedBytes([]int64{100, 101}, 10, 4); got != 14*10+14*11 {
		t.Errorf("storedBytes = %d", got)
	}
}

func TestResolvePeers(t *testing.T) {
	keys := make([]*identity.Key, 3)
	for i := range keys {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	serve := func(id string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/status" {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(storageapi.Status{PeerID: id})
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	urls := []string{serve(keys[0].ID.String()), serve(keys[1].ID.String()), serve(keys[2].ID.String())}
	c := storageapi.NewClient(keys[0], nil)
	ctx := context.Background()

	ids, addrs, err := resolvePeers(ctx, c, urls)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if ids[i] != k.ID || addrs[k.ID] != urls[i] {
			t.Fatalf("peer %d: got %s at %s, want %s at %s", i, ids[i], addrs[k.ID], k.ID, urls[i])
		}
	}
	if _, _, err := resolvePeers(ctx, c, []string{urls[0], urls[1], serve(keys[0].ID.String())}); err == nil ||
		!strings.Contains(err.Error(), "both say") {
		t.Errorf("two peers with one ID: err = %v", err)
	}
	if _, _, err := resolvePeers(ctx, c, []string{serve("not-a-peer-id")}); err == nil {
		t.Error("a bad peer_id was accepted")
	}

	store := &peerStore{client: c, addrs: addrs}
	unknown := keys[0].ID + "x"
	if _, err := store.GetShard(ctx, unknown, "x", 0, 1); err == nil || store.getErrors.Load() != 1 {
		t.Errorf("read from an unknown peer: err = %v, %d failures counted", err, store.getErrors.Load())
	}
}

func TestLostShardsAndRebuilds(t *testing.T) {
	p := make([]string, 6)
	for i := range p {
		p[i] = fmt.Sprintf("peer-%d", i)
	}
	// 4+2, shards of 100 bytes; blocks: in shard 0, across shards 0-1,
	// in shard 1, in shard 2, empty, in a second segment's shard 3.
	seg := func(order ...int) erasure.Segment {
		s := erasure.Segment{Length: 400, ShardSize: 100}
		for _, i := range order {
			s.Shards = append(s.Shards, erasure.Shard{Peer: p[i]})
		}
		return s
	}
	m := &erasure.Manifest{DataShards: 4, ParityShards: 2,
		Segments: []erasure.Segment{seg(0, 1, 2, 3, 4, 5), seg(5, 4, 3, 1, 2, 0)},
		Blocks: []erasure.BlockRef{
			{Segment: 0, Offset: 0, Length: 50},
			{Segment: 0, Offset: 90, Length: 20},
			{Segment: 0, Offset: 150, Length: 50},
			{Segment: 0, Offset: 250, Length: 10},
			{Segment: 0, Offset: 100, Length: 0},
			{Segment: 1, Offset: 300, Length: 100},
		}}
	dead := map[string]bool{p[1]: true}
	if got := lostShards(m, dead); fmt.Sprint(got) != "[[1] [3]]" {
		t.Errorf("lostShards = %v", got)
	}
	if got := blocksNeedingRebuild(m, dead); got != 3 {
		t.Errorf("blocksNeedingRebuild = %d, want 3 (the two touching shard 1 of segment 0, the one in shard 3 of segment 1)", got)
	}
}

// memShards is an in-memory ShardStore whose peers can be down.
type memShards struct {
	mu     sync.Mutex
	shards map[string][]byte // peer/shard -> bytes
	down   map[peer.ID]bool
}

func (m *memShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shards[p.String()+"/"+shard] = bytes.Clone(data)
	return nil
}

// setDown marks p down; reads still in flight from an earlier read may
// be running, so it takes the lock.
func (m *memShards) setDown(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[p] = true
}

func (m *memShards) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.shards[p.String()+"/"+shard]
	if m.down[p] || !ok {
		return nil, errors.New("connection refused")
	}
	return bytes.Clone(data[off : off+length]), nil
}

// TestStripeAndRead runs the stripe-and-store and both read phases on a
// small input and in-memory peers.
func TestStripeAndRead(t *testing.T) {
	in := makeErasureInput(3<<20+12345, 256<<10, datasetSeed)
	s, err := erasure.New(10, 4, erasure.WithSegmentSize(1<<20), erasure.WithChunkSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	peers := make([]peer.ID, 14)
	for i := range peers {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		peers[i] = k.ID
	}
	store := &memShards{shards: map[string][]byte{}, down: map[peer.ID]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, d, err := stripeAndStore(ctx, s, in, peers, store)
	if err != nil {
		t.Fatal(err)
	}
	segs := segmentLengths(in.blockLens(), 1<<20)
	if d <= 0 || len(m.Segments) != len(segs) || len(m.Blocks) != len(in.blocks) {
		t.Fatalf("took %v, %d segments (want %d), %d blocks (want %d)", d, len(m.Segments), len(segs), len(m.Blocks), len(in.blocks))
	}
	if len(store.shards) != len(segs)*14 {
		t.Fatalf("%d shards stored, want %d", len(store.shards), len(segs)*14)
	}
	r, err := erasure.NewReader(m, store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllBlocks(ctx, r, in, 4); err != nil {
		t.Fatal(err)
	}

	dead := map[string]bool{}
	for i := range 4 {
		dead[m.Segments[0].Shards[i].Peer] = true
	}
	for _, p := range peers {
		if dead[p.String()] {
			store.setDown(p)
		}
	}
	if n := blocksNeedingRebuild(m, dead); n == 0 {
		t.Fatal("no block needs rebuilding with 4 peers down")
	}
	r, err = erasure.NewReader(m, store, erasure.WithHedgeAfter(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllBlocks(ctx, r, in, 4); err != nil {
		t.Fatalf("degraded: %v", err)
	}

	// A fifth peer down: some block can no longer be read, and the read
	// says which.
	for _, p := range peers {
		if !dead[p.String()] {
			store.setDown(p)
			break
		}
	}
	r, _ = erasure.NewReader(m, store, erasure.WithHedgeAfter(10*time.Millisecond))
	if _, err := readAllBlocks(ctx, r, in, 4); err == nil || !strings.Contains(err.Error(), "block ") {
		t.Fatalf("5 peers down: err = %v", err)
	}
}
