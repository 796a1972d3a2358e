package origin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// unionBlockstore is the origin's view of its content: blocks on local
// disk (uploads not yet striped, or kept), then blocks striped across
// storage peers, read through an erasure.Reader and verified.
type unionBlockstore struct {
	blockstore.Blockstore // local, verifying
	o                     *Origin
}

func (u *unionBlockstore) has(ctx context.Context, c cid.Cid) (bool, error) {
	if ok, err := u.Blockstore.Has(ctx, c); ok || err != nil {
		return ok, err
	}
	_, _, err := u.o.blockRef(ctx, c)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (u *unionBlockstore) getSize(ctx context.Context, c cid.Cid) (int, error) {
	n, err := u.Blockstore.GetSize(ctx, c)
	if err == nil || !ipld.IsNotFound(err) {
		return n, err
	}
	_, ref, err := u.o.blockRef(ctx, c)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return -1, err
	}
	return int(ref.Length), nil
}

func (u *unionBlockstore) get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := u.Blockstore.Get(ctx, c)
	if err == nil || !ipld.IsNotFound(err) {
		return b, err
	}
	data, err := u.o.readStriped(ctx, c)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// A CIDv0 and the CIDv1 dag-pb sha2-256 CID of the same node name the same
// block (same codec, same hash; kubo and boxo treat them as one), so a
// block stored under one form is found under the other: gateways and
// edges ask for the CIDv1 of content published with CIDv0 links.

func (u *unionBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	ok, err := u.has(ctx, c)
	if alt, hasAlt := otherVersion(c); !ok && err == nil && hasAlt {
		return u.has(ctx, alt)
	}
	return ok, err
}

func (u *unionBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	n, err := u.getSize(ctx, c)
	if alt, hasAlt := otherVersion(c); ipld.IsNotFound(err) && hasAlt {
		if n, err := u.getSize(ctx, alt); err == nil || !ipld.IsNotFound(err) {
			return n, err
		}
	}
	return n, err
}

func (u *unionBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := u.get(ctx, c)
	if alt, hasAlt := otherVersion(c); ipld.IsNotFound(err) && hasAlt {
		ab, aerr := u.get(ctx, alt)
		if aerr == nil {
			return blocks.NewBlockWithCid(ab.RawData(), c) // verified under alt: same hash
		}
		if !ipld.IsNotFound(aerr) {
			return nil, aerr
		}
	}
	return b, err
}

// otherVersion returns the other form of a CID that has two: CIDv0 ↔
// CIDv1 dag-pb with a 32-byte sha2-256 multihash.
func otherVersion(c cid.Cid) (cid.Cid, bool) {
	if c.Version() == 0 {
		return cid.NewCidV1(cid.DagProtobuf, c.Hash()), true
	}
	if p := c.Prefix(); p.Codec == cid.DagProtobuf && p.MhType == multihash.SHA2_256 && p.MhLength == 32 {
		return cid.NewCidV0(c.Hash()), true
	}
	return cid.Undef, false
}

var _ blockstore.Blockstore = (*unionBlockstore)(nil)

// blockRef finds where a striped block lives.
func (o *Origin) blockRef(ctx context.Context, c cid.Cid) (int64, erasure.BlockRef, error) {
	var seg int64
	ref := erasure.BlockRef{CID: c.String()}
	err := o.db.QueryRowContext(ctx, `SELECT segment_id, offset, length FROM blocks WHERE cid = ?`, c.String()).
		Scan(&seg, &ref.Offset, &ref.Length)
	return seg, ref, err
}

// readStriped reads block c from the storage peers.
func (o *Origin) readStriped(ctx context.Context, c cid.Cid) ([]byte, error) {
	seg, _, err := o.blockRef(ctx, c)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	r, err := o.segmentReader(ctx, seg)
	if err != nil {
		return nil, err
	}
	data, err := r.ReadBlock(ctx, c)
	if err != nil {
		o.metrics.stripedReads.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("origin: read striped block: %w", err)
	}
	o.metrics.stripedReads.WithLabelValues("ok").Inc()
	return data, nil
}

