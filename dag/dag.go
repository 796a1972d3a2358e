package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	mh "github.com/multiformats/go-multihash"
)

// MaxBlockSize is the largest block any topcdn party accepts: 2 MiB, the
// limit of the IPFS Trustless Gateway and bitswap.
const MaxBlockSize = 2 << 20

// ErrHashMismatch is returned by Verify when bytes do not hash to their CID.
var ErrHashMismatch = errors.New("block data does not match its CID")

// ErrTooLarge is returned by Verify for blocks larger than MaxBlockSize.
var ErrTooLarge = errors.New("block larger than 2 MiB")

// ErrUnknownCodec is returned by Links for a codec it cannot decode.
var ErrUnknownCodec = errors.New("unknown codec")

// Verify checks that data is at most MaxBlockSize bytes and hashes to c.
func Verify(c cid.Cid, data []byte) error {
	if len(data) > MaxBlockSize {
		return fmt.Errorf("%s: %w (%d bytes)", c, ErrTooLarge, len(data))
	}
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("%s: hash block: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("%s: %w", c, ErrHashMismatch)
	}
	return nil
}

// IsIdentity reports whether c is an identity CID, whose data is inlined in
// the CID itself and never needs storing or fetching.
func IsIdentity(c cid.Cid) bool {
	return c.Prefix().MhType == mh.IDENTITY
}

// Links returns the CIDs that the block c (with bytes data) links to, in
// the order they appear. Raw blocks have no links. For codecs Links does
// not know it returns ErrUnknownCodec: such a block cannot be walked.
func Links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Type() {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			return nil, fmt.Errorf("%s: decode dag-pb: %w", c, err)
		}
		links := nd.Links()
		out := make([]cid.Cid, len(links))
		for i, l := range links {
			out[i] = l.Cid
		}
		return out, nil
	case cid.DagCBOR:
		return primeLinks(c, data, dagcbor.Decode)
	case cid.DagJSON:
		return primeLinks(c, data, dagjson.Decode)
	default:
		return nil, fmt.Errorf("%s: %w %#x", c, ErrUnknownCodec, c.Type())
	}
}

func primeLinks(c cid.Cid, data []byte, decode codec.Decoder) ([]cid.Cid, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := decode(nb, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("%s: decode: %w", c, err)
	}
	links, err := traversal.SelectLinks(nb.Build())
	if err != nil {
		return nil, fmt.Errorf("%s: select links: %w", c, err)
	}
	out := make([]cid.Cid, 0, len(links))
	for _, l := range links {
		cl, ok := l.(cidlink.Link)
		if !ok {
			return nil, fmt.Errorf("%s: link %v is not a CID", c, l)
		}
		out = append(out, cl.Cid)
	}
	return out, nil
}

// Walk lists the DAG under root depth-first, parents before children and
// each block once: the block order of a Trustless Gateway CAR with
// dag-scope=all. get returns a block's bytes; it is not called for raw and
// identity blocks, which have no links (identity blocks are not listed).
// A block of a codec Links does not know is listed as a leaf. Walk stops
// with ctx's error when ctx ends, and with get's error, wrapped, when a
// block cannot be had.
func Walk(ctx context.Context, root cid.Cid, get func(context.Context, cid.Cid) ([]byte, error)) ([]cid.Cid, error) {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] || IsIdentity(c) {
			continue
		}
		seen[c] = true
		out = append(out, c)
		if c.Type() == cid.Raw {
			continue
		}
		data, err := get(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("walk %s: %w", c, err)
		}
		links, err := Links(c, data)
		if errors.Is(err, ErrUnknownCodec) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	return out, nil
}
