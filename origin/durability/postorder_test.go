package durability

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
)

// TestPostOrder: every block comes after all the blocks it links to, each
// once. The DAG shares a block between two parents, the first of which
// dag.Walk lists it under: reversing dag.Walk's order would list the
// second parent before it.
func TestPostOrder(t *testing.T) {
	leaf := cid.NewCidV1(cid.Raw, mustHash(t, "leaf"))
	shared := cid.NewCidV1(cid.Raw, mustHash(t, "shared"))
	a := cid.NewCidV1(cid.DagProtobuf, mustHash(t, "a"))
	root := cid.NewCidV1(cid.DagProtobuf, mustHash(t, "root"))
	links := map[cid.Cid][]cid.Cid{
		root: {shared, a},    // dag.Walk: root, shared, a, leaf
		a:    {shared, leaf}, // reversed: leaf, a, shared, root: a before shared
	}
	got := postOrder(root, links)
	if len(got) != 4 {
		t.Fatalf("post order %v, want the 4 blocks once each", got)
	}
	pos := map[cid.Cid]int{}
	for i, c := range got {
		pos[c] = i
	}
	for parent, children := range links {
		for _, c := range children {
			if pos[c] > pos[parent] {
				t.Errorf("%s listed after its parent %s: %v", c, parent, got)
			}
		}
	}
}

func mustHash(t *testing.T, s string) []byte {
	t.Helper()
	return mdag.NewRawNode([]byte(s)).Cid().Hash()
}

// TestStripeCutShortKeepsDAGsWhole: a stripe job cut short after some of
// its segments (here a peer that stops taking shards) leaves every block
// it gave a row with all its descendants rowed too. Striped parents first,
// it left the root and a directory striped without their leaves: another
// upload, or another origin, would then count the root as stored and
// never send the leaves.
func TestStripeCutShortKeepsDAGsWhole(t *testing.T) {
	pgtest.Dialects(t, testStripeCutShortKeepsDAGsWhole)
}

func testStripeCutShortKeepsDAGsWhole(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 3, StripeConfig{DataShards: 2, ParityShards: 1, ChunkSize: 512, SegmentSize: 1,
		AuditInterval: time.Hour, RepairInterval: time.Hour}) // a segment per block
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	// root → dir → leaves 0, 1; root → leaf 2.
	dir := mdag.NodeWithData([]byte("a directory"))
	root := mdag.NodeWithData([]byte("a site"))
	var leaves []*mdag.RawNode
	for i, s := range []string{"leaf zero", "leaf one", "leaf two"} {
		leaf := mdag.NewRawNode([]byte(s))
		parent := dir
		if i == 2 {
			parent = root
		}
		if err := parent.AddRawLink(s, &format.Link{Cid: leaf.Cid()}); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leaf)
	}
	if err := root.AddRawLink("dir", &format.Link{Cid: dir.Cid()}); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []format.Node{root, dir, leaves[0], leaves[1], leaves[2]} {
		if err := sn.local.Put(ctx, nd); err != nil {
			t.Fatal(err)
		}
	}
	// Peer 0 takes two shards, then refuses: two segments are stored.
	var mu sync.Mutex
	puts := 0
	h := sn.peers[0].Handler()
	sn.mu.Lock()
	sn.lie[0] = func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			mu.Lock()
			puts++
			n := puts
			mu.Unlock()
			if n > 2 {
				http.Error(w, "full", http.StatusServiceUnavailable)
				return
			}
		}
		h.ServeHTTP(w, r)
	}
	sn.mu.Unlock()
	if _, err := sn.kp.stripeRoot(ctx, root.Cid()); err == nil {
		t.Fatal("the job was not cut short")
	}
	rowed := map[cid.Cid]bool{}
	for _, c := range []cid.Cid{root.Cid(), dir.Cid(), leaves[0].Cid(), leaves[1].Cid(), leaves[2].Cid()} {
		if _, _, err := sn.kp.blockRef(ctx, c); err == nil {
			rowed[c] = true
		}
	}
	if len(rowed) == 0 || len(rowed) == 5 {
		t.Fatalf("%d of 5 blocks striped; want the job cut short part-way", len(rowed))
	}
	for c := range rowed {
		b, err := sn.local.Get(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		links, _ := dag.Links(c, b.RawData())
		for _, l := range links {
			if !rowed[l] {
				t.Errorf("%s is striped, but %s under it is not", c, l)
			}
		}
	}
	// The job, retried once the peer takes shards again, completes it.
	sn.mu.Lock()
	delete(sn.lie, 0)
	sn.mu.Unlock()
	if _, err := sn.kp.stripeRoot(ctx, root.Cid()); err != nil {
		t.Fatal(err)
	}
	m, err := sn.kp.Manifest(ctx, root.Cid())
	if err != nil || len(m.Blocks) != 5 || m.Blocks[0].CID != root.Cid().String() {
		t.Fatalf("manifest %+v, %v; want the 5 blocks, root first", m, err)
	}
	if !slices.ContainsFunc(m.Blocks, func(b erasure.BlockRef) bool { return b.CID == leaves[1].Cid().String() }) {
		t.Fatal("a leaf is missing from the manifest")
	}
}
