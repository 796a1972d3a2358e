package durability

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
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// placement returns healthy peers to place shards on: emptiest first,
// interleaved across regions so a segment spreads over failure domains.
// A peer ever caught serving wrong bytes gets no new shards.
func (kp *Keeper) placement(ctx context.Context) ([]peer.ID, error) {
	peers, err := kp.Peers(ctx)
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

// Striped is what striping stored anew: the blocks not striped before,
// and their bytes.
type Striped struct {
	Blocks int
	Bytes  int64
}

// stripeRoot packs the blocks of root's DAG that are not striped yet into
// segments, stores each on k+m peers, then signs root's manifest and, unless
// KeepLocal, drops the origin's own copy. It returns what it striped,
// also when it fails part-way.
func (kp *Keeper) stripeRoot(ctx context.Context, root cid.Cid) (Striped, error) {
	var news Striped
	k, m := kp.striper.DataShards(), kp.striper.ParityShards()
	candidates, err := kp.placement(ctx)
	if err != nil {
		return news, err
	}
	if len(candidates) < k+m {
		return news, fmt.Errorf("%w: %d healthy storage peers for %d+%d shards", erasure.ErrNotEnoughPeers, len(candidates), k, m)
	}
	start := time.Now()
	all, post, err := kp.walk(ctx, root)
	if err != nil {
		return news, err
	}
	var stored, bytes int64
	var readErr error
	// Children before parents: a block gets its row only with or after
	// every block under it, so a job cut short leaves no striped block
	// whose DAG is not striped whole (which an upload linking to it would
	// count as stored, and another origin serve).
	blocks := func(yield func(cid.Cid, []byte) bool) {
		for _, c := range post {
			if _, _, err := kp.blockRef(ctx, c); err == nil {
				continue // striped with an earlier publish
			}
			b, err := kp.local.Get(ctx, c)
			if err != nil {
				readErr = fmt.Errorf("durability: stripe %s: %w", c, err)
				return
			}
			if !yield(c, b.RawData()) {
				return
			}
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	store := kp.placingShards(sctx, cancel)
	defer store.release(ctx)
	err = kp.striper.StoreAll(sctx, blocks, candidates, store, func(seg erasure.Segment, refs []erasure.BlockRef) error {
		if err := kp.saveSegment(ctx, root, seg, refs); err != nil {
			return err
		}
		store.saved(ctx, seg)
		stored++
		bytes += seg.Length
		news.Blocks += len(refs)
		news.Bytes += seg.Length
		kp.log.Info("segment striped", zap.Stringer("root", root), zap.Int64("segments", stored),
			zap.Int64("bytes", bytes), zap.Int("blocks", len(refs)))
		return nil
	})
	if err = errors.Join(readErr, err); err != nil {
		return news, err
	}
	if _, err := kp.signManifest(ctx, root, all); err != nil {
		return news, err
	}
	if _, err := kp.db.ExecContext(ctx, `UPDATE stripe_jobs SET state = 'done', error = '', updated_at = ? WHERE root = ?`,
		kp.now().UnixNano(), root.String()); err != nil {
		return news, fmt.Errorf("durability: %w", err)
	}
	dropped := 0
	if !kp.stripeCfg.KeepLocal {
		for _, c := range all {
			if err := kp.local.DeleteBlock(ctx, c); err == nil {
				dropped++
			}
		}
	}
	kp.metrics.stripedRoots.Inc()
	kp.log.Info("root striped", zap.Stringer("root", root), zap.Int("blocks", len(all)), zap.Int64("new_segments", stored),
		zap.Int64("bytes", bytes), zap.Int("local_copies_dropped", dropped), zap.Duration("took", time.Since(start)))
	return news, nil
}

// walk lists the DAG under root, each block once, in two orders: all,
// parents first (dag.Walk's order, the manifest's), and post, every block
// after all the blocks it links to. It reads blocks through the origin's
// view of all it holds: some may be striped already, by an earlier
// publish.
func (kp *Keeper) walk(ctx context.Context, root cid.Cid) (all, post []cid.Cid, err error) {
	links := map[cid.Cid][]cid.Cid{}
	all, err = dag.Walk(ctx, root, func(ctx context.Context, c cid.Cid) ([]byte, error) {
		b, err := kp.blocks.Get(ctx, c)
		if err != nil {
			return nil, err
		}
		if ls, err := dag.Links(c, b.RawData()); err == nil {
			links[c] = ls
		}
		return b.RawData(), nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("durability: %w", err)
	}
	return all, postOrder(root, links), nil
}

// postOrder lists the DAG under root, whose blocks link as links says
// (none listed: no links), each block once and after every block it links
// to; identity blocks are left out, as dag.Walk leaves them. Reversing a
// parents-first order is not enough: a block linked from two parents is
// listed after the first, which may come after the second. It walks
// iteratively, so a deep DAG cannot overflow the stack; hash links cannot
// form cycles.
func postOrder(root cid.Cid, links map[cid.Cid][]cid.Cid) []cid.Cid {
	type frame struct {
		c cid.Cid
		i int // links of c already followed
	}
	done := map[cid.Cid]bool{}
	out := make([]cid.Cid, 0, len(links))
	stack := []frame{{c: root}}
	if dag.IsIdentity(root) {
		return out
	}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if ls := links[top.c]; top.i < len(ls) {
			child := ls[top.i]
			top.i++
			if !done[child] && !dag.IsIdentity(child) {
				stack = append(stack, frame{c: child})
			}
			continue
		}
		if !done[top.c] {
			done[top.c] = true
			out = append(out, top.c)
		}
		stack = stack[:len(stack)-1]
	}
	return out
}

// saveSegment records a segment stored for root, its shards and its
// blocks, and logs each shard's placement for billing, in one transaction.
func (kp *Keeper) saveSegment(ctx context.Context, root cid.Cid, seg erasure.Segment, refs []erasure.BlockRef) error {
	return sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO segments (length, shard_size, data_shards, parity_shards, chunk_size, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`, seg.Length, seg.ShardSize, kp.striper.DataShards(), kp.striper.ParityShards(),
			kp.striper.ChunkSize(), kp.now().UnixNano()).Scan(&id); err != nil {
			return fmt.Errorf("durability: save segment: %w", err)
		}
		for i, sh := range seg.Shards {
			if _, err := tx.ExecContext(ctx, `INSERT INTO shards (segment_id, idx, shard_id, peer_id, chunks) VALUES (?, ?, ?, ?, ?)`,
				id, i, sh.ID, sh.Peer, sh.Chunks); err != nil {
				return fmt.Errorf("durability: save shard: %w", err)
			}
			if err := origindb.AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventPlace, Shard: sh.ID, Peer: sh.Peer,
				Segment: id, Size: seg.ShardSize, Root: root.String(), At: kp.now()}); err != nil {
				return err
			}
		}
		for _, b := range refs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO blocks (cid, segment_id, "offset", length) VALUES (?, ?, ?, ?)
				ON CONFLICT (cid) DO NOTHING`, b.CID, id, b.Offset, b.Length); err != nil {
				return fmt.Errorf("durability: save block: %w", err)
			}
		}
		return nil
	})
}