// segmentManifest builds the manifest of one segment from the database:
// its shards and the blocks it holds.
func (o *Origin) segmentManifest(ctx context.Context, segID int64) (*erasure.Manifest, error) {
	var seg erasure.Segment
	var m erasure.Manifest
	err := o.db.QueryRowContext(ctx, `SELECT length, shard_size, data_shards, parity_shards, chunk_size FROM segments WHERE id = ?`, segID).
		Scan(&seg.Length, &seg.ShardSize, &m.DataShards, &m.ParityShards, &m.ChunkSize)
	if err != nil {
		return nil, fmt.Errorf("origin: segment %d: %w", segID, err)
	}
	if seg.Shards, err = o.segmentShards(ctx, segID); err != nil {
		return nil, err
	}
	rows, err := o.db.QueryContext(ctx, `SELECT cid, offset, length FROM blocks WHERE segment_id = ? ORDER BY offset`, segID)
	if err != nil {
		return nil, fmt.Errorf("origin: segment %d blocks: %w", segID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b erasure.BlockRef
		if err := rows.Scan(&b.CID, &b.Offset, &b.Length); err != nil {
			return nil, fmt.Errorf("origin: segment %d blocks: %w", segID, err)
		}
		m.Blocks = append(m.Blocks, b)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(m.Blocks) == 0 {
		return nil, fmt.Errorf("origin: segment %d holds no blocks", segID)
	}
	m.Root = m.Blocks[0].CID
	m.Segments = []erasure.Segment{seg}
	return &m, nil
}

func (o *Origin) segmentShards(ctx context.Context, segID int64) ([]erasure.Shard, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT shard_id, peer_id, chunks FROM shards WHERE segment_id = ? ORDER BY idx`, segID)
	if err != nil {
		return nil, fmt.Errorf("origin: segment %d shards: %w", segID, err)
	}
	defer rows.Close()
	var out []erasure.Shard
	for rows.Next() {
		var sh erasure.Shard
		if err := rows.Scan(&sh.ID, &sh.Peer, &sh.Chunks); err != nil {
			return nil, fmt.Errorf("origin: segment %d shards: %w", segID, err)
		}
		out = append(out, sh)
	}
	return out, rows.Err()
}

// segmentReader returns a cached Reader for a segment.
func (o *Origin) segmentReader(ctx context.Context, segID int64) (*erasure.Reader, error) {
	if r, ok := o.readers.Get(segID); ok {
		return r, nil
	}
	m, err := o.segmentManifest(ctx, segID)
	if err != nil {
		return nil, err
	}
	r, err := erasure.NewReader(m, o.shardStore,
		erasure.WithPeerStats(o.peerStats),
		erasure.WithSpanCache(o.spans),
		erasure.WithFlagFunc(func(f erasure.Flag) { o.flagPeer(f, "read") }))
	if err != nil {
		return nil, fmt.Errorf("origin: segment %d: %w", segID, err)
	}
	o.readers.Add(segID, r)
	return r, nil
}

// flagPeer records a peer caught misbehaving; a shard whose bytes were
// wrong is no longer counted as healthy (repair replaces it).
func (o *Origin) flagPeer(f erasure.Flag, source string) {
	ctx := context.Background()
	if f.Reason == "unreachable" {
		o.metrics.flags.WithLabelValues(f.Reason, source).Inc()
		// Heartbeats and latency ranking already account for it.
		o.log.Debug("storage peer unreachable", zap.Stringer("peer", f.Peer), zap.String("shard", f.Shard))
		return
	}
	// A reader or audit listed before a repair moved the shard away may
	// still ask the old peer, which deleted it as told: no proof of loss.
	var placed int
	if err := o.db.QueryRowContext(ctx, `SELECT count(*) FROM shards WHERE shard_id = ? AND peer_id = ?`,
		f.Shard, f.Peer.String()).Scan(&placed); err != nil {
		o.log.Error("check flagged shard", zap.Error(err))
	} else if placed == 0 {
		o.log.Debug("flag for a shard no longer on the peer ignored", zap.Stringer("peer", f.Peer),
			zap.String("shard", f.Shard), zap.String("reason", f.Reason), zap.String("source", source))
		return
	}
	o.metrics.flags.WithLabelValues(f.Reason, source).Inc()
	o.log.Warn("storage peer flagged", zap.Stringer("peer", f.Peer), zap.String("shard", f.Shard),
		zap.String("reason", f.Reason), zap.String("source", source))
	if _, err := o.db.ExecContext(ctx, `INSERT INTO flags (peer_id, shard_id, reason, source, at) VALUES (?, ?, ?, ?, ?)`,
		f.Peer.String(), f.Shard, f.Reason, source, o.now().UnixNano()); err != nil {
		o.log.Error("record flag", zap.Error(err))
	}
	if f.Reason == "bad-bytes" || f.Reason == "refused-audits" {
		if _, err := o.db.ExecContext(ctx, `UPDATE shards SET bad = ? WHERE shard_id = ? AND peer_id = ? AND bad = ''`,
			source+": "+f.Reason, f.Shard, f.Peer.String()); err != nil {
			o.log.Error("mark shard bad", zap.Error(err))
		}
	}
}

// peerShards is the origin's erasure.ShardStore: orders signed with the
// origin key, peers found by their last heartbeat.
type peerShards struct {
	o      *Origin
	client *storageapi.Client
}

func (s peerShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	addr, err := s.o.cachedAddr(ctx, p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(int64(len(data))))
	defer cancel()
	return s.client.Put(ctx, p, addr, shard, data)
}

// transferTimeout bounds one shard transfer: a peer that stalls must not
// hold a read, a repair or a stripe job forever. 10 s plus 1 s per MiB.
func transferTimeout(n int64) time.Duration {
	return 10*time.Second + time.Duration(n>>20)*time.Second
}

func (s peerShards) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	addr, err := s.o.cachedAddr(ctx, p)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(length))
	defer cancel()
	return s.client.GetRange(ctx, p, addr, shard, off, length)
}

var _ erasure.ShardStore = peerShards{}

// addrCache keeps peers' announced addresses in memory: shard reads should
// not queue on the database.
type addrCache struct {
	mu sync.Mutex
	m  map[peer.ID]string
}

func (o *Origin) cachedAddr(ctx context.Context, p peer.ID) (string, error) {
	o.addrs.mu.Lock()
	a, ok := o.addrs.m[p]
	o.addrs.mu.Unlock()
	if ok {
		return a, nil
	}
	a, err := o.peerAddr(ctx, p)
	if err != nil {
		return "", err
	}
	o.setAddr(p, a)
	return a, nil
}

func (o *Origin) setAddr(p peer.ID, addr string) {
	o.addrs.mu.Lock()
	defer o.addrs.mu.Unlock()
	o.addrs.m[p] = addr
}

// newReaderCache bounds how many segment readers stay in memory.
func newReaderCache() *lru.Cache[int64, *erasure.Reader] {
	c, _ := lru.New[int64, *erasure.Reader](256)
	return c
}
