package durability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// blockRef finds where a striped block lives; sql.ErrNoRows if it is not
// striped.
func (kp *Keeper) blockRef(ctx context.Context, c cid.Cid) (int64, erasure.BlockRef, error) {
	var seg int64
	ref := erasure.BlockRef{CID: c.String()}
	err := kp.db.QueryRowContext(ctx, `SELECT segment_id, "offset", length FROM blocks WHERE cid = ?`, c.String()).
		Scan(&seg, &ref.Offset, &ref.Length)
	return seg, ref, err
}

// BlockSize returns the size of block c, striped on storage peers, or an
// ipld.ErrNotFound if c is not striped.
func (kp *Keeper) BlockSize(ctx context.Context, c cid.Cid) (int, error) {
	_, ref, err := kp.blockRef(ctx, c)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return -1, fmt.Errorf("durability: locate %s: %w", c, err)
	}
	return int(ref.Length), nil
}

// ReadBlock reads block c from the storage peers, or returns an
// ipld.ErrNotFound if c is not striped. Every chunk read is checked
// against the segment's manifest; a peer caught sending wrong bytes is
// flagged and read around.
func (kp *Keeper) ReadBlock(ctx context.Context, c cid.Cid) ([]byte, error) {
	seg, _, err := kp.blockRef(ctx, c)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return nil, fmt.Errorf("durability: locate %s: %w", c, err)
	}
	r, err := kp.segmentReader(ctx, seg)
	if err != nil {
		return nil, err
	}
	data, err := r.ReadBlock(ctx, c)
	if err != nil {
		kp.metrics.stripedReads.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("durability: read striped block: %w", err)
	}
	kp.metrics.stripedReads.WithLabelValues("ok").Inc()
	return data, nil
}

