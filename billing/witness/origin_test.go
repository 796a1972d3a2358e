package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

// testSite is a published site as a fake origin serves it: a directory
// holding a raw leaf and a file node that declares 1 MiB over a small
// leaf, striped on three storage peers.
type testSite struct {
	root, leaf, file cid.Cid
	car              []byte
	blockBytes       int64 // of every block: the DAG of the root
	manifest         *identity.Envelope
	shards           []erasure.Shard
	shardSize        int64
}

// newTestSite builds the site, its CAR and its manifest signed by origin,
// its shards on peers.
func newTestSite(t *testing.T, origin *identity.Key, peers []peer.ID) testSite {
	t.Helper()
	leaf := mdag.NewRawNode(bytes.Repeat([]byte("a"), 1000))
	fileLeaf := mdag.NewRawNode([]byte("the start of a large file"))
	file := mdag.NodeWithData(unixfs.FilePBData(nil, 1<<20)) // the publisher's word
	file.SetCidBuilder(mdag.V1CidPrefix())
	if err := file.AddNodeLink("", fileLeaf); err != nil {
		t.Fatal(err)
	}
	dir := mdag.NodeWithData(unixfs.FolderPBData())
	dir.SetCidBuilder(mdag.V1CidPrefix())
	if err := dir.AddNodeLink("a.txt", leaf); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddNodeLink("big.bin", file); err != nil {
		t.Fatal(err)
	}
	s := testSite{root: dir.Cid(), leaf: leaf.Cid(), file: file.Cid()}
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{s.root}, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	var segment []byte
	for _, nd := range []interface {
		Cid() cid.Cid
		RawData() []byte
	}{dir, leaf, file, fileLeaf} {
		if err := w.Put(context.Background(), nd.Cid().KeyString(), nd.RawData()); err != nil {
			t.Fatal(err)
		}
		segment = append(segment, nd.RawData()...)
	}
	s.blockBytes = int64(len(segment))
	s.car = buf.Bytes()
	st, err := erasure.New(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := st.Store(context.Background(), segment, peers, discardShards{})
	if err != nil {
		t.Fatal(err)
	}
	m := erasure.Manifest{Root: s.root.String(), Version: 1, Created: t0, DataShards: 2, ParityShards: 1,
		ChunkSize: st.ChunkSize(), Segments: []erasure.Segment{seg}}
	if s.manifest, err = m.Sign(origin); err != nil {
		t.Fatal(err)
	}
	s.shards, s.shardSize = seg.Shards, seg.ShardSize
	return s
}

// discardShards is an erasure.ShardStore that keeps nothing.
type discardShards struct{}

func (discardShards) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	return nil
}

func (discardShards) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	return nil, errors.New("discarded")
}

var _ erasure.ShardStore = discardShards{}

// fakeOrigin serves the origin's API for one site named "blog", or 503s
// while down is set.
func fakeOrigin(t *testing.T, origin *identity.Key, pub peer.ID, site testSite, carBody []byte, down *atomic.Bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/healthz":
			json.NewEncoder(w).Encode(map[string]string{"peer_id": origin.ID.String()})
		case "/api/v1/billing/log":
			json.NewEncoder(w).Encode(signedLog(t, origin, r, []originapi.BillingEvent{
				{ID: 1, Kind: originapi.EventUpload, Root: site.root.String(), Publisher: pub.String(), At: t0},
				{ID: 2, Kind: originapi.EventName, Name: "blog", IPNS: ipns.NameFromPeer(pub).String(), Publisher: pub.String(),
					Root: site.root.String(), Seq: 1, At: t0},
			}))
		case "/ipfs/" + site.root.String():
			if r.URL.Query().Get("format") != "car" {
				http.Error(w, "want a CAR", http.StatusBadRequest)
				return
			}
			w.Write(carBody)
		case "/api/v1/manifests/" + site.root.String():
			json.NewEncoder(w).Encode(site.manifest)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// signedLog answers a request for the billing log holding events (IDs
// 1, 2, …), signed by key.
func signedLog(t *testing.T, key *identity.Key, r *http.Request, events []originapi.BillingEvent) *identity.Envelope {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	page := originapi.BillingLog{Since: since, To: since, Last: int64(len(events)), Events: []originapi.BillingEvent{}}
	if since < int64(len(events)) {
		page.Events, page.To = events[since:], page.Last
	}
	env, err := key.Sign(originapi.TypeBillingLog, page)
	if err != nil {
		t.Error(err)
	}
	return env
}

// testKeys returns n fixed keys: the origin, the publisher, then storage
// peers.
func testKeys(t *testing.T, n int) []*identity.Key {
	t.Helper()
	keys := make([]*identity.Key, n)
	for i := range keys {
		keys[i] = testkit.Key(t, byte(80+i))
	}
	return keys
}

func TestOriginContentObject(t *testing.T) {
	keys := testKeys(t, 5)
	origin, pub := keys[0], keys[1].ID
	site := newTestSite(t, origin, []peer.ID{keys[2].ID, keys[3].ID, keys[4].ID})
	var down atomic.Bool
	o := NewOriginContent(fakeOrigin(t, origin, pub, site, site.car, &down).URL+"/", nil)
	elsewhere := mdag.NewRawNode([]byte("published nowhere")).Cid().String()
	tests := []struct {
		name, site, root, cid string
		want                  int64 // MaxBytes; 0: refused as unpublished
	}{
		{"a raw leaf by name", "blog", "", site.leaf.String(), 1000},
		{"a raw leaf by name and root", "blog", site.root.String(), site.leaf.String(), 1000},
		{"a raw leaf by root alone", "", site.root.String(), site.leaf.String(), 1000},
		{"a file: its declared size, above its DAG", "blog", "", site.file.String(), 1 << 20},
		{"the root: the bytes of its DAG", "blog", "", site.root.String(), site.blockBytes},
		{"an unknown name", "shop", "", site.leaf.String(), 0},
		{"a root the name never pointed to", "blog", site.leaf.String(), site.leaf.String(), 0},
		{"a CID outside the site", "blog", "", elsewhere, 0},
		{"a block inside a site, alone (a router's probe)", "", "", site.leaf.String(), 1000},
		{"a block inside a site, as its own root", "", site.leaf.String(), site.leaf.String(), 1000},
		{"an object of no site, alone", "", "", elsewhere, 0},
		{"not a CID", "blog", "", "nope", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := o.Object(context.Background(), tc.site, tc.root, tc.cid)
			if tc.want == 0 {
				var re *billingapi.RejectError
				if !errors.As(err, &re) || re.Reason != billingapi.ReasonUnpublished {
					t.Fatalf("object %+v, err %v; want refused as %s", obj, err, billingapi.ReasonUnpublished)
				}
				return
			}
			if err != nil || obj.Publisher != pub || obj.Root != site.root.String() {
				t.Fatalf("object %+v, %v", obj, err)
			}
			if obj.MaxBytes != tc.want {
				t.Fatalf("MaxBytes %d, want %d", obj.MaxBytes, tc.want)
			}
		})
	}

	// What is indexed stays known while the origin is down; what is not
	// yet is not refused but transient.
	down.Store(true)
	if _, err := o.Object(context.Background(), "blog", "", site.leaf.String()); err != nil {
		t.Fatalf("indexed object with the origin down: %v", err)
	}
	fresh := NewOriginContent(o.pool.First(), nil)
	var re *billingapi.RejectError
	if _, err := fresh.Object(context.Background(), "blog", "", site.leaf.String()); err == nil || errors.As(err, &re) {
		t.Fatalf("origin down, nothing indexed: %v, want a transient error", err)
	}
}