// manifestTries bounds how many times signManifest builds a manifest that
// another origin's newer one beat to the database.
const manifestTries = 5

// signManifest builds, signs and stores root's manifest from the segments
// holding its blocks; the version goes up by one each time. If another
// origin saved the next version first, it builds again from what the
// database holds then.
func (kp *Keeper) signManifest(ctx context.Context, root cid.Cid, all []cid.Cid) (uint64, error) {
	for try := 1; ; try++ {
		m := erasure.Manifest{Root: root.String(), Created: kp.now().UTC(), DataShards: kp.striper.DataShards(),
			ParityShards: kp.striper.ParityShards(), ChunkSize: kp.striper.ChunkSize()}
		var prev uint64
		err := kp.db.QueryRowContext(ctx, `SELECT version FROM manifests WHERE root = ?`, root.String()).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("durability: manifest version: %w", err) // never let the version go back
		}
		m.Version = prev + 1
		segIDs, err := kp.addBlocks(ctx, &m, all)
		if err != nil {
			return 0, err
		}
		env, err := m.Sign(kp.key)
		if err != nil {
			return 0, err
		}
		raw, err := json.Marshal(env)
		if err != nil {
			return 0, err
		}
		saved, err := kp.saveManifest(ctx, root, m.Version, raw, segIDs)
		switch {
		case err != nil:
			return 0, err
		case saved:
			return m.Version, nil
		case try == manifestTries:
			return 0, fmt.Errorf("durability: manifest of %s: another origin saved a newer one %d times in a row", root, try)
		}
	}
}

