package origin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// StripeConfig turns on striping: published content moves from the
// origin's disk to storage peers, Reed-Solomon coded.
type StripeConfig struct {
	// DataShards (k) and ParityShards (m) of each segment. Default: 10+4.
	DataShards, ParityShards int
	// SegmentSize is the target segment size. Default: 64 MiB.
	SegmentSize int64
	// ChunkSize is the size of the hashed shard chunks. Default: 32 KiB.
	ChunkSize int
	// KeepLocal keeps the origin's own copy of striped blocks. Default:
	// false (the peers hold the content; the origin keeps no full copy).
	KeepLocal bool
	// RepairThreshold is the number of healthy shards below which a
	// segment is repaired. Default: k+2.
	RepairThreshold int
	// LostAfter is how long a peer may be silent before its shards count
	// as lost: segments with a lost shard are repaired even above
	// RepairThreshold, so redundancy comes back in full (a peer merely
	// away for less is not worth moving data for). Default: 30 heartbeat
	// intervals.
	LostAfter time.Duration
	// AuditInterval is the pause between two audits. Default: 5s.
	AuditInterval time.Duration
	// AuditRefusals is how many audits of one shard in a row a peer that
	// keeps sending heartbeats may leave unanswered (a 403, a 5xx, a
	// timeout) before the shard counts as lost and is repaired, and the
	// peer flagged. A peer that is down is not refusing: its silence makes
	// its shards lost after LostAfter. Default: 3.
	AuditRefusals int
	// RepairInterval is the pause between two scans for segments at risk.
	// Default: 10s.
	RepairInterval time.Duration
	// SweepInterval is the pause between two sweeps of orphan shards
	// (SweepOrphans). Default: 1h.
	SweepInterval time.Duration
}

func (c *StripeConfig) setDefaults() {
	if c.DataShards == 0 && c.ParityShards == 0 {
		c.DataShards, c.ParityShards = erasure.DefaultDataShards, erasure.DefaultParityShards
	}
	if c.SegmentSize <= 0 {
		c.SegmentSize = erasure.DefaultSegmentSize
	}
	if c.ChunkSize <= 0 {
		c.ChunkSize = erasure.DefaultChunkSize
	}
	if c.RepairThreshold <= 0 {
		c.RepairThreshold = min(c.DataShards+2, c.DataShards+c.ParityShards)
	}
	if c.AuditInterval <= 0 {
		c.AuditInterval = 5 * time.Second
	}
	if c.AuditRefusals <= 0 {
		c.AuditRefusals = 3
	}
	if c.RepairInterval <= 0 {
		c.RepairInterval = 10 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Hour
	}
}

// validate checks what setDefaults leaves to the user against what
// manifests and repair can work with: a manifest with chunks or segments
// outside erasure's limits never validates (every stripe job would upload
// its shards and then fail to sign), and a repair threshold above k+m can
// never be met (every repair pass would read every segment for nothing).
func (c *StripeConfig) validate() error {
	n := c.DataShards + c.ParityShards
	switch {
	case c.ChunkSize < erasure.MinChunkSize || c.ChunkSize > erasure.MaxChunkSize:
		return fmt.Errorf("origin: chunk size %d outside [%d, %d]", c.ChunkSize, erasure.MinChunkSize, erasure.MaxChunkSize)
	case c.SegmentSize > erasure.MaxSegment-dag.MaxBlockSize:
		return fmt.Errorf("origin: segment size %d: at most %d (a segment may overrun it by a block)",
			c.SegmentSize, erasure.MaxSegment-dag.MaxBlockSize)
	case c.RepairThreshold > n:
		return fmt.Errorf("origin: repair threshold %d above the %d+%d shards of a segment", c.RepairThreshold,
			c.DataShards, c.ParityShards)
	}
	return nil
}

// queueStripe records that root must be striped and wakes the striper.
func (o *Origin) queueStripe(ctx context.Context, root cid.Cid) error {
	if o.striper == nil {
		return nil
	}
	now := o.now().UnixNano()
	if _, err := o.db.ExecContext(ctx, `INSERT INTO stripe_jobs (root, state, created_at, updated_at) VALUES (?, 'pending', ?, ?)
		ON CONFLICT (root) DO NOTHING`, root.String(), now, now); err != nil {
		return fmt.Errorf("origin: queue stripe job: %w", err)
	}
	select {
	case o.stripeWake <- struct{}{}:
	default:
	}
	return nil
}

