package erasure

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/reedsolomon"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/storageapi"
)

// ShardStore reaches storage peers. Implementations sign the orders the
// peers require and find each peer's address.
type ShardStore interface {
	// PutShard stores a whole shard on peer p.
	PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error
	// GetShard returns bytes [off, off+length) of a shard held by peer p,
	// exactly length bytes or an error. The bytes are unverified.
	GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error)
}

// Defaults for New.
const (
	DefaultDataShards   = 10
	DefaultParityShards = 4
	DefaultSegmentSize  = 64 << 20
	DefaultChunkSize    = 32 << 10
)

// Errors.
var (
	// ErrNotEnoughShards is returned when fewer than k shards of a segment
	// could be read and verified.
	ErrNotEnoughShards = errors.New("not enough shards")
	// ErrNotEnoughPeers is returned when a segment cannot be placed on k+m
	// distinct peers.
	ErrNotEnoughPeers = errors.New("not enough storage peers")
	// ErrBlockNotFound is returned for a CID the manifest does not index.
	ErrBlockNotFound = errors.New("block not in manifest")
)

// Option configures a Striper or a Reader.
type Option func(*options)

type options struct {
	segmentSize int64
	chunkSize   int
	concurrency int
}

var defaultOptions = options{
	segmentSize: DefaultSegmentSize,
	chunkSize:   DefaultChunkSize,
	concurrency: max(16, 2*runtime.GOMAXPROCS(0)),
}

// WithSegmentSize sets the target segment size in bytes: blocks are packed
// until a segment reaches it (a block is never split). If n <= 0, it is
// ignored. Default: 64 MiB.
func WithSegmentSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.segmentSize = n
		}
	}
}

// WithChunkSize sets the size of the shard chunks whose hashes the
// manifest records; degraded reads fetch whole chunks. If n <= 0, it is
// ignored. Default: 32 KiB.
func WithChunkSize(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.chunkSize = n
		}
	}
}

// WithConcurrency bounds parallel shard transfers. If n <= 0, it is
// ignored. Default: 16 (every shard of a 10+4 segment at once), or
// 2 × GOMAXPROCS if more.
func WithConcurrency(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// Striper encodes segments with a k+m systematic Reed-Solomon code and
// places their shards on peers.
type Striper struct {
	k, m int
	enc  reedsolomon.Encoder
	opts options
}

// New returns a Striper for data+parity shards. It needs data ≥ 1,
// parity ≥ 1 and data+parity ≤ 256.
func New(data, parity int, opts ...Option) (*Striper, error) {
	if err := checkShape(data, parity); err != nil {
		return nil, fmt.Errorf("erasure: %w", err)
	}
	o := defaultOptions
	for _, opt := range opts {
		opt(&o)
	}
	enc, err := reedsolomon.New(data, parity)
	if err != nil {
		return nil, fmt.Errorf("erasure: %w", err)
	}
	return &Striper{k: data, m: parity, enc: enc, opts: o}, nil
}

// checkShape checks a shape of data+parity shards; callers prefix its
// errors.
func checkShape(data, parity int) error {
	switch {
	case data < 1:
		return fmt.Errorf("%d data shards: need at least 1", data)
	case parity < 1:
		return fmt.Errorf("%d parity shards: need at least 1", parity)
	case data+parity > 256:
		return fmt.Errorf("%d+%d shards: at most 256 in all", data, parity)
	}
	return nil
}

// DataShards returns k.
func (s *Striper) DataShards() int { return s.k }

// ParityShards returns m.
func (s *Striper) ParityShards() int { return s.m }

// SegmentSize returns the target segment size.
func (s *Striper) SegmentSize() int64 { return s.opts.segmentSize }

// ChunkSize returns the chunk size recorded in manifests.
func (s *Striper) ChunkSize() int { return s.opts.chunkSize }

// Encode splits segment into k data shards (the last zero padded) and
// computes m parity shards. The data shards alias segment; padding and
// parity use segment's spare capacity (up to cap) when there is enough,
// so pass segment[:n:n] to keep bytes past n untouched. Packer.Take
// returns segments with that room already allocated.
func (s *Striper) Encode(segment []byte) ([][]byte, error) {
	if len(segment) == 0 {
		return nil, errors.New("erasure: empty segment")
	}
	shards, err := s.enc.Split(segment)
	if err != nil {
		return nil, fmt.Errorf("erasure: split: %w", err)
	}
	if err := s.enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("erasure: encode: %w", err)
	}
	return shards, nil
}

// Store encodes segment and places shard i on a distinct peer taken from
// candidates in order, moving on to the next candidate when a peer refuses
// or fails. It returns the segment's description for the manifest.
func (s *Striper) Store(ctx context.Context, segment []byte, candidates []peer.ID, store ShardStore) (Segment, error) {
	n := s.k + s.m
	if len(candidates) < n {
		return Segment{}, fmt.Errorf("erasure: %w: %d candidates for %d shards", ErrNotEnoughPeers, len(candidates), n)
	}
	shards, err := s.Encode(segment)
	if err != nil {
		return Segment{}, err
	}
	seg := Segment{Length: int64(len(segment)), ShardSize: int64(len(shards[0])), Shards: make([]Shard, n)}

	// Shard i goes to candidates[i]; a shard whose peer fails takes the
	// next spare (candidates beyond n), so each lands on a distinct peer.
	var mu sync.Mutex
	spare := n
	take := func(i int, first bool) (peer.ID, bool) {
		if first {
			return candidates[i], true
		}
		mu.Lock()
		defer mu.Unlock()
		if spare >= len(candidates) {
			return "", false
		}
		spare++
		return candidates[spare-1], true
	}
	errs := make([]error, n)
	sem := make(chan struct{}, s.opts.concurrency)
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// Each shard is hashed by the goroutine that uploads it, so
			// hashing runs in parallel and overlaps the other uploads.
			seg.Shards[i].ID = storageapi.ShardID(shards[i])
			seg.Shards[i].Chunks = ChunkHashes(shards[i], s.opts.chunkSize)
			var last error
			for try := 0; ; try++ {
				p, ok := take(i, try == 0)
				if !ok {
					errs[i] = fmt.Errorf("erasure: shard %d: %w (last error: %v)", i, ErrNotEnoughPeers, last)
					return
				}
				if err := store.PutShard(ctx, p, seg.Shards[i].ID, shards[i]); err != nil {
					last = err
					if ctx.Err() != nil {
						errs[i] = ctx.Err()
						return
					}
					continue
				}
				seg.Shards[i].Peer = p.String()
				return
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Segment{}, err
	}
	return seg, nil
}

// ChunkHashes returns the sha2-256 of each chunkSize piece of shard (the
// last may be shorter), concatenated.
func ChunkHashes(shard []byte, chunkSize int) []byte {
	n := (len(shard) + chunkSize - 1) / chunkSize
	out := make([]byte, 0, n*sha256.Size)
	for off := 0; off < len(shard); off += chunkSize {
		sum := sha256.Sum256(shard[off:min(off+chunkSize, len(shard))])
		out = append(out, sum[:]...)
	}
	return out
}

// Reconstruct rebuilds the nil entries of shards (k+m of them, the present
// ones equally long) from any k present ones.
func (s *Striper) Reconstruct(shards [][]byte) error {
	if err := s.enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("erasure: reconstruct: %w", err)
	}
	return nil
}

// VerifyChunks checks shard bytes data, which start at chunk index first,
// against a Shard's concatenated chunk hashes.
func VerifyChunks(hashes []byte, first, chunkSize int, data []byte) error {
	return verifyChunks(hashes, first, chunkSize, data)
}
