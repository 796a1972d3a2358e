package erasure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
)

// memStore is an in-memory ShardStore whose peers can be down, lying or
// stalled, and which counts what readers ask for.
type memStore struct {
	mu      sync.Mutex
	shards  map[peer.ID]map[string][]byte
	down    map[peer.ID]bool
	liar    map[peer.ID]bool
	stalled map[peer.ID]bool
	slow    map[peer.ID]time.Duration
	full    map[peer.ID]bool
	gets    int
	bytes   int64
}

func newMemStore() *memStore {
	return &memStore{shards: map[peer.ID]map[string][]byte{}, down: map[peer.ID]bool{},
		liar: map[peer.ID]bool{}, stalled: map[peer.ID]bool{}, slow: map[peer.ID]time.Duration{}, full: map[peer.ID]bool{}}
}

func (m *memStore) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[p] || m.full[p] {
		return fmt.Errorf("peer %s refuses", p)
	}
	if storageapi.ShardID(data) != shard {
		return errors.New("hash mismatch")
	}
	if m.shards[p] == nil {
		m.shards[p] = map[string][]byte{}
	}
	m.shards[p][shard] = bytes.Clone(data)
	return nil
}

func (m *memStore) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	m.mu.Lock()
	m.gets++
	m.bytes += length
	down, liar, stalled, slow := m.down[p], m.liar[p], m.stalled[p], m.slow[p]
	data, ok := m.shards[p][shard]
	m.mu.Unlock()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if stalled {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if down || !ok {
		return nil, fmt.Errorf("peer %s unreachable", p)
	}
	if off < 0 || off+length > int64(len(data)) {
		return nil, errors.New("range out of bounds")
	}
	out := bytes.Clone(data[off : off+length])
	if liar && len(out) > 0 {
		out[len(out)/2] ^= 0x55
	}
	return out, nil
}

func (m *memStore) counts() (int, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, b := m.gets, m.bytes
	m.gets, m.bytes = 0, 0
	return g, b
}

func testPeers(t testing.TB, n int) []peer.ID {
	t.Helper()
	ps := make([]peer.ID, n)
	for i := range ps {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = k.ID
	}
	return ps
}

type testBlock struct {
	c    cid.Cid
	data []byte
}

func randomBlocks(t testing.TB, n int, seed uint64) []testBlock {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]testBlock, n)
	for i := range out {
		size := 1 + rng.IntN(300<<10)
		if i == 0 {
			size = 0 // the empty block
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		c, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
		out[i] = testBlock{c, b}
	}
	return out
}

