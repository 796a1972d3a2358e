package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-varint"
	"github.com/topcdn/topcdn/dag"
)

// Source is a DAG to upload: its roots, its blocks in the order to send
// them, and a way to read each block back, verified.
type Source interface {
	// Roots are the DAG's roots; a named publish uses the first.
	Roots() []cid.Cid
	// Blocks lists every block once, in upload order.
	Blocks() ([]cid.Cid, error)
	// Size returns the size of block c, or -1 if the source lacks it.
	Size(c cid.Cid) int
	// Get returns the bytes of block c, checked against c.
	Get(c cid.Cid) ([]byte, error)
}

// Roots returns the imported root.
func (d *DAG) Roots() []cid.Cid { return []cid.Cid{d.Root} }

// Blocks lists the imported DAG's blocks depth-first from the root, parents
// before children (the order of a Trustless Gateway CAR).
func (d *DAG) Blocks() ([]cid.Cid, error) {
	if d.blocks == nil {
		return nil, errors.New("publish: DAG was imported hash-only; nothing to upload")
	}
	out, err := dag.Walk(context.Background(), d.Root, func(_ context.Context, c cid.Cid) ([]byte, error) {
		return d.blocks.get(c)
	})
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	return out, nil
}

// Size returns the size of block c, or -1.
func (d *DAG) Size(c cid.Cid) int {
	if d.blocks == nil {
		return -1
	}
	return d.blocks.size(c)
}

// Get returns block c, re-reading file leaves from disk and verifying them.
func (d *DAG) Get(c cid.Cid) ([]byte, error) {
	if d.blocks == nil {
		return nil, errors.New("publish: DAG was imported hash-only; nothing to upload")
	}
	return d.blocks.get(c)
}

// CARFile is a Source reading an existing CAR file (v1 or v2), as
// `ipfs dag import` would: any IPLD content, not only UnixFS.
type CARFile struct {
	f     *os.File
	roots []cid.Cid
	order []cid.Cid
	index map[cid.Cid]carEntry
}

type carEntry struct {
	offset int64 // of the block data in the file
	size   int
}

// OpenCAR indexes the CAR file at path. Every block is verified when it is
// read for upload.
func OpenCAR(path string) (*CARFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	cf := &CARFile{f: f, index: map[cid.Cid]carEntry{}}
	if err := cf.scan(); err != nil {
		f.Close()
		return nil, fmt.Errorf("publish: CAR %s: %w", path, err)
	}
	return cf, nil
}

func (cf *CARFile) scan() error {
	br, err := car.NewBlockReader(cf.f)
	if err != nil {
		return err
	}
	if len(br.Roots) == 0 {
		return errors.New("CAR has no root")
	}
	cf.roots = br.Roots
	for {
		meta, err := br.SkipNext()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("after %d blocks: %w", len(cf.order), err)
		}
		if meta.Size > dag.MaxBlockSize {
			return fmt.Errorf("block %s is %d bytes, over the 2 MiB limit", meta.Cid, meta.Size)
		}
		if _, dup := cf.index[meta.Cid]; dup || dag.IsIdentity(meta.Cid) {
			continue
		}
		cidLen := uint64(meta.Cid.ByteLen())
		off := meta.SourceOffset + uint64(varint.UvarintSize(meta.Size+cidLen)) + cidLen
		cf.index[meta.Cid] = carEntry{offset: int64(off), size: int(meta.Size)}
		cf.order = append(cf.order, meta.Cid)
	}
}

// Roots returns the CAR header's roots.
func (cf *CARFile) Roots() []cid.Cid { return cf.roots }

// Blocks lists the CAR's blocks in file order.
func (cf *CARFile) Blocks() ([]cid.Cid, error) { return cf.order, nil }

// Size returns the size of block c, or -1.
func (cf *CARFile) Size(c cid.Cid) int {
	if e, ok := cf.index[c]; ok {
		return e.size
	}
	return -1
}

// Get reads block c from the file and verifies it.
func (cf *CARFile) Get(c cid.Cid) ([]byte, error) {
	e, ok := cf.index[c]
	if !ok {
		return nil, fmt.Errorf("publish: block %s not in CAR", c)
	}
	data := make([]byte, e.size)
	if _, err := cf.f.ReadAt(data, e.offset); err != nil && e.size > 0 {
		return nil, fmt.Errorf("publish: read %s: %w", c, err)
	}
	if err := dag.Verify(c, data); err != nil {
		return nil, fmt.Errorf("publish: CAR holds a bad block: %w", err)
	}
	return data, nil
}

// Close closes the CAR file.
func (cf *CARFile) Close() error { return cf.f.Close() }

var (
	_ Source = (*DAG)(nil)
	_ Source = (*CARFile)(nil)
)
