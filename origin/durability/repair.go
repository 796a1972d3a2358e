package durability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// maxShardRead is the largest range read from a peer in one request.
const maxShardRead = 8 << 20

// shardRow is a shard as the database holds it.
type shardRow struct {
	idx     int
	id      string
	peer    string
	chunks  []byte
	bad     string
	healthy bool // not bad, and its peer sends heartbeats
	lost    bool // its peer has been silent for longer than LostAfter
}

// needsRepair: fewer healthy shards than the threshold, any shard proven
// bad (unlike a peer that is away, rotten bytes never come back), or any
// shard on a peer gone for good (LostAfter).
func needsRepair(h originapi.SegmentHealth) bool {
	return h.Healthy < h.Needed || h.Bad > 0 || h.Lost > 0
}

// runRepairer scans for segments at risk every RepairInterval and repairs
// them, under lease repair: one origin repairs at a time. All state is in
// the database, so a restart, or another origin, resumes a repair.
func (kp *Keeper) runRepairer(ctx context.Context) {
	tick.Every(ctx, kp.stripeCfg.RepairInterval, func(ctx context.Context) {
		kp.withLease(ctx, leaseRepair, func(ctx context.Context) {
			if _, err := kp.Repair(ctx); err != nil && ctx.Err() == nil {
				kp.log.Warn("repair pass incomplete", zap.Error(err))
			}
		})
	})
}

