package durability

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// maxSweepDeletes bounds the deletes one sweep sends a peer: a peer that
// lists made-up shards costs the origin a bounded amount of work.
const maxSweepDeletes = 10000

// runSweeper sweeps orphan shards every SweepInterval until ctx ends,
// under lease sweep: one origin sweeps at a time.
func (kp *Keeper) runSweeper(ctx context.Context) {
	tick.Every(ctx, kp.stripeCfg.SweepInterval, func(ctx context.Context) {
		kp.withLease(ctx, leaseSweep, func(ctx context.Context) {
			if _, err := kp.SweepOrphans(ctx); err != nil && ctx.Err() == nil {
				kp.log.Warn("orphan sweep incomplete", zap.Error(err))
			}
		})
	})
}

// SweepOrphans deletes, from every healthy storage peer that reports more
// shards than the origin placed on it, the shards no segment places there
// and no stripe job or repair is placing there now: what a job left behind
// when it failed or the origin crashed between its puts and its rows. It
// returns how many shards it deleted. The peers' lists are their word;
// nothing placed on a peer is deleted whatever it lists.
func (kp *Keeper) SweepOrphans(ctx context.Context) (int, error) {
	peers, err := kp.Peers(ctx)
	if err != nil {
		return 0, err
	}
	deleted := 0
	var errs []error
	for _, pi := range peers {
		if !pi.Healthy || pi.Shards <= pi.Placed {
			continue
		}
		n, err := kp.sweepPeer(ctx, pi)
		deleted += n
		if err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) > 0 {
		return deleted, fmt.Errorf("durability: sweep: %d peers: first: %w", len(errs), errs[0])
	}
	return deleted, ctx.Err()
}

// sweepPeer deletes the orphan shards of one peer.
func (kp *Keeper) sweepPeer(ctx context.Context, pi originapi.PeerInfo) (int, error) {
	p, err := peer.Decode(pi.ID)
	if err != nil {
		return 0, err
	}
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	held, err := kp.storage.List(lctx, pi.Addr)
	cancel()
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, sh := range held {
		if deleted >= maxSweepDeletes || ctx.Err() != nil {
			break
		}
		ok, err := kp.deleteIfOrphan(ctx, p, pi.Addr, sh.ID)
		if err != nil {
			return deleted, err
		}
		if ok {
			deleted++
		}
	}
	if deleted > 0 {
		kp.metrics.orphans.Add(float64(deleted))
		kp.log.Info("orphan shards deleted", zap.String("peer", pi.ID), zap.Int("shards", deleted))
	}
	return deleted, nil
}

// deleteIfOrphan deletes shard from p if no row places it there and no
// put of it there is in flight (placements).
func (kp *Keeper) deleteIfOrphan(ctx context.Context, p peer.ID, addr, shard string) (bool, error) {
	k := placement{shard: shard, peer: p}
	ok, err := kp.startDelete(ctx, k)
	if err != nil {
		return false, fmt.Errorf("durability: sweep: %w", err)
	}
	if !ok {
		return false, nil
	}
	defer kp.endDelete(context.WithoutCancel(ctx), k)
	dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	if err := kp.storage.Delete(dctx, p, addr, shard); err != nil {
		kp.log.Debug("orphan shard not deleted", zap.Stringer("peer", p), zap.String("shard", shard), zap.Error(err))
		return false, nil
	}
	return true, nil
}
