package dag

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

func cidOf(t *testing.T, codec uint64, data []byte) cid.Cid {
	t.Helper()
	c, err := cid.Prefix{Version: 1, Codec: codec, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerify(t *testing.T) {
	data := []byte("hello")
	good := cidOf(t, cid.Raw, data)
	big := bytes.Repeat([]byte{1}, MaxBlockSize+1)
	tests := []struct {
		name string
		c    cid.Cid
		data []byte
		want error
	}{
		{"match", good, data, nil},
		{"mismatch", good, []byte("hellO"), ErrHashMismatch},
		{"too large", cidOf(t, cid.Raw, big), big, ErrTooLarge},
		{"exactly 2 MiB", cidOf(t, cid.Raw, big[:MaxBlockSize]), big[:MaxBlockSize], nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.c, tc.data)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestLinks(t *testing.T) {
	leafA := mdag.NewRawNode([]byte("a"))
	leafB := mdag.NewRawNode([]byte("b"))
	pb := &mdag.ProtoNode{}
	pb.SetCidBuilder(mdag.V1CidPrefix())
	pb.AddNodeLink("a", leafA)
	pb.AddNodeLink("b", leafB)

	// dag-cbor {"x": link(a), "y": [link(b)]}; dag-json the same.
	cbor := append([]byte{0xa2, 0x61, 'x', 0xd8, 0x2a, 0x58, byte(len(leafA.Cid().Bytes()) + 1), 0x00}, leafA.Cid().Bytes()...)
	cbor = append(cbor, 0x61, 'y', 0x81, 0xd8, 0x2a, 0x58, byte(len(leafB.Cid().Bytes())+1), 0x00)
	cbor = append(cbor, leafB.Cid().Bytes()...)
	json := []byte(`{"x":{"/":"` + leafA.Cid().String() + `"},"y":[{"/":"` + leafB.Cid().String() + `"}]}`)

	tests := []struct {
		name    string
		c       cid.Cid
		data    []byte
		want    []cid.Cid
		wantErr bool
	}{
		{"raw", leafA.Cid(), leafA.RawData(), nil, false},
		{"dag-pb", pb.Cid(), pb.RawData(), []cid.Cid{leafA.Cid(), leafB.Cid()}, false},
		{"dag-cbor", cidOf(t, cid.DagCBOR, cbor), cbor, []cid.Cid{leafA.Cid(), leafB.Cid()}, false},
		{"dag-json", cidOf(t, cid.DagJSON, json), json, []cid.Cid{leafA.Cid(), leafB.Cid()}, false},
		{"malformed dag-pb", cidOf(t, cid.DagProtobuf, []byte{0xff, 0xff}), []byte{0xff, 0xff}, nil, true},
		{"malformed dag-cbor", cidOf(t, cid.DagCBOR, []byte{0xa2}), []byte{0xa2}, nil, true},
		{"unknown codec", cidOf(t, 0x300000, []byte("?")), []byte("?"), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Links(tc.c, tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Links err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Links = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("Links = %v, want %v", got, tc.want)
				}
			}
		})
	}
	if _, err := Links(cidOf(t, 0x300000, nil), nil); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("unknown codec err = %v", err)
	}
}

// TestWalk: a DAG with a shared child and a raw leaf is listed parents
// first, each block once, in link order; a missing block stops the walk
// with its error; an ended context stops it too.
func TestWalk(t *testing.T) {
	leaf := []byte("leaf")
	leafC := cidOf(t, cid.Raw, leaf)
	shared := mdag.NodeWithData([]byte("shared"))
	shared.AddRawLink("leaf", &format.Link{Cid: leafC, Size: uint64(len(leaf))})
	a := mdag.NodeWithData([]byte("a"))
	a.AddNodeLink("shared", shared)
	root := mdag.NodeWithData([]byte("root"))
	root.AddNodeLink("a", a)
	root.AddNodeLink("shared", shared)
	blocks := map[cid.Cid][]byte{root.Cid(): root.RawData(), a.Cid(): a.RawData(), shared.Cid(): shared.RawData()}
	get := func(_ context.Context, c cid.Cid) ([]byte, error) {
		b, ok := blocks[c]
		if !ok {
			return nil, errNotHere
		}
		return b, nil
	}
	got, err := Walk(context.Background(), root.Cid(), get)
	if err != nil {
		t.Fatal(err)
	}
	want := []cid.Cid{root.Cid(), a.Cid(), shared.Cid(), leafC}
	if !slices.Equal(got, want) {
		t.Fatalf("walk = %v, want %v", got, want)
	}
	delete(blocks, shared.Cid())
	if _, err := Walk(context.Background(), root.Cid(), get); !errors.Is(err, errNotHere) {
		t.Fatalf("walk with a block missing: %v, want errNotHere", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Walk(ctx, root.Cid(), get); !errors.Is(err, context.Canceled) {
		t.Fatalf("walk with an ended context: %v", err)
	}
}

var errNotHere = errors.New("not here")
