package durability

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// Placements (table placements) are the shards being put on storage
// peers whose rows are not saved yet (a stripe job's or a repair's), and
// the shards being deleted from peers, by every origin sharing the
// database. A peer keeps one file per shard ID, and two segments can place
// the same shard (same bytes, same ID) on one peer, so a delete checks
// that no saved row places the shard there; placements cover what the
// rows do not show yet: a delete never runs while the same shard is being
// put on the same peer, by any origin, and a put of it there waits for
// such a delete to end. A row expires unless renewed (LeaseTTL), so the
// intents of an origin that died lapse.

// deleteTimeout bounds one delete order to a peer.
const deleteTimeout = 5 * time.Second

// placementPoll is how often a put waiting for a delete looks again.
const placementPoll = 50 * time.Millisecond

// placement is one shard on one peer.
type placement struct {
	shard string
	peer  peer.ID
}

// beginPut notes that k's shard is being put on k's peer, for n bytes,
// first waiting for a delete of it there to end.
func (kp *Keeper) beginPut(ctx context.Context, k placement, n int64) error {
	for {
		now, err := kp.db.Now(ctx)
		if err != nil {
			return fmt.Errorf("durability: placement: %w", err)
		}
		res, err := kp.db.ExecContext(ctx, `INSERT INTO placements (shard, peer, kind, n, holder, expires) VALUES (?, ?, 'put', 1, ?, ?)
			ON CONFLICT (shard, peer) DO UPDATE SET
				n = CASE WHEN placements.kind = 'put' AND placements.expires >= ? THEN placements.n + 1 ELSE 1 END,
				kind = 'put', holder = excluded.holder,
				expires = CASE WHEN placements.kind = 'put' AND placements.expires > excluded.expires
					THEN placements.expires ELSE excluded.expires END
			WHERE placements.kind = 'put' OR placements.expires < ?`,
			k.shard, k.peer.String(), kp.holder(), now.Add(transferTimeout(n)+kp.stripeCfg.LeaseTTL).UnixNano(),
			now.UnixNano(), now.UnixNano())
		if err != nil {
			return fmt.Errorf("durability: placement: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		select { // a delete of it there is running
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(placementPoll):
		}
	}
}

// endPut undoes one beginPut, once the put's row is saved (or will never
// be).
func (kp *Keeper) endPut(ctx context.Context, k placement) error {
	return sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE placements SET n = n - 1 WHERE shard = ? AND peer = ? AND kind = 'put'`,
			k.shard, k.peer.String()); err != nil {
			return fmt.Errorf("durability: placement: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM placements WHERE shard = ? AND peer = ? AND kind = 'put' AND n <= 0`,
			k.shard, k.peer.String()); err != nil {
			return fmt.Errorf("durability: placement: %w", err)
		}
		return nil
	})
}

// renewPuts keeps the puts ks in flight for another LeaseTTL.
func (kp *Keeper) renewPuts(ctx context.Context, ks []placement) error {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return err
	}
	until := now.Add(kp.stripeCfg.LeaseTTL).UnixNano()
	for _, k := range ks {
		if _, err := kp.db.ExecContext(ctx, `UPDATE placements SET expires = ? WHERE shard = ? AND peer = ? AND kind = 'put' AND expires < ?`,
			until, k.shard, k.peer.String(), until); err != nil {
			return fmt.Errorf("durability: renew placements: %w", err)
		}
	}
	return nil
}

// errPlaced rolls back startDelete's transaction: a row places the shard.
var errPlaced = errors.New("placed")