// addBlocks adds the blocks all to m, in order, with the segments that
// hold them, each once; it returns those segments' IDs in m's order. Every
// block must be striped, in a segment coded as m says.
func (kp *Keeper) addBlocks(ctx context.Context, m *erasure.Manifest, all []cid.Cid) ([]int64, error) {
	segIndex := map[int64]int{}
	var segIDs []int64
	for _, c := range all {
		segID, ref, err := kp.blockRef(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("durability: manifest: block %s not striped: %w", c, err)
		}
		idx, ok := segIndex[segID]
		if !ok {
			var seg erasure.Segment
			var k, par, chunk int
			if err := kp.db.QueryRowContext(ctx, `SELECT length, shard_size, data_shards, parity_shards, chunk_size FROM segments WHERE id = ?`, segID).
				Scan(&seg.Length, &seg.ShardSize, &k, &par, &chunk); err != nil {
				return nil, fmt.Errorf("durability: manifest: %w", err)
			}
			if k != m.DataShards || par != m.ParityShards || chunk != m.ChunkSize {
				return nil, fmt.Errorf("durability: manifest: segment %d was coded %d+%d/%d, not %d+%d/%d", segID, k, par, chunk, m.DataShards, m.ParityShards, m.ChunkSize)
			}
			if seg.Shards, err = kp.segmentShards(ctx, segID); err != nil {
				return nil, err
			}
			idx = len(m.Segments)
			segIndex[segID] = idx
			segIDs = append(segIDs, segID)
			m.Segments = append(m.Segments, seg)
		}
		ref.Segment = idx
		m.Blocks = append(m.Blocks, ref)
	}
	return segIDs, nil
}

// saveManifest stores root's signed manifest (raw, its envelope, signed
// by the Keeper) and the segments it uses, in one transaction, unless the
// database holds this version or a newer one already (another origin
// signed it): saved is false then, and nothing written.
func (kp *Keeper) saveManifest(ctx context.Context, root cid.Cid, version uint64, raw []byte, segIDs []int64) (saved bool, err error) {
	err = sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO manifests (root, version, envelope, updated_at, signer) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (root) DO UPDATE SET version = excluded.version, envelope = excluded.envelope, updated_at = excluded.updated_at,
				signer = excluded.signer
			WHERE manifests.version < excluded.version`,
			root.String(), version, raw, kp.now().UnixNano(), kp.holder())
		if err != nil {
			return fmt.Errorf("durability: save manifest: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			saved = false
			return err
		}
		saved = true
		if _, err := tx.ExecContext(ctx, `DELETE FROM manifest_segments WHERE root = ?`, root.String()); err != nil {
			return fmt.Errorf("durability: save manifest: %w", err)
		}
		for i, id := range segIDs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO manifest_segments (root, idx, segment_id) VALUES (?, ?, ?)`, root.String(), i, id); err != nil {
				return fmt.Errorf("durability: save manifest: %w", err)
			}
		}
		return nil
	})
	return saved, err
}
