package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/topcdn/topcdn/dag"
)

// blockSet holds the blocks of an imported DAG. Inner nodes (directories,
// file roots, HAMT shards) are kept in memory; raw file leaves are kept as
// a reference to where they lie in their file and read back on demand.
type blockSet struct {
	mu     sync.Mutex
	inline map[cid.Cid][]byte
	refs   map[cid.Cid]fileRef
}

// fileRef locates a raw leaf inside a file.
type fileRef struct {
	path   string
	offset int64
	size   int
}

func newBlockSet() *blockSet {
	return &blockSet{inline: map[cid.Cid][]byte{}, refs: map[cid.Cid]fileRef{}}
}

func (s *blockSet) putInline(c cid.Cid, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	putNew(s.inline, s.refs, c, data)
}

func (s *blockSet) putRef(c cid.Cid, ref fileRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	putNew(s.refs, s.inline, c, ref)
}

// putNew keeps v for c in m unless c is kept already, in m or in other:
// the first way a block was kept wins.
func putNew[V, W any](m map[cid.Cid]V, other map[cid.Cid]W, c cid.Cid, v V) {
	if _, ok := other[c]; ok {
		return
	}
	if _, ok := m[c]; !ok {
		m[c] = v
	}
}

// size returns the size of block c, or -1 if the set does not hold it.
func (s *blockSet) size(c cid.Cid) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.inline[c]; ok {
		return len(b)
	}
	if r, ok := s.refs[c]; ok {
		return r.size
	}
	return -1
}

// get returns the bytes of block c, reading file leaves from disk and
// checking them against c: a file changed since the import is an error,
// never a wrong block.
func (s *blockSet) get(c cid.Cid) ([]byte, error) {
	s.mu.Lock()
	b, inline := s.inline[c]
	r, ref := s.refs[c]
	s.mu.Unlock()
	switch {
	case inline:
		return b, nil
	case !ref:
		return nil, fmt.Errorf("publish: block %s: %w", c, ipld.ErrNotFound{Cid: c})
	}
	f, err := os.Open(r.path)
	if err != nil {
		return nil, fmt.Errorf("publish: read back %s: %w", c, err)
	}
	defer f.Close()
	data := make([]byte, r.size)
	if _, err := f.ReadAt(data, r.offset); err != nil && !(errors.Is(err, io.EOF) && r.size == 0) {
		return nil, fmt.Errorf("publish: read back block %s from %s: %w (changed since import?)", c, r.path, err)
	}
	if err := dag.Verify(c, data); err != nil {
		return nil, fmt.Errorf("publish: %s changed since import: %w", r.path, err)
	}
	return data, nil
}

// fileDAGService receives the blocks of one file as boxo's importer emits
// them. With raw leaves the importer adds leaves in file order, so each raw
// block's offset is the sum of the sizes before it.
type fileDAGService struct {
	set       *blockSet
	path      string
	rawLeaves bool
	offset    int64
}

func (f *fileDAGService) Add(_ context.Context, nd ipld.Node) error {
	data := nd.RawData()
	if f.rawLeaves && nd.Cid().Type() == cid.Raw {
		f.set.putRef(nd.Cid(), fileRef{path: f.path, offset: f.offset, size: len(data)})
		f.offset += int64(len(data))
		return nil
	}
	f.set.putInline(nd.Cid(), data)
	return nil
}

func (f *fileDAGService) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := f.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (f *fileDAGService) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (f *fileDAGService) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	return getManyNotFound(cs)
}

func (f *fileDAGService) Remove(context.Context, cid.Cid) error       { return nil }
func (f *fileDAGService) RemoveMany(context.Context, []cid.Cid) error { return nil }

// setDAGService keeps directory, symlink and HAMT nodes in a blockSet.
//
// A sharded (HAMT) directory adds each child it is given to its DAG
// service (boxo's hamt.Shard.Swap), not only its own shard nodes. The
// children of a directory are imported files, as linkTargets, and
// directories and symlinks this service has already kept. A linkTarget has
// no bytes to give (RawData on it would dereference nil); its blocks were
// kept when its file was imported, so Add only checks that they were.
type setDAGService struct{ set *blockSet }

func (s setDAGService) Add(_ context.Context, nd ipld.Node) error {
	if lt, ok := nd.(linkTarget); ok {
		if s.set.size(lt.c) < 0 {
			return fmt.Errorf("publish: file root %s was not kept by its import: %w", lt.c, ipld.ErrNotFound{Cid: lt.c})
		}
		return nil
	}
	s.set.putInline(nd.Cid(), nd.RawData())
	return nil
}

func (s setDAGService) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := s.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (s setDAGService) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	data, err := s.set.get(c)
	if err != nil {
		return nil, err
	}
	b, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	return ipld.Decode(b, nil)
}

func (s setDAGService) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	return getManyNotFound(cs)
}

func (s setDAGService) Remove(context.Context, cid.Cid) error       { return nil }
func (s setDAGService) RemoveMany(context.Context, []cid.Cid) error { return nil }

// discard is the DAG service of a hash-only import: it keeps nothing.
type discard struct{}

func (discard) Add(context.Context, ipld.Node) error        { return nil }
func (discard) AddMany(context.Context, []ipld.Node) error  { return nil }
func (discard) Remove(context.Context, cid.Cid) error       { return nil }
func (discard) RemoveMany(context.Context, []cid.Cid) error { return nil }
func (discard) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}
func (discard) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	return getManyNotFound(cs)
}

func getManyNotFound(cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

// dagService returns where directory nodes go: the set, or nowhere for a
// hash-only import.
func dagService(s *blockSet) ipld.DAGService {
	if s == nil {
		return discard{}
	}
	return setDAGService{set: s}
}

var (
	_ ipld.DAGService = (*fileDAGService)(nil)
	_ ipld.DAGService = setDAGService{}
	_ ipld.DAGService = discard{}
)