// segmentsHealth returns every segment's health, the healthy peers, and
// each segment's shards.
func (kp *Keeper) segmentsHealth(ctx context.Context) ([]originapi.SegmentHealth, map[int64][]shardRow, error) {
	peers, err := kp.Peers(ctx)
	if err != nil {
		return nil, nil, err
	}
	healthy, lost := map[string]bool{}, map[string]bool{}
	now := time.Now()
	for _, p := range peers {
		healthy[p.ID] = p.Healthy
		lost[p.ID] = !p.Healthy && now.Sub(p.LastSeen) > kp.stripeCfg.LostAfter
	}
	rows, err := kp.db.QueryContext(ctx, `SELECT segment_id, idx, shard_id, peer_id, chunks, bad FROM shards ORDER BY segment_id, idx`)
	if err != nil {
		return nil, nil, fmt.Errorf("durability: scan shards: %w", err)
	}
	defer rows.Close()
	bySeg := map[int64][]shardRow{}
	var order []int64
	for rows.Next() {
		var seg int64
		var r shardRow
		if err := rows.Scan(&seg, &r.idx, &r.id, &r.peer, &r.chunks, &r.bad); err != nil {
			return nil, nil, fmt.Errorf("durability: scan shards: %w", err)
		}
		r.healthy = r.bad == "" && healthy[r.peer]
		r.lost = lost[r.peer]
		if _, ok := bySeg[seg]; !ok {
			order = append(order, seg)
		}
		bySeg[seg] = append(bySeg[seg], r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	out := make([]originapi.SegmentHealth, 0, len(order))
	for _, seg := range order {
		h := originapi.SegmentHealth{Segment: seg, Shards: len(bySeg[seg]), Needed: kp.stripeCfg.RepairThreshold}
		for _, r := range bySeg[seg] {
			if r.healthy {
				h.Healthy++
			}
			if r.bad != "" {
				h.Bad++
			}
			if r.lost && r.bad == "" {
				h.Lost++
			}
		}
		out = append(out, h)
	}
	return out, bySeg, nil
}

// Repair rebuilds the shards of every segment below the repair threshold
// and places them on other healthy peers; it returns how many shards it
// placed. Each placement is committed on its own, so an interrupted repair
// loses nothing done.
//
// A segment whose repair failed is backed off (repair_backoff): it is not
// tried again before RepairInterval × 2^(failures−1), at most
// MaxRepairBackoff, ±10 %, unless its count of healthy shards changed (a
// peer came back, or another left) or more peers can take shards than at
// its last failure; a success forgets the failures.
// Reads for repair are origin-signed read orders, paid by the publisher:
// an unrecoverable segment must not be read every pass.
func (kp *Keeper) Repair(ctx context.Context) (int, error) {
	if kp.striper == nil {
		return 0, nil
	}
	if err := kp.resignStale(ctx); err != nil { // left over by a crash
		return 0, err
	}
	health, bySeg, err := kp.segmentsHealth(ctx)
	if err != nil {
		return 0, err
	}
	var atRisk []originapi.SegmentHealth
	for _, h := range health {
		if needsRepair(h) {
			atRisk = append(atRisk, h)
		}
	}
	kp.metrics.atRisk.Set(float64(len(atRisk)))
	backoff, err := kp.loadBackoff(ctx)
	if err != nil {
		return 0, err
	}
	now := kp.now()
	pool := 0 // peers that can take a rebuilt shard
	if len(atRisk) > 0 {
		candidates, err := kp.placement(ctx)
		if err != nil {
			return 0, err
		}
		pool = len(candidates)
	}
	placed := 0
	var errs []error
	for i, h := range atRisk {
		b, failed := backoff[h.Segment]
		delete(backoff, h.Segment) // what is left is no longer at risk
		due, failures := b.due(h, pool, now)
		if !due {
			kp.metrics.repairSkips.WithLabelValues("backoff").Inc()
			continue
		}
		kp.log.Info("repairing segment", zap.Int64("segment", h.Segment), zap.Int("healthy", h.Healthy),
			zap.Int("needed", h.Needed), zap.String("progress", fmt.Sprintf("%d/%d", i+1, len(atRisk))))
		n, err := kp.repairSegment(ctx, h.Segment, bySeg[h.Segment])
		placed += n
		switch {
		case err != nil && ctx.Err() == nil:
			kp.backOff(ctx, h, pool, failures+1, err)
			errs = append(errs, fmt.Errorf("segment %d: %w", h.Segment, err))
		case err != nil:
			errs = append(errs, fmt.Errorf("segment %d: %w", h.Segment, err))
		case failed:
			kp.clearBackoff(ctx, h.Segment)
		}
	}
	for seg := range backoff {
		kp.clearBackoff(ctx, seg)
	}
	return placed, errors.Join(errs...)
}

// repairSegment rebuilds the shards of segment segID that are not healthy
// and places each on a healthy peer the segment does not use yet. It
// returns how many it placed; their manifests are re-signed before it
// returns. A segment with fewer than k healthy shards cannot be rebuilt:
// it returns erasure.ErrNotEnoughShards, wrapped, without reading any
// (each read is a read order the publisher pays).
func (kp *Keeper) repairSegment(ctx context.Context, segID int64, rows []shardRow) (int, error) {
	healthy := 0
	for _, r := range rows {
		if r.healthy {
			healthy++
		}
	}
	if k := kp.striper.DataShards(); healthy < k {
		kp.metrics.repairSkips.WithLabelValues("not_enough_shards").Inc()
		return 0, fmt.Errorf("durability: %w: %d healthy of the %d needed; nothing read", erasure.ErrNotEnoughShards, healthy, k)
	}
	var shardSize int64
	if err := kp.db.QueryRowContext(ctx, `SELECT shard_size FROM segments WHERE id = ?`, segID).Scan(&shardSize); err != nil {
		return 0, fmt.Errorf("durability: %w", err)
	}
	shards, err := kp.rebuildShards(ctx, segID, rows, shardSize)
	if err != nil {
		return 0, err
	}
	used := map[string]bool{}
	for _, r := range rows {
		used[r.peer] = true
	}
	candidates, err := kp.placement(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	store := kp.placingShards(ctx, cancel) // each put noted until its row is saved (moveShard)
	defer store.release(ctx)
	placed := 0
	defer func() {
		// Whatever happened below, moved shards must reach the manifests
		// and the readers, even if another shard could not be placed. What
		// this misses (a crash, a cancelled context) stays marked stale and
		// is re-signed by the next pass.
		if placed > 0 {
			kp.readers.Remove(segID)
			if err := kp.resignStale(ctx); err != nil {
				kp.log.Error("re-sign manifests after repair", zap.Int64("segment", segID), zap.Error(err))
			}
		}
	}()
	for _, r := range rows {
		if r.healthy {
			continue
		}
		if storage := shards[r.idx]; len(storage) != int(shardSize) {
			return placed, fmt.Errorf("rebuilt shard %d has %d bytes", r.idx, len(storage))
		}
		target := kp.putRebuilt(ctx, store, candidates, used, r.id, shards[r.idx])
		if target == "" {
			kp.metrics.repairs.WithLabelValues("error").Inc()
			return placed, fmt.Errorf("%w to place shard %d", erasure.ErrNotEnoughPeers, r.idx)
		}
		moved, err := kp.moveShard(ctx, segID, r.idx, r.peer, target)
		if err != nil {
			return placed, err
		}
		store.end(ctx, placement{shard: r.id, peer: target}) // its row is saved, or will never be
		if !moved {
			// Another origin repaired it meanwhile: our copy is not needed.
			kp.log.Info("shard repaired by another origin meanwhile", zap.Int64("segment", segID), zap.Int("shard", r.idx))
			kp.dropOldShard(ctx, shardRow{id: r.id, peer: target.String()})
			continue
		}
		placed++
		kp.metrics.repairs.WithLabelValues("ok").Inc()
		kp.log.Info("shard repaired", zap.Int64("segment", segID), zap.Int("shard", r.idx),
			zap.String("from", r.peer), zap.Stringer("to", target))
		kp.dropOldShard(ctx, r)
	}
	return placed, nil
}

// rebuildShards reads k healthy shards of segment segID whole, and
// reconstructs the others. A shard that cannot be read is marked not
// healthy in rows, to be rebuilt too, whatever its peer's heartbeats say.
func (kp *Keeper) rebuildShards(ctx context.Context, segID int64, rows []shardRow, shardSize int64) ([][]byte, error) {
	k := kp.striper.DataShards()
	shards := make([][]byte, len(rows))
	have := 0
	for i, r := range rows {
		if have == k {
			break
		}
		if !r.healthy {
			continue
		}
		data, err := kp.readWholeShard(ctx, r, shardSize)
		if err != nil {
			kp.log.Warn("repair: shard unreadable", zap.Int64("segment", segID), zap.Int("shard", r.idx), zap.Error(err))
			rows[i].healthy = false
			continue
		}
		shards[r.idx] = data
		have++
	}
	if have < k {
		return nil, fmt.Errorf("%w: only %d of %d shards readable", erasure.ErrNotEnoughShards, have, k)
	}
	if err := kp.striper.Reconstruct(shards); err != nil {
		return nil, err
	}
	return shards, nil
}

// putRebuilt puts a rebuilt shard on the first candidate peer not in used
// that takes it, and returns that peer, or "" if none did. Every peer it
// tries is added to used.
func (kp *Keeper) putRebuilt(ctx context.Context, store *placingShards, candidates []peer.ID, used map[string]bool,
	shard string, data []byte) peer.ID {
	for _, c := range candidates {
		if used[c.String()] {
			continue
		}
		used[c.String()] = true
		if err := store.PutShard(ctx, c, shard, data); err != nil {
			kp.log.Warn("repair: peer refused shard", zap.Stringer("peer", c), zap.Error(err))
			continue
		}
		return c
	}
	return ""
}

// readWholeShard reads a shard in pieces and checks every chunk.
func (kp *Keeper) readWholeShard(ctx context.Context, r shardRow, size int64) ([]byte, error) {
	p, err := peer.Decode(r.peer)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, size)
	for off := int64(0); off < size; off += maxShardRead {
		b, err := kp.shardStore.GetShard(ctx, p, r.id, off, min(maxShardRead, size-off))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	if err := erasure.VerifyChunks(r.chunks, 0, kp.striper.ChunkSize(), out); err != nil {
		kp.flagPeer(erasure.Flag{Peer: p, Shard: r.id, Reason: "bad-bytes"}, "repair")
		return nil, err
	}
	return out, nil
}

// dropOldShard asks the shard's previous peer, if it still answers, to
// delete it; best effort. A peer keeps one file per shard ID, so the shard
// stays if another segment still counts on that peer for the same bytes.
func (kp *Keeper) dropOldShard(ctx context.Context, r shardRow) {
	p, err := peer.Decode(r.peer)
	if err != nil {
		return
	}
	// Another segment's row may place the same shard there, and a stripe
	// job or repair (of any origin) putting it there right now has no row
	// yet: keep the file then.
	k := placement{shard: r.id, peer: p}
	if ok, err := kp.startDelete(ctx, k); err != nil || !ok {
		return
	}
	defer kp.endDelete(context.WithoutCancel(ctx), k)
	addr, err := kp.cachedAddr(ctx, p)
	if err != nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	if err := kp.storage.Delete(dctx, p, addr, r.id); err != nil {
		kp.log.Debug("old shard not deleted", zap.String("peer", r.peer), zap.Error(err))
	}
}

// moveShard records that shard idx of segment segID moved from peer from
// to peer to, and marks every manifest using its segment stale, in one
// transaction: no crash can leave a signed manifest naming the old peer
// without a note to re-sign it. It is a compare-and-set: moved is false,
// and nothing written, if the shard is no longer on from (another origin
// moved it).
func (kp *Keeper) moveShard(ctx context.Context, segID int64, idx int, from string, to peer.ID) (moved bool, err error) {
	err = sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE shards SET peer_id = ?, bad = '' WHERE segment_id = ? AND idx = ? AND peer_id = ?`,
			to.String(), segID, idx, from)
		if err != nil {
			return fmt.Errorf("durability: move shard: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			moved = false
			return err
		}
		moved = true
		if err := kp.logMove(ctx, tx, segID, idx, to); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE manifests SET stale = 1
			WHERE root IN (SELECT root FROM manifest_segments WHERE segment_id = ?)`, segID); err != nil {
			return fmt.Errorf("durability: mark manifests stale: %w", err)
		}
		return nil
	})
	return moved, err
}