// runStriper stripes pending roots until ctx ends. Jobs live in the
// database, so a restart resumes them; segments already stored are kept.
func (o *Origin) runStriper(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		for {
			root, ok, err := o.nextStripeJob(ctx)
			if err != nil {
				o.log.Error("stripe jobs", zap.Error(err))
			}
			if !ok {
				break
			}
			if err := o.stripeRoot(ctx, root); err != nil {
				if ctx.Err() != nil {
					return
				}
				o.log.Warn("stripe postponed", zap.Stringer("root", root), zap.Error(err))
				if _, uerr := o.db.ExecContext(ctx, `UPDATE stripe_jobs SET error = ?, updated_at = ? WHERE root = ?`,
					err.Error(), o.now().UnixNano(), root.String()); uerr != nil {
					o.log.Error("record stripe error", zap.Error(uerr))
				}
				break // retry on the next tick
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-o.stripeWake:
		}
	}
}

func (o *Origin) nextStripeJob(ctx context.Context) (cid.Cid, bool, error) {
	var s string
	err := o.db.QueryRowContext(ctx, `SELECT root FROM stripe_jobs WHERE state = 'pending' ORDER BY updated_at LIMIT 1`).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return cid.Undef, false, nil
	}
	if err != nil {
		return cid.Undef, false, fmt.Errorf("origin: next stripe job: %w", err)
	}
	c, err := cid.Decode(s)
	return c, err == nil, err
}

// placement returns healthy peers to place shards on: emptiest first,
// interleaved across regions so a segment spreads over failure domains.
// A peer ever caught serving wrong bytes gets no new shards.
func (o *Origin) placement(ctx context.Context) ([]peer.ID, error) {
	peers, err := o.Peers(ctx)
	if err != nil {
		return nil, err
	}
	byRegion := map[string][]originapi.PeerInfo{}
	var regions []string
	for _, p := range peers {
		if !p.Healthy || p.Flags > 0 {
			continue
		}
		r := ""
		if p.Location != nil {
			r = p.Location.Region
		}
		if _, ok := byRegion[r]; !ok {
			regions = append(regions, r)
		}
		byRegion[r] = append(byRegion[r], p)
	}
	sort.Strings(regions)
	for _, r := range regions {
		sort.SliceStable(byRegion[r], func(i, j int) bool { return byRegion[r][i].Free > byRegion[r][j].Free })
	}
	var out []peer.ID
	for i := 0; ; i++ {
		added := false
		for _, r := range regions {
			if i < len(byRegion[r]) {
				if id, err := peer.Decode(byRegion[r][i].ID); err == nil {
					out = append(out, id)
				}
				added = true
			}
		}
		if !added {
			return out, nil
		}
	}
}

// stripeRoot packs the blocks of root's DAG that are not striped yet into
// segments, stores each on k+m peers, then signs root's manifest and, unless
// KeepLocal, drops the origin's own copy.
func (o *Origin) stripeRoot(ctx context.Context, root cid.Cid) error {
	k, m := o.striper.DataShards(), o.striper.ParityShards()
	candidates, err := o.placement(ctx)
	if err != nil {
		return err
	}
	if len(candidates) < k+m {
		return fmt.Errorf("%w: %d healthy storage peers for %d+%d shards", erasure.ErrNotEnoughPeers, len(candidates), k, m)
	}
	start := time.Now()
	all, err := o.walk(ctx, root)
	if err != nil {
		return err
	}
	var stored, bytes int64
	var readErr error
	blocks := func(yield func(cid.Cid, []byte) bool) {
		for _, c := range all {
			if _, _, err := o.blockRef(ctx, c); err == nil {
				continue // striped with an earlier publish
			}
			b, err := o.local.Get(ctx, c)
			if err != nil {
				readErr = fmt.Errorf("origin: stripe %s: %w", c, err)
				return
			}
			if !yield(c, b.RawData()) {
				return
			}
		}
	}
	store := o.placingShards()
	defer store.release()
	err = o.striper.StoreAll(ctx, blocks, candidates, store, func(seg erasure.Segment, refs []erasure.BlockRef) error {
		if err := o.saveSegment(ctx, seg, refs); err != nil {
			return err
		}
		stored++
		bytes += seg.Length
		o.log.Info("segment striped", zap.Stringer("root", root), zap.Int64("segments", stored),
			zap.Int64("bytes", bytes), zap.Int("blocks", len(refs)))
		return nil
	})
	if err = errors.Join(readErr, err); err != nil {
		return err
	}
	if _, err := o.signManifest(ctx, root, all); err != nil {
		return err
	}
	if _, err := o.db.ExecContext(ctx, `UPDATE stripe_jobs SET state = 'done', error = '', updated_at = ? WHERE root = ?`,
		o.now().UnixNano(), root.String()); err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	dropped := 0
	if !o.stripeCfg.KeepLocal {
		for _, c := range all {
			if err := o.local.DeleteBlock(ctx, c); err == nil {
				dropped++
			}
		}
	}
	o.metrics.stripedRoots.Inc()
	o.log.Info("root striped", zap.Stringer("root", root), zap.Int("blocks", len(all)), zap.Int64("new_segments", stored),
		zap.Int64("bytes", bytes), zap.Int("local_copies_dropped", dropped), zap.Duration("took", time.Since(start)))
	return nil
}

