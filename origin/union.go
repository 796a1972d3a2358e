package origin

import (
	"context"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-multihash"
)

// unionBlockstore is the origin's view of its content: blocks on local
// disk (uploads not yet striped, or kept), then blocks striped across
// storage peers, read through an erasure.Reader and verified.
type unionBlockstore struct {
	blockstore.Blockstore // local, verifying
	striped               stripedBlocks
}

// stripedBlocks reads the blocks moved to storage peers
// (durability.Keeper). Both methods return an ipld.ErrNotFound for a
// block that is not striped.
type stripedBlocks interface {
	BlockSize(ctx context.Context, c cid.Cid) (int, error)
	ReadBlock(ctx context.Context, c cid.Cid) ([]byte, error)
}

func (u *unionBlockstore) has(ctx context.Context, c cid.Cid) (bool, error) {
	if ok, err := u.Blockstore.Has(ctx, c); ok || err != nil {
		return ok, err
	}
	_, err := u.striped.BlockSize(ctx, c)
	if ipld.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (u *unionBlockstore) getSize(ctx context.Context, c cid.Cid) (int, error) {
	n, err := u.Blockstore.GetSize(ctx, c)
	if err == nil || !ipld.IsNotFound(err) {
		return n, err
	}
	return u.striped.BlockSize(ctx, c)
}

func (u *unionBlockstore) get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := u.Blockstore.Get(ctx, c)
	if err == nil || !ipld.IsNotFound(err) {
		return b, err
	}
	data, err := u.striped.ReadBlock(ctx, c)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// A CIDv0 and the CIDv1 dag-pb sha2-256 CID of the same node name the same
// block (same codec, same hash; kubo and boxo treat them as one), so a
// block stored under one form is found under the other: gateways and
// edges ask for the CIDv1 of content published with CIDv0 links.

func (u *unionBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	ok, err := u.has(ctx, c)
	if alt, hasAlt := otherVersion(c); !ok && err == nil && hasAlt {
		return u.has(ctx, alt)
	}
	return ok, err
}

func (u *unionBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	n, err := u.getSize(ctx, c)
	if alt, hasAlt := otherVersion(c); ipld.IsNotFound(err) && hasAlt {
		if n, err := u.getSize(ctx, alt); err == nil || !ipld.IsNotFound(err) {
			return n, err
		}
	}
	return n, err
}

func (u *unionBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := u.get(ctx, c)
	if alt, hasAlt := otherVersion(c); ipld.IsNotFound(err) && hasAlt {
		ab, aerr := u.get(ctx, alt)
		if aerr == nil {
			return blocks.NewBlockWithCid(ab.RawData(), c) // verified under alt: same hash
		}
		if !ipld.IsNotFound(aerr) {
			return nil, aerr
		}
	}
	return b, err
}

// otherVersion returns the other form of a CID that has two: CIDv0 ↔
// CIDv1 dag-pb with a 32-byte sha2-256 multihash.
func otherVersion(c cid.Cid) (cid.Cid, bool) {
	if c.Version() == 0 {
		return cid.NewCidV1(cid.DagProtobuf, c.Hash()), true
	}
	if p := c.Prefix(); p.Codec == cid.DagProtobuf && p.MhType == multihash.SHA2_256 && p.MhLength == 32 {
		return cid.NewCidV0(c.Hash()), true
	}
	return cid.Undef, false
}

var _ blockstore.Blockstore = (*unionBlockstore)(nil)