// resignStale re-signs, with a new version, every manifest marked stale.
// The mark is cleared before the manifest is rebuilt from the database, so
// a shard moved meanwhile marks it again and the next pass catches it.
func (kp *Keeper) resignStale(ctx context.Context) error {
	rows, err := kp.db.QueryContext(ctx, `SELECT root FROM manifests WHERE stale = 1`)
	if err != nil {
		return fmt.Errorf("durability: %w", err)
	}
	var roots []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return fmt.Errorf("durability: %w", err)
		}
		roots = append(roots, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("durability: %w", err)
	}
	for _, r := range roots {
		root := cid.MustParse(r)
		m, err := kp.Manifest(ctx, root)
		if err != nil {
			return err
		}
		if _, err := kp.db.ExecContext(ctx, `UPDATE manifests SET stale = 0 WHERE root = ?`, r); err != nil {
			return fmt.Errorf("durability: %w", err)
		}
		all := make([]cid.Cid, len(m.Blocks))
		for i, b := range m.Blocks {
			all[i] = cid.MustParse(b.CID)
		}
		v, err := kp.signManifest(ctx, root, all)
		if err != nil {
			kp.db.ExecContext(context.WithoutCancel(ctx), `UPDATE manifests SET stale = 1 WHERE root = ?`, r)
			return err
		}
		kp.log.Info("manifest re-signed", zap.String("root", r), zap.Uint64("version", v))
	}
	return nil
}