// TestOriginContentVerifiesCAR: a site whose CAR holds a block that does
// not match its CID is not indexed, and nothing of it is refused: billing
// answers 503 and asks again.
func TestOriginContentVerifiesCAR(t *testing.T) {
	keys := testKeys(t, 5)
	origin, pub := keys[0], keys[1].ID
	site := newTestSite(t, origin, []peer.ID{keys[2].ID, keys[3].ID, keys[4].ID})
	tampered := bytes.Replace(site.car, bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), 1)
	if bytes.Equal(tampered, site.car) {
		t.Fatal("the leaf is not in the CAR")
	}
	var down atomic.Bool
	o := NewOriginContent(fakeOrigin(t, origin, pub, site, tampered, &down).URL, nil)
	_, err := o.Object(context.Background(), "blog", "", site.leaf.String())
	var re *billingapi.RejectError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("tampered CAR: %v, want a transient error", err)
	}
}

func TestOriginContentShards(t *testing.T) {
	ctx := context.Background()
	keys := testKeys(t, 5)
	origin, pub := keys[0], keys[1].ID
	holders := []peer.ID{keys[2].ID, keys[3].ID, keys[4].ID}
	site := newTestSite(t, origin, holders)
	var down atomic.Bool
	o := NewOriginContent(fakeOrigin(t, origin, pub, site, site.car, &down).URL, nil)

	if ids, err := o.OriginIDs(ctx); err != nil || len(ids) != 1 || ids[0] != origin.ID {
		t.Fatalf("origin IDs %s, %v; want %s", ids, err, origin.ID)
	}
	hs, err := o.Holdings(ctx)
	if err != nil || len(hs) != len(holders) {
		t.Fatalf("holdings %+v, %v", hs, err)
	}
	for _, h := range hs {
		if h.Publisher != pub || h.Bytes != site.shardSize {
			t.Errorf("holding %+v, want %d bytes of %s", h, site.shardSize, pub)
		}
	}
	for _, sh := range site.shards {
		if p, err := o.ShardPublisher(ctx, sh.ID); err != nil || p != pub {
			t.Errorf("shard %s: publisher %s, %v", sh.ID, p, err)
		}
	}
	var re *billingapi.RejectError
	if _, err := o.ShardPublisher(ctx, "no-such-shard"); !errors.As(err, &re) || re.Reason != billingapi.ReasonUnknownShard {
		t.Errorf("unknown shard: %v, want %s", err, billingapi.ReasonUnknownShard)
	}
	roots, err := o.RootShards(ctx)
	if err != nil || len(roots) != 1 || len(roots[site.root.String()]) != len(site.shards) {
		t.Fatalf("root shards %v, %v", roots, err)
	}

	// The origin down: holdings, read afresh, fail without refusing
	// anything; the shards of striped roots read a moment ago are kept.
	down.Store(true)
	if _, err := o.Holdings(ctx); err == nil || errors.As(err, &re) {
		t.Fatalf("holdings with the origin down: %v, want a transient error", err)
	}
	if roots, err := o.RootShards(ctx); err != nil || len(roots[site.root.String()]) != len(site.shards) {
		t.Fatalf("root shards with the origin down: %v, %v; want the last read", roots, err)
	}
	if _, err := NewOriginContent(o.pool.First(), nil).RootShards(ctx); err == nil {
		t.Fatal("root shards never read, origin down: no error")
	}
}
