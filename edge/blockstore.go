package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	bstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/topcdn/topcdn/dag"
	"go.uber.org/zap"
)

// blockstore is what boxo's gateway reads blocks from: the memory tier,
// the disk tier, then the source; concurrent misses for one block make one
// upstream fetch.
type blockstore struct{ e *Edge }

// block returns c's bytes from the first tier that has them, filling the
// faster tiers on the way back.
func (e *Edge) block(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := spend(ctx); err != nil {
		return nil, err
	}
	if b, ok := e.mem.get(c); ok {
		e.metrics.hits.WithLabelValues("memory").Inc()
		e.blockHits.Add(1)
		return b, nil
	}
	if e.cfg.Disk != nil {
		if b, ok := e.cfg.Disk.Get(c); ok {
			e.metrics.hits.WithLabelValues("disk").Inc()
			e.blockHits.Add(1)
			e.mem.add(c, b)
			return b, nil
		}
	}
	e.metrics.misses.Inc()
	e.blockMisses.Add(1)
	v, err, _ := e.flight.Do(c.KeyString(), func() (any, error) {
		start := time.Now()
		// Detached from the first caller: others may be waiting on it.
		b, err := e.src.get(context.WithoutCancel(ctx), c)
		e.metrics.upstream.Observe(time.Since(start).Seconds())
		if err != nil {
			return nil, err
		}
		// The source verified b; check again before it is kept for good.
		if err := dag.Verify(c, b); err != nil {
			return nil, err
		}
		e.mem.add(c, b)
		if e.cfg.Disk != nil {
			if err := e.cfg.Disk.Put(c, b); err != nil {
				e.log.Debug("disk cache put", zap.Error(err))
			}
		}
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

func (s *blockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if dag.IsIdentity(c) {
		return blocks.NewBlockWithCid(c.Hash()[2:], c) // identity: the data is the digest
	}
	b, err := s.e.block(ctx, c)
	switch {
	case ipld.IsNotFound(err):
		return nil, err // as the Blockstore contract has it, and boxo's own stores
	case err != nil:
		return nil, fmt.Errorf("edge: %w", err)
	}
	return blocks.NewBlockWithCid(b, c)
}

func (s *blockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	_, err := s.Get(ctx, c)
	if ipld.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (s *blockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	b, err := s.Get(ctx, c)
	if err != nil {
		return -1, err
	}
	return len(b.RawData()), nil
}

// errReadOnly: the gateway never writes, and nothing else may.
var errReadOnly = errors.New("edge: the block store is read-only")

func (s *blockstore) Put(context.Context, blocks.Block) error       { return errReadOnly }
func (s *blockstore) PutMany(context.Context, []blocks.Block) error { return errReadOnly }
func (s *blockstore) DeleteBlock(context.Context, cid.Cid) error    { return errReadOnly }
func (s *blockstore) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid)
	close(ch)
	return ch, nil
}

var _ bstore.Blockstore = (*blockstore)(nil)
