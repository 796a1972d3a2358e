package origin

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	ipld "github.com/ipfs/go-ipld-format"
)

// cidBlockstore keeps blocks keyed by their whole CID, codec included.
// boxo's blockstore keys by multihash only, so a raw block would make the
// same bytes "present" as a dag-pb node whose links were never checked,
// and deleting one would delete the other; the origin's closure invariant
// is about CIDs, so its store is too.
type cidBlockstore struct{ ds ds.Batching }

func cidKey(c cid.Cid) ds.Key { return dshelp.NewKeyFromBinary(c.Bytes()) }

func (s *cidBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	data, err := s.ds.Get(ctx, cidKey(c))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if err != nil {
		return nil, fmt.Errorf("origin: get %s: %w", c, err)
	}
	return blocks.NewBlockWithCid(data, c)
}

func (s *cidBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	return s.ds.Has(ctx, cidKey(c))
}

func (s *cidBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	n, err := s.ds.GetSize(ctx, cidKey(c))
	if errors.Is(err, ds.ErrNotFound) {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	return n, err
}

func (s *cidBlockstore) Put(ctx context.Context, b blocks.Block) error {
	return s.ds.Put(ctx, cidKey(b.Cid()), b.RawData())
}

func (s *cidBlockstore) PutMany(ctx context.Context, bs []blocks.Block) error {
	batch, err := s.ds.Batch(ctx)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if err := batch.Put(ctx, cidKey(b.Cid()), b.RawData()); err != nil {
			return err
		}
	}
	return batch.Commit(ctx)
}

func (s *cidBlockstore) DeleteBlock(ctx context.Context, c cid.Cid) error {
	return s.ds.Delete(ctx, cidKey(c))
}

func (s *cidBlockstore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	res, err := s.ds.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		return nil, err
	}
	out := make(chan cid.Cid)
	go func() {
		defer close(out)
		defer res.Close()
		for r := range res.Next() {
			if r.Error != nil {
				return
			}
			raw, err := dshelp.BinaryFromDsKey(ds.RawKey(r.Key))
			if err != nil {
				continue
			}
			c, err := cid.Cast(raw)
			if err != nil {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

var _ blockstore.Blockstore = (*cidBlockstore)(nil)
