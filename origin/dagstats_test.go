package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// chain builds a chain of n dag-pb nodes, each linking to the one below;
// the lowest links to below (a raw leaf of its own if undefined). It
// returns the top node's CID and the blocks, top first; below is not
// among them unless the chain made it.
func chain(t testing.TB, seed string, n int, below cid.Cid) (cid.Cid, []testBlock) {
	t.Helper()
	var blks []testBlock
	if !below.Defined() {
		leaf := mdag.NewRawNode([]byte(seed + " leaf"))
		below = leaf.Cid()
		blks = append(blks, testBlock{leaf.Cid(), leaf.RawData()})
	}
	for i := range n {
		nd := mdag.NodeWithData([]byte(fmt.Sprintf("%s %d", seed, i)))
		nd.SetCidBuilder(mdag.V1CidPrefix())
		if err := nd.AddRawLink("", &format.Link{Cid: below}); err != nil {
			t.Fatal(err)
		}
		below = nd.Cid()
		blks = append(blks, testBlock{nd.Cid(), nd.RawData()})
	}
	for i, j := 0, len(blks)-1; i < j; i, j = i+1, j-1 {
		blks[i], blks[j] = blks[j], blks[i]
	}
	return below, blks
}

// wide builds a dag-pb node with n links, all to one raw leaf, and returns
// it and the leaf.
func wide(t testing.TB, n int) (cid.Cid, []testBlock) {
	t.Helper()
	leaf := mdag.NewRawNode([]byte("the only leaf"))
	nd := &mdag.ProtoNode{}
	nd.SetCidBuilder(mdag.V1CidPrefix())
	nd.SetData([]byte{0x08, 0x02}) // UnixFS file
	for range n {
		if err := nd.AddRawLink("", &format.Link{Cid: leaf.Cid(), Size: 13}); err != nil {
			t.Fatal(err)
		}
	}
	return nd.Cid(), []testBlock{{nd.Cid(), nd.RawData()}, {leaf.Cid(), leaf.RawData()}}
}

// limitsServer is an origin served over HTTP, and a function uploading a
// CAR of blks under root to it, signed by the test publisher, that returns
// the status and the error message.
func limitsServer(t *testing.T) (*Origin, func(root cid.Cid, blks []testBlock) (int, string)) {
	t.Helper()
	return limitsServerOn(t, "")
}

// limitsServerOn is limitsServer over the database dsn.
func limitsServerOn(t *testing.T, dsn string) (*Origin, func(root cid.Cid, blks []testBlock) (int, string)) {
	t.Helper()
	o := newTestOriginOn(t, dsn)
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(srv.Close)
	n := 0
	return o, func(root cid.Cid, blks []testBlock) (int, string) {
		t.Helper()
		n++
		auth := signUpload(t, testPublisher(t), time.Now(), fmt.Sprintf("nonce-limits-%05d", n), []cid.Cid{root}, blks...)
		code, body := postCAR(t, srv, auth, carBytes(t, []cid.Cid{root}, blks...))
		var e originapi.ErrorResponse
		json.Unmarshal(body, &e)
		return code, e.Error
	}
}

// assertRefused checks that an upload was refused with code and a message
// naming reason, counted under that reason, and that it left nothing: no
// block beyond the stored ones, no usage beyond used.
func assertRefused(t *testing.T, o *Origin, code int, msg string, wantCode int, reason string, stored int, used int64) {
	t.Helper()
	if code != wantCode || !strings.Contains(msg, reason) {
		t.Fatalf("upload: HTTP %d %q; want %d naming %s", code, msg, wantCode, reason)
	}
	if n := storedCount(t, o); n != stored {
		t.Fatalf("refused upload stored blocks: %d stored, want %d", n, stored)
	}
	u, err := o.Usage(context.Background(), testPublisher(t).ID)
	if err != nil || u.UsedBytes != used {
		t.Fatalf("refused upload charged: usage %+v, %v; want %d bytes", u, err, used)
	}
	if got := testutil.ToFloat64(o.metrics.uploads.WithLabelValues("rejected", reason)); got != 1 {
		t.Fatalf("uploads_total{rejected,%s} = %v, want 1", reason, got)
	}
}

// TestUploadRefusesDeepDAG: a 10,000-deep chain of dag-pb nodes is refused
// with 422 dag_too_deep, storing and charging nothing. It was stored, and
// its CAR was then served truncated with status 200: boxo's gateway stops
// at depth 1024 after the headers are sent.
func TestUploadRefusesDeepDAG(t *testing.T) {
	o, upload := limitsServer(t)
	root, blks := chain(t, "deep", 10_000, cid.Undef)
	code, msg := upload(root, blks)
	assertRefused(t, o, code, msg, 422, "dag_too_deep", 0, 0)

	// A chain exactly MaxDAGDepth deep is stored.
	root, blks = chain(t, "deepest allowed", MaxDAGDepth, cid.Undef)
	if code, msg := upload(root, blks); code != 201 {
		t.Fatalf("a DAG %d deep: HTTP %d %s, want 201", MaxDAGDepth, code, msg)
	}
}