// stripe packs blocks into segments, stores them, and returns the manifest.
func stripe(t testing.TB, s *Striper, blocks []testBlock, peers []peer.ID, store ShardStore) *Manifest {
	t.Helper()
	m := &Manifest{Root: blocks[len(blocks)-1].c.String(), DataShards: s.DataShards(), ParityShards: s.ParityShards(),
		ChunkSize: s.ChunkSize(), Created: time.Now()}
	p := s.NewPacker()
	flush := func() {
		data, refs := p.Take()
		seg, err := s.Store(context.Background(), data, peers, store)
		if err != nil {
			t.Fatal(err)
		}
		for i := range refs {
			refs[i].Segment = len(m.Segments)
		}
		m.Segments = append(m.Segments, seg)
		m.Blocks = append(m.Blocks, refs...)
	}
	for _, b := range blocks {
		if p.Add(b.c, b.data) {
			flush()
		}
	}
	if p.Len() > 0 {
		flush()
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewShape(t *testing.T) {
	tests := []struct {
		k, m int
		ok   bool
	}{
		{10, 4, true}, {1, 1, true}, {200, 56, true},
		{0, 4, false}, {10, 0, false}, {200, 57, false}, {-1, 3, false},
	}
	for _, tc := range tests {
		_, err := New(tc.k, tc.m)
		if (err == nil) != tc.ok {
			t.Errorf("New(%d, %d) err = %v, want ok=%v", tc.k, tc.m, err, tc.ok)
		}
	}
}

func TestDataPieces(t *testing.T) {
	tests := []struct {
		name              string
		shardSize, off, n int64
		want              []piece
	}{
		{"inside one shard", 100, 10, 20, []piece{{0, 10, 20}}},
		{"ends at boundary", 100, 80, 20, []piece{{0, 80, 20}}},
		{"starts at boundary", 100, 100, 20, []piece{{1, 0, 20}}},
		{"crosses one boundary", 100, 90, 20, []piece{{0, 90, 10}, {1, 0, 10}}},
		{"spans several shards", 10, 5, 30, []piece{{0, 5, 5}, {1, 0, 10}, {2, 0, 10}, {3, 0, 5}}},
		{"zero length", 100, 50, 0, nil},
		{"huge block, small shards", 1, 0, 3, []piece{{0, 0, 1}, {1, 0, 1}, {2, 0, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := dataPieces(tc.shardSize, tc.off, tc.n)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("dataPieces = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSpanOf(t *testing.T) {
	tests := []struct {
		name             string
		a, span, shard   int64
		wantStart, wantE int64
	}{
		{"first span", 0, 128, 1000, 0, 128},
		{"inside", 300, 128, 1000, 256, 384},
		{"on a boundary", 256, 128, 1000, 256, 384},
		{"last short span", 999, 128, 1000, 896, 1000},
		{"span wider than the shard", 5, 4096, 1000, 0, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, e := spanOf(tc.a, tc.span, tc.shard)
			if s != tc.wantStart || e != tc.wantE {
				t.Fatalf("spanOf = [%d,%d), want [%d,%d)", s, e, tc.wantStart, tc.wantE)
			}
		})
	}
}

func TestReadFastPath(t *testing.T) {
	s, err := New(10, 4, WithSegmentSize(1<<20), WithChunkSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	peers := testPeers(t, 14)
	store := newMemStore()
	blocks := randomBlocks(t, 20, 1)
	m := stripe(t, s, blocks, peers, store)
	if len(m.Segments) < 2 {
		t.Fatalf("want several segments, got %d", len(m.Segments))
	}
	r, err := NewReader(m, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		store.counts()
		got, err := r.ReadBlock(context.Background(), b.c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b.data) {
			t.Fatalf("block %s differs", b.c)
		}
		ref := r.index[b.c]
		want := len(dataPieces(m.Segments[ref.Segment].ShardSize, ref.Offset, ref.Length))
		gets, n := store.counts()
		if gets != want || n != int64(len(b.data)) {
			t.Fatalf("block of %d bytes: %d reads of %d bytes, want %d reads of exactly its bytes", len(b.data), gets, n, want)
		}
	}
}

// TestManifestSize: a manifest's size is the bytes of the blocks it
// stripes, over every segment.
func TestManifestSize(t *testing.T) {
	s, err := New(2, 1, WithSegmentSize(1<<20), WithChunkSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	blocks := randomBlocks(t, 12, 3)
	m := stripe(t, s, blocks, testPeers(t, 3), newMemStore())
	var want int64
	for _, b := range blocks {
		want += int64(len(b.data))
	}
	if len(m.Segments) < 2 || m.Size() != want {
		t.Fatalf("%d segments, size %d, want %d in several", len(m.Segments), m.Size(), want)
	}
	if (&Manifest{}).Size() != 0 {
		t.Fatal("an empty manifest has a size")
	}
}

func TestReadDegraded(t *testing.T) {
	s, _ := New(10, 4, WithSegmentSize(2<<20), WithChunkSize(4096))
	peers := testPeers(t, 14)
	blocks := randomBlocks(t, 12, 2)
	tests := []struct {
		name     string
		setup    func(st *memStore)
		wantErr  error
		wantFlag string
	}{
		{"4 peers down, data shards among them", func(st *memStore) {
			for _, p := range []int{0, 3, 9, 12} {
				st.down[peers[p]] = true
			}
		}, nil, ""},
		{"a data peer lies", func(st *memStore) { st.liar[peers[2]] = true }, nil, "bad-bytes"},
		{"two liars and two down", func(st *memStore) {
			st.liar[peers[1]], st.liar[peers[5]] = true, true
			st.down[peers[0]], st.down[peers[11]] = true, true
		}, nil, "bad-bytes"},
		{"a data peer stalls", func(st *memStore) { st.stalled[peers[4]] = true }, nil, ""},
		{"5 peers down", func(st *memStore) {
			for _, p := range []int{0, 1, 2, 10, 13} {
				st.down[peers[p]] = true
			}
		}, ErrNotEnoughShards, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore()
			m := stripe(t, s, blocks, peers, store)
			tc.setup(store)
			var mu sync.Mutex
			flags := map[string]int{}
			// Hedge early only where a peer stalls: elsewhere a loaded machine
			// must not make the read skip the liar it is meant to catch.
			hedge := 5 * time.Second
			if len(store.stalled) > 0 {
				hedge = 20 * time.Millisecond
			}
			r, err := NewReader(m, store, WithHedgeAfter(hedge), WithFlagFunc(func(f Flag) {
				mu.Lock()
				flags[f.Reason]++
				mu.Unlock()
			}))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			failed := 0
			for _, b := range blocks {
				got, err := r.ReadBlock(ctx, b.c)
				if tc.wantErr != nil {
					if len(b.data) > 0 && !errors.Is(err, tc.wantErr) {
						// A block may still be readable if it avoids the dead shards.
						if err == nil && bytes.Equal(got, b.data) {
							continue
						}
						t.Fatalf("err = %v, want %v", err, tc.wantErr)
					}
					if errors.Is(err, tc.wantErr) {
						failed++
					}
					continue
				}
				if err != nil {
					t.Fatalf("block %s: %v", b.c, err)
				}
				if !bytes.Equal(got, b.data) {
					t.Fatalf("block %s: wrong bytes returned", b.c)
				}
			}
			if tc.wantErr != nil && failed == 0 {
				t.Fatal("every block read although too few shards were left")
			}
			if tc.wantFlag != "" && flags[tc.wantFlag] == 0 {
				t.Fatalf("no %q flag raised (flags %v)", tc.wantFlag, flags)
			}
		})
	}
}

// TestReadCatchesSlowLiar: a data peer that answers wrong bytes after the
// hedge delay loses the race to the rebuild, yet its answer is still
// checked when it comes and the peer is flagged.
func TestReadCatchesSlowLiar(t *testing.T) {
	s, _ := New(10, 4, WithSegmentSize(2<<20), WithChunkSize(4096))
	peers := testPeers(t, 14)
	blocks := randomBlocks(t, 12, 3)
	store := newMemStore()
	m := stripe(t, s, blocks, peers, store)
	liar := peers[2]
	store.liar[liar], store.slow[liar] = true, 300*time.Millisecond
	flagged := make(chan Flag, 16)
	r, err := NewReader(m, store, WithHedgeAfter(20*time.Millisecond), WithFlagFunc(func(f Flag) {
		select {
		case flagged <- f:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	var b testBlock
	for _, tb := range blocks {
		ref := r.index[tb.c]
		for _, p := range dataPieces(m.Segments[ref.Segment].ShardSize, ref.Offset, ref.Length) {
			if m.Segments[ref.Segment].Shards[p.shard].Peer == liar.String() {
				b = tb
			}
		}
	}
	if b.data == nil {
		t.Fatal("no block has bytes on the liar's data shard")
	}
	got, err := r.ReadBlock(context.Background(), b.c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b.data) {
		t.Fatal("wrong bytes returned")
	}
	select {
	case f := <-flagged:
		if f.Peer != liar || f.Reason != "bad-bytes" {
			t.Fatalf("flag %+v, want bad-bytes for %s", f, liar)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slow liar was never flagged")
	}
}

func TestStorePlacesOnDistinctPeersAndSkipsFull(t *testing.T) {
	s, _ := New(4, 2, WithChunkSize(1024))
	peers := testPeers(t, 8)
	store := newMemStore()
	store.full[peers[1]] = true
	store.full[peers[4]] = true
	seg, err := s.Store(context.Background(), bytes.Repeat([]byte("topcdn"), 5000), peers, store)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, sh := range seg.Shards {
		if used[sh.Peer] || sh.Peer == peers[1].String() || sh.Peer == peers[4].String() {
			t.Fatalf("bad placement: %v", seg.Shards)
		}
		used[sh.Peer] = true
	}
	store.full[peers[0]] = true
	if _, err := s.Store(context.Background(), []byte("x"), peers, store); !errors.Is(err, ErrNotEnoughPeers) {
		t.Fatalf("with 5 usable peers for 6 shards: err = %v", err)
	}
}

func TestManifestSignOpen(t *testing.T) {
	s, _ := New(4, 2, WithSegmentSize(64<<10), WithChunkSize(1024))
	peers := testPeers(t, 6)
	m := stripe(t, s, randomBlocks(t, 5, 3), peers, newMemStore())
	origin, _ := identity.Generate(nil)
	other, _ := identity.Generate(nil)
	env, err := m.Sign(origin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenManifest(env, origin.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenManifest(env, other.ID); err == nil {
		t.Fatal("manifest accepted from the wrong origin")
	}
	for _, off := range []int64{m.Segments[0].Length, 1<<63 - 10} { // past the end; overflowing
		bad := *m
		bad.Blocks = append([]BlockRef(nil), m.Blocks...)
		bad.Blocks[0].Offset = off
		bad.Blocks[0].Length = 100
		if _, err := bad.Sign(origin); err == nil {
			t.Fatalf("signed a manifest with a block at offset %d, outside its segment", off)
		}
	}
}
