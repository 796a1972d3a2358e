package origin

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	"github.com/topcdn/topcdn/dag"
	"go.uber.org/zap"
)

// openBlocks opens the flatfs block store in dir, as kubo lays it out
// (next-to-last/2 sharding), with every write fsynced.
func openBlocks(dir string) (*flatfs.Datastore, error) {
	ds, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), true)
	if err != nil {
		return nil, fmt.Errorf("origin: open block store %s: %w", dir, err)
	}
	return ds, nil
}

// verifyingBlockstore checks every block read from disk against its CID,
// so on-disk corruption is an error, never a wrong block served.
type verifyingBlockstore struct {
	blockstore.Blockstore
	log     *zap.Logger
	metrics *metrics
}

func (v *verifyingBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := v.Blockstore.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := dag.Verify(c, b.RawData()); err != nil {
		v.metrics.corruptBlocks.Inc()
		v.log.Error("corrupt block on disk", zap.Stringer("cid", c), zap.Error(err))
		return nil, fmt.Errorf("origin: stored block corrupt: %w", err)
	}
	return b, nil
}

var _ blockstore.Blockstore = (*verifyingBlockstore)(nil)
