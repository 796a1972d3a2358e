package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
// upstream fetch (fetches).
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
	return e.fetches.do(ctx, c.KeyString(), func(ctx context.Context) ([]byte, error) {
		start := time.Now()
		b, err := e.src.get(ctx, c)
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
}

// fetches are the upstream fetches of blocks in progress, by CID:
// concurrent misses of one block make one fetch. A fetch runs for the
// requests waiting on it, and is cancelled when the last of them has left
// (their clients went away): an origin that hangs, or a deep walk, costs
// nothing once nobody waits.
type fetches struct {
	mu sync.Mutex
	m  map[string]*fetch
}

// fetch is one upstream fetch and the requests waiting on it.
type fetch struct {
	done    chan struct{} // closed once data and err are set
	data    []byte
	err     error
	waiters int // guarded by fetches.mu
	cancel  context.CancelFunc
}

// do returns run's answer for key, run once for the concurrent callers
// with that key. It returns ctx's error as soon as ctx ends; run's
// context ends when every caller's has.
func (fs *fetches) do(ctx context.Context, key string, run func(context.Context) ([]byte, error)) ([]byte, error) {
	fs.mu.Lock()
	f, ok := fs.m[key]
	if !ok {
		// Not the first caller's context: others may come to wait on it.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &fetch{done: make(chan struct{}), cancel: cancel}
		if fs.m == nil {
			fs.m = map[string]*fetch{}
		}
		fs.m[key] = f
		go func() {
			f.data, f.err = run(fctx)
			fs.mu.Lock()
			if fs.m[key] == f {
				delete(fs.m, key)
			}
			fs.mu.Unlock()
			cancel()
			close(f.done)
		}()
	}
	f.waiters++
	fs.mu.Unlock()
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		fs.mu.Lock()
		if f.waiters--; f.waiters == 0 {
			f.cancel()
			if fs.m[key] == f {
				delete(fs.m, key) // whoever asks next fetches anew
			}
		}
		fs.mu.Unlock()
		return nil, ctx.Err()
	}
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
		return nil, fmt.Errorf("edge: %w", clientError(s.e.log, "block "+c.String(), err))
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
