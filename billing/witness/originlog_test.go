package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/originapi"
)

// smallSite is a directory over one raw leaf, as a CAR.
type smallSite struct {
	root, leaf cid.Cid
	car        []byte
}

func newSmallSite(t *testing.T, text string) smallSite {
	t.Helper()
	leaf := mdag.NewRawNode([]byte(text))
	dir := mdag.NodeWithData(unixfs.FolderPBData())
	dir.SetCidBuilder(mdag.V1CidPrefix())
	if err := dir.AddNodeLink("index.html", leaf); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{dir.Cid()}, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []interface {
		Cid() cid.Cid
		RawData() []byte
	}{dir, leaf} {
		if err := w.Put(context.Background(), b.Cid().KeyString(), b.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	return smallSite{root: dir.Cid(), leaf: leaf.Cid(), car: buf.Bytes()}
}

// TestOriginContentBillingLog runs against a real origin: the payer of a
// root is its first uploader, whatever names point at it later (an
// unfunded key's name at another publisher's root does not make it the
// payer); a root a name pointed to stays billable while records of it may
// still come (until its TTL and NameSkew after the name moved on), not
// after; a block inside a site, fetched alone, resolves to the root that
// holds it; a log signed by another key than the origin's is not trusted.
func TestOriginContentBillingLog(t *testing.T) {
	ctx := context.Background()
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	pub, attacker := testkit.Key(t, 90), testkit.Key(t, 91)
	v1, v2 := newSmallSite(t, "version one"), newSmallSite(t, "version two")
	for _, s := range []smallSite{v1, v2} {
		if _, err := o.Ingest(ctx, origin.Upload{Publisher: pub.ID, Roots: []cid.Cid{s.root}}, bytes.NewReader(s.car)); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(k *identity.Key, human string, root cid.Cid, seq uint64) time.Time {
		t.Helper()
		raw := testkit.IPNSRecord(t, k, root, seq, time.Now().Add(time.Hour), ipns.WithMetadata(map[string]any{originapi.RecordNameKey: human}))
		if _, err := o.ClaimName(ctx, human, ipns.NameFromPeer(k.ID), raw); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	claim(pub, "blog", v1.root, 1)
	claim(attacker, "evil", v1.root, 1) // an unfunded key's name at the publisher's root
	moved := claim(pub, "blog", v2.root, 2)

	c := NewOriginContent(srv.URL, nil)
	tests := []struct {
		name, site, root, cid string
		at                    time.Time
		wantRoot              string // "": refused as unpublished
	}{
		{"the attacker's name: the uploader pays", "evil", "", v1.leaf.String(), moved, v1.root.String()},
		{"the current root by name", "blog", "", v2.leaf.String(), moved.Add(time.Hour), v2.root.String()},
		{"the old root, served after the move within its TTL", "blog", v1.root.String(), v1.leaf.String(),
			moved.Add(time.Minute), v1.root.String()},
		{"the old root, found without a root, within its TTL", "blog", "", v1.leaf.String(), moved.Add(time.Minute), v1.root.String()},
		{"the old root long after the move", "blog", v1.root.String(), v1.leaf.String(), moved.Add(time.Hour), ""},
		{"the new root before the name moved there", "blog", v2.root.String(), v2.leaf.String(), moved.Add(-time.Hour), ""},
		{"a block inside a site, alone", "", v2.leaf.String(), v2.leaf.String(), moved, v2.root.String()},
		{"a root by itself", "", v1.root.String(), v1.root.String(), moved, v1.root.String()},
		{"a root no name pointed to is still an uploaded root", "", "", v2.root.String(), time.Time{}, v2.root.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := c.ObjectAt(ctx, tc.site, tc.root, tc.cid, tc.at)
			if tc.wantRoot == "" {
				var re *billingapi.RejectError
				if !errors.As(err, &re) || re.Reason != billingapi.ReasonUnpublished {
					t.Fatalf("%+v, %v; want refused as unpublished", obj, err)
				}
				return
			}
			if err != nil || obj.Root != tc.wantRoot || obj.Publisher != pub.ID {
				t.Fatalf("%+v, %v; want root %s paid by %s", obj, err, tc.wantRoot, pub.ID)
			}
		})
	}

	// The keys' names, from the log's name events.
	names := c.SiteNames(ctx, []string{pub.ID.String(), attacker.ID.String(), testkit.Key(t, 93).ID.String(), "not a key"})
	if len(names) != 2 || names[pub.ID.String()] != "blog" || names[attacker.ID.String()] != "evil" {
		t.Fatalf("site names %v, want blog and evil", names)
	}

	// An origin whose /healthz names another key: its log is not trusted.
	impostor := testkit.Key(t, 92)
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.Write([]byte(`{"peer_id":"` + impostor.ID.String() + `"}`))
			return
		}
		o.Handler().ServeHTTP(w, r)
	}))
	defer fake.Close()
	var re *billingapi.RejectError
	if _, err := NewOriginContent(fake.URL, nil).Object(ctx, "blog", "", v2.leaf.String()); err == nil || errors.As(err, &re) {
		t.Fatalf("a log signed by another key than the origin's: %v, want a transient error", err)
	}
}