// walk lists the DAG under root depth-first, parents first, each block once.
func (o *Origin) walk(ctx context.Context, root cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] || dag.IsIdentity(c) {
			continue
		}
		seen[c] = true
		out = append(out, c)
		if c.Type() == cid.Raw {
			continue
		}
		b, err := o.blocks.Get(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("origin: walk %s: %w", c, err)
		}
		links, err := dag.Links(c, b.RawData())
		if err != nil {
			if errors.Is(err, dag.ErrUnknownCodec) {
				continue
			}
			return nil, fmt.Errorf("origin: walk: %w", err)
		}
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	return out, nil
}

// saveSegment records a stored segment, its shards and its blocks in one
// transaction.
func (o *Origin) saveSegment(ctx context.Context, seg erasure.Segment, refs []erasure.BlockRef) error {
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `INSERT INTO segments (length, shard_size, data_shards, parity_shards, chunk_size, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, seg.Length, seg.ShardSize, o.striper.DataShards(), o.striper.ParityShards(),
		o.striper.ChunkSize(), o.now().UnixNano())
	if err != nil {
		return fmt.Errorf("origin: save segment: %w", err)
	}
	id, _ := res.LastInsertId()
	for i, sh := range seg.Shards {
		if _, err := tx.ExecContext(ctx, `INSERT INTO shards (segment_id, idx, shard_id, peer_id, chunks) VALUES (?, ?, ?, ?, ?)`,
			id, i, sh.ID, sh.Peer, sh.Chunks); err != nil {
			return fmt.Errorf("origin: save shard: %w", err)
		}
	}
	for _, b := range refs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blocks (cid, segment_id, offset, length) VALUES (?, ?, ?, ?)
			ON CONFLICT (cid) DO NOTHING`, b.CID, id, b.Offset, b.Length); err != nil {
			return fmt.Errorf("origin: save block: %w", err)
		}
	}
	return tx.Commit()
}

// signManifest builds, signs and stores root's manifest from the segments
// holding its blocks; the version goes up by one each time.
func (o *Origin) signManifest(ctx context.Context, root cid.Cid, all []cid.Cid) (uint64, error) {
	m := erasure.Manifest{Root: root.String(), Created: o.now().UTC(), DataShards: o.striper.DataShards(),
		ParityShards: o.striper.ParityShards(), ChunkSize: o.striper.ChunkSize()}
	var prev uint64
	err := o.db.QueryRowContext(ctx, `SELECT version FROM manifests WHERE root = ?`, root.String()).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("origin: manifest version: %w", err) // never let the version go back
	}
	m.Version = prev + 1
	segIndex := map[int64]int{}
	var segIDs []int64
	for _, c := range all {
		segID, ref, err := o.blockRef(ctx, c)
		if err != nil {
			return 0, fmt.Errorf("origin: manifest: block %s not striped: %w", c, err)
		}
		idx, ok := segIndex[segID]
		if !ok {
			var seg erasure.Segment
			var k, par, chunk int
			if err := o.db.QueryRowContext(ctx, `SELECT length, shard_size, data_shards, parity_shards, chunk_size FROM segments WHERE id = ?`, segID).
				Scan(&seg.Length, &seg.ShardSize, &k, &par, &chunk); err != nil {
				return 0, fmt.Errorf("origin: manifest: %w", err)
			}
			if k != m.DataShards || par != m.ParityShards || chunk != m.ChunkSize {
				return 0, fmt.Errorf("origin: manifest: segment %d was coded %d+%d/%d, not %d+%d/%d", segID, k, par, chunk, m.DataShards, m.ParityShards, m.ChunkSize)
			}
			if seg.Shards, err = o.segmentShards(ctx, segID); err != nil {
				return 0, err
			}
			idx = len(m.Segments)
			segIndex[segID] = idx
			segIDs = append(segIDs, segID)
			m.Segments = append(m.Segments, seg)
		}
		ref.Segment = idx
		m.Blocks = append(m.Blocks, ref)
	}
	env, err := m.Sign(o.key)
	if err != nil {
		return 0, err
	}
	raw, err := json.Marshal(env)
	if err != nil {
		return 0, err
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("origin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO manifests (root, version, envelope, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (root) DO UPDATE SET version = excluded.version, envelope = excluded.envelope, updated_at = excluded.updated_at`,
		root.String(), m.Version, raw, o.now().UnixNano()); err != nil {
		return 0, fmt.Errorf("origin: save manifest: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM manifest_segments WHERE root = ?`, root.String()); err != nil {
		return 0, fmt.Errorf("origin: save manifest: %w", err)
	}
	for i, id := range segIDs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO manifest_segments (root, idx, segment_id) VALUES (?, ?, ?)`, root.String(), i, id); err != nil {
			return 0, fmt.Errorf("origin: save manifest: %w", err)
		}
	}
	return m.Version, tx.Commit()
}