// startDelete reports whether k's shard may be deleted from k's peer: no
// saved row places it there, and no put of it there is in flight. If so,
// puts of it there wait until endDelete. Both are checked in one
// transaction, so no put begins and saves its row in between.
func (kp *Keeper) startDelete(ctx context.Context, k placement) (bool, error) {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return false, fmt.Errorf("durability: placement: %w", err)
	}
	ok := false
	err = sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		ok = false
		res, err := tx.ExecContext(ctx, `INSERT INTO placements (shard, peer, kind, n, holder, expires) VALUES (?, ?, 'delete', 1, ?, ?)
			ON CONFLICT (shard, peer) DO UPDATE SET kind = 'delete', n = 1, holder = excluded.holder, expires = excluded.expires
			WHERE placements.expires < ?`,
			k.shard, k.peer.String(), kp.holder(), now.Add(deleteTimeout+kp.stripeCfg.LeaseTTL).UnixNano(), now.UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // a put or another delete of it there is running
		}
		var placed int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM shards WHERE shard_id = ? AND peer_id = ?`,
			k.shard, k.peer.String()).Scan(&placed); err != nil {
			return err
		}
		if placed > 0 {
			return errPlaced
		}
		ok = true
		return nil
	})
	if errors.Is(err, errPlaced) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("durability: placement: %w", err)
	}
	return ok, nil
}

// endDelete ends a delete startDelete allowed.
func (kp *Keeper) endDelete(ctx context.Context, k placement) error {
	if _, err := kp.db.ExecContext(ctx, `DELETE FROM placements WHERE shard = ? AND peer = ? AND kind = 'delete' AND holder = ?`,
		k.shard, k.peer.String(), kp.holder()); err != nil {
		return fmt.Errorf("durability: placement: %w", err)
	}
	return nil
}

// placingShards is the ShardStore of one stripe job or repair: each shard
// it puts stays in placements, renewed, until the job saves the rows
// placing it (saved) or ends (release). If the renewals fail until the
// puts may lapse, it calls the job's cancel: a sweep could then delete
// what the job put.
type placingShards struct {
	peerShards
	mu   sync.Mutex
	keys []placement
	stop func()
}

func (kp *Keeper) placingShards(ctx context.Context, cancel context.CancelFunc) *placingShards {
	s := &placingShards{peerShards: peerShards{keeper: kp, client: kp.storage}}
	s.stop = kp.keepAlive(ctx, cancel, "placements", func(ctx context.Context) (bool, error) {
		s.mu.Lock()
		keys := append([]placement(nil), s.keys...)
		s.mu.Unlock()
		return true, kp.renewPuts(ctx, keys)
	})
	return s
}

// PutShard puts a shard on p, noted as in flight until saved or release.
func (s *placingShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	k := placement{shard: shard, peer: p}
	if err := s.keeper.beginPut(ctx, k, int64(len(data))); err != nil {
		return err
	}
	s.mu.Lock()
	s.keys = append(s.keys, k)
	s.mu.Unlock()
	return s.peerShards.PutShard(ctx, p, shard, data)
}

// saved ends the puts of seg's shards, whose rows are now saved.
func (s *placingShards) saved(ctx context.Context, seg erasure.Segment) {
	for _, sh := range seg.Shards {
		if p, err := peer.Decode(sh.Peer); err == nil {
			s.end(ctx, placement{shard: sh.ID, peer: p})
		}
	}
}

// end ends one put of k, if the job made one.
func (s *placingShards) end(ctx context.Context, k placement) {
	s.mu.Lock()
	found := false
	for i, have := range s.keys {
		if have == k {
			s.keys = append(s.keys[:i], s.keys[i+1:]...)
			found = true
			break
		}
	}
	s.mu.Unlock()
	if found {
		if err := s.keeper.endPut(context.WithoutCancel(ctx), k); err != nil {
			s.keeper.log.Warn("placement not ended; it lapses", zap.String("shard", k.shard), zap.Stringer("peer", k.peer), zap.Error(err))
		}
	}
}

// release ends every put of the job still in flight, and the renewals.
func (s *placingShards) release(ctx context.Context) {
	s.stop()
	s.mu.Lock()
	keys := s.keys
	s.keys = nil
	s.mu.Unlock()
	for _, k := range keys {
		if err := s.keeper.endPut(context.WithoutCancel(ctx), k); err != nil {
			s.keeper.log.Warn("placement not ended; it lapses", zap.String("shard", k.shard), zap.Stringer("peer", k.peer), zap.Error(err))
		}
	}
}
