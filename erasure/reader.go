package erasure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/reedsolomon"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/storageapi"
)

// Flag reports a storage peer caught misbehaving by a read.
type Flag struct {
	Peer   peer.ID
	Shard  string
	Reason string // "bad-bytes" or "unreachable"
}

// ReaderOption configures a Reader.
type ReaderOption func(*readerOptions)

type readerOptions struct {
	hedgeAfter  time.Duration
	concurrency int
	rebuildSpan int
	spans       *SpanCache
	stats       *PeerStats
	flag        func(Flag)
}

// WithHedgeAfter sets how long the fast path may take before a degraded
// read from other shards starts in parallel. If d <= 0, it is ignored.
// Default: 300ms.
func WithHedgeAfter(d time.Duration) ReaderOption {
	return func(o *readerOptions) {
		if d > 0 {
			o.hedgeAfter = d
		}
	}
}

// WithReadConcurrency bounds the shard reads in flight for one Reader. If
// n <= 0, it is ignored. Default: 16.
func WithReadConcurrency(n int) ReaderOption {
	return func(o *readerOptions) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// WithRebuildSpan sets how many columns a degraded read rebuilds at once
// (rounded to whole chunks), for every data shard: larger spans cost more
// per rebuild and serve more neighbouring blocks. If n <= 0, it is
// ignored. Default: 256 KiB.
func WithRebuildSpan(n int) ReaderOption {
	return func(o *readerOptions) {
		if n > 0 {
			o.rebuildSpan = n
		}
	}
}

// WithSpanCache shares a cache of rebuilt spans between readers. Default:
// a 256 MiB cache of the Reader's own.
func WithSpanCache(c *SpanCache) ReaderOption {
	return func(o *readerOptions) {
		if c != nil {
			o.spans = c
		}
	}
}

// WithPeerStats shares a latency tracker between readers. Default: a
// tracker of the Reader's own.
func WithPeerStats(s *PeerStats) ReaderOption {
	return func(o *readerOptions) {
		if s != nil {
			o.stats = s
		}
	}
}

// WithFlagFunc is called for every peer a read catches sending bytes that
// do not verify or failing to answer.
func WithFlagFunc(fn func(Flag)) ReaderOption { return func(o *readerOptions) { o.flag = fn } }

// Reader reads blocks of one manifest from storage peers, verified.
type Reader struct {
	m     *Manifest
	store ShardStore
	enc   reedsolomon.Encoder
	index map[cid.Cid]BlockRef
	o     readerOptions
	sem   chan struct{}

	mu         sync.Mutex
	suspect    map[string]bool // shards caught sending bad bytes
	rebuilding map[spanKey]*spanEntry
}

// NewReader returns a Reader for m, which must be valid (OpenManifest
// checks it), reaching peers through store.
func NewReader(m *Manifest, store ShardStore, opts ...ReaderOption) (*Reader, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	o := readerOptions{hedgeAfter: 300 * time.Millisecond, concurrency: 16, rebuildSpan: 256 << 10}
	for _, opt := range opts {
		opt(&o)
	}
	if o.stats == nil {
		o.stats = NewPeerStats()
	}
	if o.spans == nil {
		o.spans = NewSpanCache(0)
	}
	enc, err := reedsolomon.New(m.DataShards, m.ParityShards)
	if err != nil {
		return nil, fmt.Errorf("erasure: %w", err)
	}
	r := &Reader{m: m, store: store, enc: enc, o: o, index: make(map[cid.Cid]BlockRef, len(m.Blocks)),
		sem: make(chan struct{}, o.concurrency), suspect: map[string]bool{}, rebuilding: map[spanKey]*spanEntry{}}
	for _, b := range m.Blocks {
		r.index[cid.MustParse(b.CID)] = b
	}
	return r, nil
}

// Manifest returns the manifest the Reader reads.
func (r *Reader) Manifest() *Manifest { return r.m }

// Has reports whether the manifest indexes block c.
func (r *Reader) Has(c cid.Cid) bool {
	_, ok := r.index[c]
	return ok
}

// Size returns the size of block c, if indexed.
func (r *Reader) Size(c cid.Cid) (int, bool) {
	b, ok := r.index[c]
	return int(b.Length), ok
}

// ReadBlock returns block c, checked against its CID. It reads the
// block's bytes from the data shard(s) holding them; if that fails, does
// not verify, or takes longer than the hedge delay, it reconstructs the
// same range from other shards, each piece checked against the manifest's
// chunk hashes.
func (r *Reader) ReadBlock(ctx context.Context, c cid.Cid) ([]byte, error) {
	ref, ok := r.index[c]
	if !ok {
		return nil, fmt.Errorf("erasure: %s: %w", c, ErrBlockNotFound)
	}
	seg := &r.m.Segments[ref.Segment]
	if ref.Length == 0 {
		if err := dag.Verify(c, nil); err != nil {
			return nil, fmt.Errorf("erasure: %w", err)
		}
		return []byte{}, nil
	}
	pieces := dataPieces(seg.ShardSize, ref.Offset, ref.Length)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The fast path has a context of its own, ended with ctx unless the
	// slow path wins while it is still out: then its answer is checked
	// when it comes, so a peer cannot hide wrong bytes behind slowness.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), lateCheckTimeout)
	stopFollow := context.AfterFunc(ctx, fcancel)
	fast := make(chan readResult, 1)
	go func() {
		data, got, err := r.fastRead(fctx, c, seg, pieces)
		fast <- readResult{data, got, err}
	}()
	hedge := time.NewTimer(r.o.stats.hedgeDelay(r.o.hedgeAfter, r.peersOf(seg, pieces)...))
	defer hedge.Stop()
	var slow chan readResult
	startSlow := func() {
		if slow != nil {
			return
		}
		slow = make(chan readResult, 1)
		go func() {
			data, err := r.degradedRead(ctx, c, seg, pieces)
			slow <- readResult{data: data, err: err}
		}()
	}
	var fastErr, slowErr error
	var fastPieces [][]byte
	for fast != nil || slow != nil {
		select {
		case res := <-fast:
			fast = nil
			if res.err == nil {
				return res.data, nil
			}
			fastErr, fastPieces = res.err, res.pieces
			startSlow()
		case <-hedge.C:
			startSlow()
		case res := <-slow:
			slow = nil
			if res.err == nil {
				r.flagLiars(seg, pieces, fastPieces, res.data)
				if fast != nil && stopFollow() {
					go r.checkLate(fast, fcancel, seg, pieces, res.data)
				}
				return res.data, nil
			}
			slowErr = res.err
			if fastErr != nil {
				return nil, fmt.Errorf("erasure: read %s: %w", c, errors.Join(fastErr, slowErr))
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("erasure: read %s: %w", c, errors.Join(fastErr, slowErr))
}

// readResult is what one path of ReadBlock found.
type readResult struct {
	data   []byte
	pieces [][]byte // fast path: what each data shard sent
	err    error
}

// lateCheckTimeout bounds how long a fast-path read that lost to the slow
// path is waited for, to check its bytes.
const lateCheckTimeout = 30 * time.Second

// checkLate waits for a fast-path read that lost the race to the slow path
// and flags the data shards whose bytes differ from good, the verified
// block. (A single shard's wrong bytes are flagged by fastRead itself.)
func (r *Reader) checkLate(fast <-chan readResult, cancel context.CancelFunc, seg *Segment, pieces []piece, good []byte) {
	defer cancel()
	res := <-fast
	r.flagLiars(seg, pieces, res.pieces, good)
}

// peersOf returns the peers holding the data shards of pieces.
func (r *Reader) peersOf(seg *Segment, pieces []piece) []peer.ID {
	out := make([]peer.ID, 0, len(pieces))
	for _, p := range pieces {
		if id, err := peer.Decode(seg.Shards[p.shard].Peer); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// errMismatch marks a fast-path read whose bytes did not match the CID.
var errMismatch = errors.New("bytes from data shards do not match the CID")

// errSuspect marks a fast path skipped because a data shard it needs
// already sent bad bytes; errSkipped, because its peer failed recently.
var (
	errSuspect = errors.New("a data shard holding the block sent bad bytes before")
	errSkipped = errors.New("fast path skipped")
)

// fastRead reads exactly the block's bytes from its data shard(s).
func (r *Reader) fastRead(ctx context.Context, c cid.Cid, seg *Segment, pieces []piece) ([]byte, [][]byte, error) {
	for _, p := range pieces {
		sh := seg.Shards[p.shard]
		if r.isSuspect(sh.ID) {
			return nil, nil, errSuspect
		}
		if id, err := peer.Decode(sh.Peer); err == nil && r.o.stats.failing(id) {
			return nil, nil, fmt.Errorf("%w: peer %s failed recently", errSkipped, id)
		}
	}
	got := make([][]byte, len(pieces))
	errs := make([]error, len(pieces))
	done := make(chan int, len(pieces))
	for i, p := range pieces {
		go func() {
			got[i], errs[i] = r.get(ctx, seg, p.shard, p.off, p.length)
			done <- i
		}()
	}
	for range pieces {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	data := bytes.Join(got, nil)
	if dag.Verify(c, data) != nil {
		if len(pieces) == 1 {
			r.flag(seg.Shards[pieces[0].shard], "bad-bytes")
			return nil, nil, fmt.Errorf("%w (peer %s)", errMismatch, seg.Shards[pieces[0].shard].Peer)
		}
		return nil, got, errMismatch // degradedRead finds out which piece lied
	}
	return data, nil, nil
}

// flagLiars compares what the data shards sent on the fast path with the
// verified block and flags the peers whose bytes differed.
func (r *Reader) flagLiars(seg *Segment, pieces []piece, fastPieces [][]byte, good []byte) {
	if fastPieces == nil {
		return
	}
	var off int64
	for i, p := range pieces {
		if !bytes.Equal(fastPieces[i], good[off:off+p.length]) {
			r.flag(seg.Shards[p.shard], "bad-bytes")
		}
		off += p.length
	}
}

// get reads shard columns [off, off+length) from the peer holding shard i.
func (r *Reader) get(ctx context.Context, seg *Segment, i int, off, length int64) ([]byte, error) {
	sh := seg.Shards[i]
	p, err := peer.Decode(sh.Peer)
	if err != nil {
		return nil, err
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.sem }()
	start := time.Now()
	data, err := r.store.GetShard(ctx, p, sh.ID, off, length)
	if err == nil && int64(len(data)) != length {
		err = fmt.Errorf("peer %s sent %d bytes of shard %s, want %d", p, len(data), sh.ID, length)
	}
	if ctx.Err() == nil {
		r.o.stats.Observe(p, time.Since(start), err)
		if err != nil {
			r.flag(sh, failureReason(err))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("shard %d from %s: %w", i, p, err)
	}
	return data, nil
}

// failureReason tells a peer's fault (a wrong answer, or no longer having
// a shard it was paid to keep: "bad-bytes"; reads stay inside the shard,
// whose ID commits to its size, so a 416 says the same) from a transport
// failure ("unreachable").
func failureReason(err error) string {
	if errors.Is(err, storageapi.ErrBadAnswer) || errors.Is(err, storageapi.ErrNotFound) ||
		errors.Is(err, storageapi.ErrRangeNotSatisfiable) {
		return "bad-bytes"
	}
	return "unreachable"
}

func (r *Reader) isSuspect(shard string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suspect[shard]
}

func (r *Reader) flag(sh Shard, reason string) {
	if reason == "bad-bytes" {
		r.mu.Lock()
		seen := r.suspect[sh.ID]
		r.suspect[sh.ID] = true
		r.mu.Unlock()
		if seen {
			return // reported once per Reader is enough
		}
	}
	if r.o.flag == nil {
		return
	}
	p, _ := peer.Decode(sh.Peer)
	r.o.flag(Flag{Peer: p, Shard: sh.ID, Reason: reason})
}

// degradedRead rebuilds each piece from any k shards whose chunks verify.
func (r *Reader) degradedRead(ctx context.Context, c cid.Cid, seg *Segment, pieces []piece) ([]byte, error) {
	out := make([]byte, 0, 256<<10)
	for _, p := range pieces {
		b, err := r.rebuildPiece(ctx, seg, p)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	if err := dag.Verify(c, out); err != nil {
		return nil, fmt.Errorf("rebuilt block does not verify (bad manifest?): %w", err)
	}
	return out, nil
}

// rebuildPiece returns p's bytes from rebuilt column spans: for a span,
// every data shard's columns are rebuilt at once from k verified shards and
// cached, so neighbouring blocks (of this shard or of other lost ones)
// reuse the work instead of reading k shards again.
func (r *Reader) rebuildPiece(ctx context.Context, seg *Segment, p piece) ([]byte, error) {
	span := r.spanSize()
	out := make([]byte, 0, p.length)
	for a, b := p.off, p.off+p.length; a < b; {
		start, end := spanOf(a, span, seg.ShardSize)
		cols, err := r.span(ctx, seg, start, end)
		if err != nil {
			return nil, err
		}
		upto := min(b, end)
		out = append(out, cols[p.shard][a-start:upto-start]...)
		a = upto
	}
	return out, nil
}

// spanSize is the rebuild span rounded to whole chunks.
func (r *Reader) spanSize() int64 {
	cs := int64(r.m.ChunkSize)
	return max(cs, int64(r.o.rebuildSpan)/cs*cs)
}

// spanRebuildTimeout bounds one span rebuild.
const spanRebuildTimeout = time.Minute

// spanKey names a rebuilt column span: the segment (by segmentKey, a hash
// of its data shards' IDs) and the first column.
type spanKey struct {
	seg   [sha256.Size]byte
	start int64
}

// segmentKey names a segment by its content: the IDs of its k data shards,
// which determine every column a rebuild returns. One shard's ID is not
// enough: two segments may share a shard (the first part of their bytes)
// and differ in the others.
func segmentKey(seg *Segment, k int) [sha256.Size]byte {
	h := sha256.New()
	for _, sh := range seg.Shards[:k] {
		h.Write([]byte(sh.ID))
		h.Write([]byte{0})
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// spanEntry is a span being rebuilt or rebuilt: data holds the k data
// shards' columns once done is closed.
type spanEntry struct {
	done chan struct{}
	data [][]byte
	err  error
}

// span returns the data shards' columns [start, end) of seg, rebuilding
// them once however many readers ask at the same time.
func (r *Reader) span(ctx context.Context, seg *Segment, start, end int64) ([][]byte, error) {
	key := spanKey{segmentKey(seg, r.m.DataShards), start}
	if cols, ok := r.o.spans.get(key); ok {
		return cols, nil
	}
	r.mu.Lock()
	e, running := r.rebuilding[key]
	if !running {
		e = &spanEntry{done: make(chan struct{})}
		r.rebuilding[key] = e
	}
	r.mu.Unlock()
	if !running {
		// Rebuild detached from the first asker's cancellation (others
		// wait on it), but bounded: stalled peers must not hold it forever.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), spanRebuildTimeout)
		e.data, e.err = r.rebuildSpan(rctx, seg, start, end)
		cancel()
		r.mu.Lock()
		delete(r.rebuilding, key)
		r.mu.Unlock()
		if e.err == nil {
			r.o.spans.add(key, e.data)
		}
		close(e.done)
	}
	select {
	case <-e.done:
		return e.data, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// rebuildSpan reads columns [start, end) from k shards that verify against
// their chunk hashes and decodes the missing data shards' columns.
func (r *Reader) rebuildSpan(ctx context.Context, seg *Segment, start, end int64) ([][]byte, error) {
	n, k := len(seg.Shards), r.m.DataShards
	first := int(start / int64(r.m.ChunkSize))

	// Candidates: healthy shards fastest first (data shards first on ties:
	// if all k verify, nothing needs decoding), shards that lied last.
	ids := make([]peer.ID, 0, n)
	byPeer := map[peer.ID]int{}
	var suspects []int
	for i, sh := range seg.Shards {
		if r.isSuspect(sh.ID) {
			suspects = append(suspects, i)
			continue
		}
		id, _ := peer.Decode(sh.Peer)
		ids = append(ids, id)
		byPeer[id] = i
	}
	r.o.stats.rank(ids)
	order := make([]int, 0, n)
	for _, id := range ids {
		order = append(order, byPeer[id])
	}
	order = append(order, suspects...) // last resort: their chunks are checked anyway

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type got struct {
		i    int
		data []byte
		err  error
	}
	results := make(chan got, n)
	launch := func(i int) {
		go func() {
			data, err := r.get(ctx, seg, i, start, end-start)
			if err == nil {
				if err = verifyChunks(seg.Shards[i].Chunks, first, r.m.ChunkSize, data); err != nil {
					r.flag(seg.Shards[i], "bad-bytes")
					err = fmt.Errorf("shard %d from %s: %w", i, seg.Shards[i].Peer, err)
				}
			}
			results <- got{i, data, err}
		}()
	}
	shards := make([][]byte, n)
	next, inflight, have := 0, 0, 0
	for ; next < k; next++ {
		launch(order[next])
		inflight++
	}
	var errs []error
	// A slow peer must not stall the rebuild: each hedge interval without
	// enough shards brings in one more candidate.
	launched := make([]peer.ID, 0, k)
	for _, i := range order[:k] {
		id, _ := peer.Decode(seg.Shards[i].Peer)
		launched = append(launched, id)
	}
	hedge := time.NewTicker(r.o.stats.hedgeDelay(r.o.hedgeAfter, launched...))
	defer hedge.Stop()
	for have < k {
		if inflight == 0 {
			return nil, fmt.Errorf("%w: %d of %d verified for columns [%d,%d): %v",
				ErrNotEnoughShards, have, k, start, end, errors.Join(errs...))
		}
		var g got
		select {
		case g = <-results:
		case <-hedge.C:
			if next < n {
				launch(order[next])
				next++
				inflight++
			}
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		inflight--
		if g.err != nil {
			errs = append(errs, g.err)
			if next < n {
				launch(order[next])
				next++
				inflight++
			}
			continue
		}
		shards[g.i] = g.data
		have++
	}
	cancel()
	if err := r.enc.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("reconstruct: %w", err)
	}
	return shards[:k], nil
}

// verifyChunks checks data, which starts at chunk first, against the
// concatenated chunk hashes.
func verifyChunks(hashes []byte, first, chunkSize int, data []byte) error {
	for i, off := first, 0; off < len(data); i, off = i+1, off+chunkSize {
		if (i+1)*sha256.Size > len(hashes) {
			return fmt.Errorf("chunk %d beyond the manifest", i)
		}
		sum := sha256.Sum256(data[off:min(off+chunkSize, len(data))])
		if !bytes.Equal(sum[:], hashes[i*sha256.Size:(i+1)*sha256.Size]) {
			return fmt.Errorf("chunk %d does not match its hash", i)
		}
	}
	return nil
}