// segmentManifest builds the manifest of one segment from the database:
// its shards and the blocks it holds.
func (kp *Keeper) segmentManifest(ctx context.Context, segID int64) (*erasure.Manifest, error) {
	var seg erasure.Segment
	var m erasure.Manifest
	err := kp.db.QueryRowContext(ctx, `SELECT length, shard_size, data_shards, parity_shards, chunk_size FROM segments WHERE id = ?`, segID).
		Scan(&seg.Length, &seg.ShardSize, &m.DataShards, &m.ParityShards, &m.ChunkSize)
	if err != nil {
		return nil, fmt.Errorf("durability: segment %d: %w", segID, err)
	}
	if seg.Shards, err = kp.segmentShards(ctx, segID); err != nil {
		return nil, err
	}
	rows, err := kp.db.QueryContext(ctx, `SELECT cid, "offset", length FROM blocks WHERE segment_id = ? ORDER BY "offset"`, segID)
	if err != nil {
		return nil, fmt.Errorf("durability: segment %d blocks: %w", segID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b erasure.BlockRef
		if err := rows.Scan(&b.CID, &b.Offset, &b.Length); err != nil {
			return nil, fmt.Errorf("durability: segment %d blocks: %w", segID, err)
		}
		m.Blocks = append(m.Blocks, b)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(m.Blocks) == 0 {
		return nil, fmt.Errorf("durability: segment %d holds no blocks", segID)
	}
	m.Root = m.Blocks[0].CID
	m.Segments = []erasure.Segment{seg}
	return &m, nil
}

func (kp *Keeper) segmentShards(ctx context.Context, segID int64) ([]erasure.Shard, error) {
	rows, err := kp.db.QueryContext(ctx, `SELECT shard_id, peer_id, chunks FROM shards WHERE segment_id = ? ORDER BY idx`, segID)
	if err != nil {
		return nil, fmt.Errorf("durability: segment %d shards: %w", segID, err)
	}
	defer rows.Close()
	var out []erasure.Shard
	for rows.Next() {
		var sh erasure.Shard
		if err := rows.Scan(&sh.ID, &sh.Peer, &sh.Chunks); err != nil {
			return nil, fmt.Errorf("durability: segment %d shards: %w", segID, err)
		}
		out = append(out, sh)
	}
	return out, rows.Err()
}

// segmentReader returns a cached Reader for a segment.
func (kp *Keeper) segmentReader(ctx context.Context, segID int64) (*erasure.Reader, error) {
	if c, ok := kp.readers.Get(segID); ok && time.Since(c.made) < readerMaxAge {
		return c.r, nil
	}
	m, err := kp.segmentManifest(ctx, segID)
	if err != nil {
		return nil, err
	}
	r, err := erasure.NewReader(m, kp.shardStore,
		erasure.WithPeerStats(kp.peerStats),
		erasure.WithSpanCache(kp.spans),
		erasure.WithFlagFunc(func(f erasure.Flag) { kp.flagPeer(f, "read") }))
	if err != nil {
		return nil, fmt.Errorf("durability: segment %d: %w", segID, err)
	}
	kp.readers.Add(segID, cachedReader{r: r, made: time.Now()})
	return r, nil
}

// flagPeer records a peer caught misbehaving; a shard whose bytes were
// wrong is no longer counted as healthy (repair replaces it).
func (kp *Keeper) flagPeer(f erasure.Flag, source string) {
	ctx := context.Background()
	if f.Reason == "unreachable" {
		kp.metrics.flags.WithLabelValues(f.Reason, source).Inc()
		// Heartbeats and latency ranking already account for it.
		kp.log.Debug("storage peer unreachable", zap.Stringer("peer", f.Peer), zap.String("shard", f.Shard))
		return
	}
	// A reader or audit listed before a repair moved the shard away may
	// still ask the old peer, which deleted it as told: no proof of loss.
	var placed int
	if err := kp.db.QueryRowContext(ctx, `SELECT count(*) FROM shards WHERE shard_id = ? AND peer_id = ?`,
		f.Shard, f.Peer.String()).Scan(&placed); err != nil {
		kp.log.Error("check flagged shard", zap.Error(err))
	} else if placed == 0 {
		kp.log.Debug("flag for a shard no longer on the peer ignored", zap.Stringer("peer", f.Peer),
			zap.String("shard", f.Shard), zap.String("reason", f.Reason), zap.String("source", source))
		kp.forgetReaders(ctx, f.Shard) // read from a manifest older than a move, maybe another origin's
		return
	}
	kp.metrics.flags.WithLabelValues(f.Reason, source).Inc()
	kp.log.Warn("storage peer flagged", zap.Stringer("peer", f.Peer), zap.String("shard", f.Shard),
		zap.String("reason", f.Reason), zap.String("source", source))
	if err := kp.saveFlag(ctx, f, source); err != nil {
		kp.log.Error("record flag", zap.Error(err))
	}
}

// saveFlag records a flag, logs it for billing and, for rotten bytes,
// marks the shard bad, in one transaction.
func (kp *Keeper) saveFlag(ctx context.Context, f erasure.Flag, source string) error {
	now := kp.now()
	return sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO flags (peer_id, shard_id, reason, source, at) VALUES (?, ?, ?, ?, ?)`,
			f.Peer.String(), f.Shard, f.Reason, source, now.UnixNano()); err != nil {
			return fmt.Errorf("durability: flag: %w", err)
		}
		if err := origindb.AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventFlag, Peer: f.Peer.String(),
			Shard: f.Shard, Reason: f.Reason, At: now}); err != nil {
			return err
		}
		if f.Reason == "bad-bytes" || f.Reason == "refused-audits" {
			if _, err := tx.ExecContext(ctx, `UPDATE shards SET bad = ? WHERE shard_id = ? AND peer_id = ? AND bad = ''`,
				source+": "+f.Reason, f.Shard, f.Peer.String()); err != nil {
				return fmt.Errorf("durability: mark shard bad: %w", err)
			}
		}
		return nil
	})
}

// logMove appends, in tx, the move of shard idx of segment segID to peer
// to to the billing log. moveShard calls it in its transaction.
func (kp *Keeper) logMove(ctx context.Context, tx *sqldb.Tx, segID int64, idx int, to peer.ID) error {
	var shard string
	var size int64
	if err := tx.QueryRowContext(ctx, `SELECT s.shard_id, g.shard_size FROM shards s JOIN segments g ON g.id = s.segment_id
		WHERE s.segment_id = ? AND s.idx = ?`, segID, idx).Scan(&shard, &size); err != nil {
		return fmt.Errorf("durability: log move: %w", err)
	}
	return origindb.AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventMove, Shard: shard, Peer: to.String(),
		Segment: segID, Size: size, At: kp.now()})
}

// peerShards is the origin's erasure.ShardStore: orders signed with the
// origin key, peers found by their last heartbeat.
type peerShards struct {
	keeper *Keeper
	client *storageapi.Client
}

func (s peerShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	addr, err := s.keeper.cachedAddr(ctx, p)
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
	addr, err := s.keeper.cachedAddr(ctx, p)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(length))
	defer cancel()
	return s.client.GetRange(ctx, p, addr, shard, off, length)
}

var _ erasure.ShardStore = peerShards{}

// addrCache keeps peers' announced addresses in memory, each for one
// heartbeat interval: shard reads should not queue on the database, and a
// peer may announce a new address in a heartbeat another origin took.
type addrCache struct {
	mu sync.Mutex
	m  map[peer.ID]cachedAddr
}

// cachedAddr is a peer's address and when it was learned.
type cachedAddr struct {
	addr string
	at   time.Time
}

func (kp *Keeper) cachedAddr(ctx context.Context, p peer.ID) (string, error) {
	kp.addrs.mu.Lock()
	a, ok := kp.addrs.m[p]
	kp.addrs.mu.Unlock()
	if ok && time.Since(a.at) < kp.cfg.HeartbeatInterval {
		return a.addr, nil
	}
	addr, err := kp.peerAddr(ctx, p)
	if err != nil {
		return "", err
	}
	kp.setAddr(p, addr)
	return addr, nil
}

func (kp *Keeper) setAddr(p peer.ID, addr string) {
	kp.addrs.mu.Lock()
	defer kp.addrs.mu.Unlock()
	kp.addrs.m[p] = cachedAddr{addr: addr, at: time.Now()}
}

// readerMaxAge bounds how long a segment's Reader is used before it is
// made again from the database: another origin sharing it may have moved
// the segment's shards meanwhile.
const readerMaxAge = time.Minute

// cachedReader is a segment's Reader and when it was made.
type cachedReader struct {
	r    *erasure.Reader
	made time.Time
}

// newReaderCache bounds how many segment readers stay in memory.
func newReaderCache() *lru.Cache[int64, cachedReader] {
	c, _ := lru.New[int64, cachedReader](256)
	return c
}

// forgetReaders drops the cached Readers of the segments holding shard.
func (kp *Keeper) forgetReaders(ctx context.Context, shard string) {
	rows, err := kp.db.QueryContext(ctx, `SELECT segment_id FROM shards WHERE shard_id = ?`, shard)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var seg int64
		if rows.Scan(&seg) == nil {
			kp.readers.Remove(seg)
		}
	}
}