// TestOriginContentPlacements: shard placements, moves and flags from the
// billing log: where a shard was when, its size and payer (the payer of
// the root whose striping placed it), flags, and the intervals overlapping
// a time span.
func TestOriginContentPlacements(t *testing.T) {
	ctx := context.Background()
	keys := testKeys(t, 5)
	origin, pub, s1, s2, other := keys[0], keys[1].ID, keys[2].ID, keys[3].ID, keys[4].ID
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	events := []originapi.BillingEvent{
		{ID: 1, Kind: originapi.EventUpload, Root: "r1", Publisher: pub.String(), At: at(0)},
		{ID: 2, Kind: originapi.EventPlace, Shard: "sh", Peer: s1.String(), Segment: 1, Size: 500, Root: "r1", At: at(1)},
		{ID: 3, Kind: originapi.EventUpload, Root: "r2", Publisher: other.String(), At: at(2)},
		{ID: 4, Kind: originapi.EventPlace, Shard: "sh", Peer: s1.String(), Segment: 2, Size: 500, Root: "r2", At: at(3)},
		{ID: 5, Kind: originapi.EventMove, Shard: "sh", Peer: s2.String(), Segment: 1, Size: 500, At: at(10)},
		{ID: 6, Kind: originapi.EventPlace, Shard: "orphan", Peer: s1.String(), Segment: 3, Size: 9, Root: "nobody's", At: at(11)},
		{ID: 7, Kind: originapi.EventFlag, Peer: s2.String(), Shard: "sh", Reason: "bad-bytes", At: at(20)},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte(`{"peer_id":"` + origin.ID.String() + `"}`))
		case "/api/v1/billing/log":
			json.NewEncoder(w).Encode(signedLog(t, origin, r, events))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := NewOriginContent(srv.URL, nil)
	tests := []struct {
		name     string
		shard    string
		peer     peer.ID
		from, to time.Time
		placed   bool
		unknown  bool
	}{
		{"on s1 from its placement", "sh", s1, at(1), at(2), true, false},
		{"on s2 only after the move", "sh", s2, at(4), at(9), false, false},
		{"on s2 after the move", "sh", s2, at(9), at(11), true, false},
		{"on s1 still, by segment 2", "sh", s1, at(30), at(40), true, false},
		{"never on another peer", "sh", other, at(0), at(40), false, false},
		{"a shard never placed", "nope", s1, at(0), at(40), false, true},
		{"a shard of a root nobody pays for", "orphan", s1, at(0), at(40), false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := c.ShardInfo(ctx, tc.shard, tc.peer, tc.from, tc.to)
			if tc.unknown {
				var re *billingapi.RejectError
				if !errors.As(err, &re) || re.Reason != billingapi.ReasonUnknownShard {
					t.Fatalf("%+v, %v; want %s", info, err, billingapi.ReasonUnknownShard)
				}
				return
			}
			if err != nil || info.Placed != tc.placed || info.Size != 500 || info.Payer != pub {
				t.Fatalf("%+v, %v; want placed %v, 500 bytes paid by the first root's uploader", info, err, tc.placed)
			}
		})
	}
	flags, err := c.Flags(ctx)
	if err != nil || len(flags) != 1 || !flags[PeerShard{s2, "sh"}].Equal(at(20)) {
		t.Fatalf("flags %v, %v", flags, err)
	}
	pls, err := c.Placements(ctx, at(12), at(13))
	if err != nil || len(pls) != 2 {
		t.Fatalf("placements %+v, %v; want segment 2 on s1 and segment 1 on s2", pls, err)
	}
	for _, pl := range pls {
		if (pl.Segment == 1 && (pl.Peer != s2 || pl.Payer != pub || !pl.From.Equal(at(10)))) ||
			(pl.Segment == 2 && (pl.Peer != s1 || pl.Payer != other)) {
			t.Errorf("placement %+v", pl)
		}
	}
}