// TestUploadRefusesWideBlock: a block with more than MaxLinksPerBlock links
// is refused with 422 too_many_links; one with exactly that many is stored.
func TestUploadRefusesWideBlock(t *testing.T) {
	tests := []struct {
		name     string
		links    int
		wantCode int
	}{
		{"at the limit", MaxLinksPerBlock, 201},
		{"one link over", MaxLinksPerBlock + 1, 422},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, upload := limitsServer(t)
			root, blks := wide(t, tc.links)
			code, msg := upload(root, blks)
			if tc.wantCode != 201 {
				assertRefused(t, o, code, msg, tc.wantCode, "too_many_links", 0, 0)
				return
			}
			if code != 201 {
				t.Fatalf("HTTP %d %s, want 201", code, msg)
			}
		})
	}
}

// TestUploadRefusesDeepOnStored: the depth limit counts the blocks an
// upload links to that were stored before. A 600-deep chain is under no
// limit in itself, but built on a stored 300-deep DAG it is 900 deep and
// refused; a 100-deep one on it is stored. Blocks stored before dag_stats
// existed (legacy, no rows) are walked, and their rows saved.
func TestUploadRefusesDeepOnStored(t *testing.T) {
	tests := []struct {
		name   string
		legacy bool // the stored DAG has no dag_stats rows
	}{
		{"stored heights", false},
		{"legacy blocks walked", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			o, upload := limitsServer(t)
			base, baseBlks := chain(t, "base", 300, cid.Undef)
			if code, msg := upload(base, baseBlks); code != 201 {
				t.Fatalf("base DAG: HTTP %d %s", code, msg)
			}
			var rows int
			o.db.QueryRowContext(ctx, `SELECT count(*) FROM dag_stats`).Scan(&rows)
			if rows != 300 { // the raw leaf has none
				t.Fatalf("%d dag_stats rows after a 300-node chain, want 300", rows)
			}
			if tc.legacy {
				if _, err := o.db.ExecContext(ctx, `DELETE FROM dag_stats`); err != nil {
					t.Fatal(err)
				}
			}
			used := dagSize(baseBlks)

			top, topBlks := chain(t, "on top", 600, base)
			code, msg := upload(top, topBlks)
			assertRefused(t, o, code, msg, 422, "dag_too_deep", len(baseBlks), used)

			top, topBlks = chain(t, "short on top", 100, base)
			if code, msg := upload(top, topBlks); code != 201 {
				t.Fatalf("a 100-deep chain on the stored DAG: HTTP %d %s, want 201", code, msg)
			}
			var height int
			if err := o.db.QueryRowContext(ctx, `SELECT height FROM dag_stats WHERE cid = ?`, statKey(top)).Scan(&height); err != nil || height != 400 {
				t.Fatalf("stored height of the new root %d, %v; want 400", height, err)
			}
			if err := o.db.QueryRowContext(ctx, `SELECT height FROM dag_stats WHERE cid = ?`, statKey(base)).Scan(&height); err != nil || height != 300 {
				t.Fatalf("stored height of the base root %d, %v; want 300", height, err)
			}
		})
	}
}

// TestUploadRefusesLargeDAG: the block count under a block adds the counts
// of the stored blocks it links to; over MaxDAGBlocks the upload is
// refused with 413 dag_too_large. (The stored count is set by hand: two
// million blocks take too long to upload in a unit test.)
func TestUploadRefusesLargeDAG(t *testing.T) { pgtest.Dialects(t, testUploadRefusesLargeDAG) }

func testUploadRefusesLargeDAG(t *testing.T, dsn string) {
	ctx := context.Background()
	o, upload := limitsServerOn(t, dsn)
	base, baseBlks := chain(t, "big", 2, cid.Undef)
	if code, msg := upload(base, baseBlks); code != 201 {
		t.Fatalf("base DAG: HTTP %d %s", code, msg)
	}
	if _, err := o.db.ExecContext(ctx, `UPDATE dag_stats SET blocks = ? WHERE cid = ?`, MaxDAGBlocks, statKey(base)); err != nil {
		t.Fatal(err)
	}
	top, topBlks := chain(t, "over the count", 1, base)
	code, msg := upload(top, topBlks)
	assertRefused(t, o, code, msg, 413, "dag_too_large", len(baseBlks), dagSize(baseBlks))
}