// ErrNoManifest marks a root without a manifest: not striped (yet).
var ErrNoManifest error = httpkit.Error(http.StatusNotFound, errors.New("no manifest"))

// Manifest returns root's current manifest, or ErrNoManifest, wrapped.
func (kp *Keeper) Manifest(ctx context.Context, root cid.Cid) (*erasure.Manifest, error) {
	env, err := kp.ManifestEnvelope(ctx, root)
	if err != nil {
		return nil, err
	}
	signer, err := peer.Decode(env.Signer)
	if err != nil || !kp.origins[signer] {
		return nil, fmt.Errorf("durability: manifest of %s signed by %q, not one of the origins (OriginIDs)", root, env.Signer)
	}
	return erasure.OpenManifest(env, signer)
}

// ManifestEnvelope returns root's current manifest as the origin signed
// it, or ErrNoManifest, wrapped.
func (kp *Keeper) ManifestEnvelope(ctx context.Context, root cid.Cid) (*identity.Envelope, error) {
	var raw []byte
	if err := kp.db.QueryRowContext(ctx, `SELECT envelope FROM manifests WHERE root = ?`, root.String()).Scan(&raw); err != nil {
		return nil, fmt.Errorf("%w for %s (not striped yet?)", ErrNoManifest, root)
	}
	var env identity.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("durability: stored manifest: %w", err)
	}
	return &env, nil
}

// Status summarizes storage: peers with their shards and audit results,
// segments at risk, and publishes waiting to be striped.
func (kp *Keeper) Status(ctx context.Context) (*originapi.StorageStatus, error) {
	peers, err := kp.Peers(ctx)
	if err != nil {
		return nil, err
	}
	health, _, err := kp.segmentsHealth(ctx)
	if err != nil {
		return nil, err
	}
	st := &originapi.StorageStatus{Peers: peers, Segments: len(health), AtRisk: []originapi.SegmentHealth{}}
	for _, h := range health {
		if needsRepair(h) {
			st.AtRisk = append(st.AtRisk, h)
		}
	}
	kp.db.QueryRowContext(ctx, `SELECT count(*) FROM stripe_jobs WHERE state = 'pending'`).Scan(&st.PendingJobs)
	return st, nil
}
