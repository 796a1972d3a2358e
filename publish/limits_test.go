package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

// TestPushShowsRefusalReason: an upload the origin refuses for its shape
// (here a chain deeper than origin.MaxDAGDepth) fails Push with the
// origin's status and a message naming the reason, dag_too_deep, so the
// publisher sees why (topcdn publish prints it).
func TestPushShowsRefusalReason(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deep.car")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mdag.NewRawNode([]byte("bottom"))
	nodes := []format.Node{leaf}
	below := leaf.Cid()
	for i := range origin.MaxDAGDepth + 1 {
		nd := mdag.NodeWithData([]byte(fmt.Sprintf("level %d", i)))
		nd.SetCidBuilder(mdag.V1CidPrefix())
		if err := nd.AddRawLink("", &format.Link{Cid: below}); err != nil {
			t.Fatal(err)
		}
		below = nd.Cid()
		nodes = append(nodes, nd)
	}
	w, err := storage.NewWritable(f, []cid.Cid{below}, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := w.Put(ctx, nodes[i].Cid().KeyString(), nodes[i].RawData()); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cf, err := OpenCAR(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	key, _ := identity.Generate(nil)
	_, err = newTestOrigin(t).Push(ctx, key, cf, nil)
	var oe *OriginError
	if !errors.As(err, &oe) || oe.Status != 422 || !strings.Contains(err.Error(), "dag_too_deep") {
		t.Fatalf("push of a %d-deep chain: %v; want HTTP 422 naming dag_too_deep", origin.MaxDAGDepth+1, err)
	}
}
