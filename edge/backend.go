package edge

import (
	"context"
	"io"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/path"
)

// rootedBackend is the gateway's backend, loading the manifest of each
// content path's root before reading under it (source.loadRoot): a site
// whose root block is cached still has its other blocks read from the
// storage peers, even after a restart with the origin down.
type rootedBackend struct {
	gateway.IPFSBackend
	src *source
}

func (b rootedBackend) Get(ctx context.Context, p path.ImmutablePath, ranges ...gateway.ByteRange) (gateway.ContentPathMetadata, *gateway.GetResponse, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.Get(ctx, p, ranges...)
}

func (b rootedBackend) GetAll(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, files.Node, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.GetAll(ctx, p)
}

func (b rootedBackend) GetBlock(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, files.File, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.GetBlock(ctx, p)
}

func (b rootedBackend) Head(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, *gateway.HeadResponse, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.Head(ctx, p)
}

func (b rootedBackend) ResolvePath(ctx context.Context, p path.ImmutablePath) (gateway.ContentPathMetadata, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.ResolvePath(ctx, p)
}

func (b rootedBackend) GetCAR(ctx context.Context, p path.ImmutablePath, params gateway.CarParams) (gateway.ContentPathMetadata, io.ReadCloser, error) {
	b.src.loadRoot(ctx, p.RootCid())
	return b.IPFSBackend.GetCAR(ctx, p, params)
}
