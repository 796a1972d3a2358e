package origin

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// record makes an IPNS record for key pointing at root.
func record(t testing.TB, k *identity.Key, root cid.Cid, seq uint64, eol time.Time, human string) []byte {
	t.Helper()
	var opts []ipns.Option
	if human != "" {
		opts = append(opts, ipns.WithMetadata(map[string]any{originapi.RecordNameKey: human}))
	}
	return testkit.IPNSRecord(t, k, root, seq, eol, opts...)
}

func TestClaimName(t *testing.T) { pgtest.Dialects(t, testClaimName) }

func testClaimName(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	v1, v2 := newTestDAG(t, "one", 2), newTestDAG(t, "two", 2)
	for _, d := range []testDAG{v1, v2} {
		if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
			t.Fatal(err)
		}
	}
	unpublished := newTestDAG(t, "never uploaded", 1)
	alice, _ := identity.Generate(nil)
	mallory, _ := identity.Generate(nil)
	aliceName, malloryName := ipns.NameFromPeer(alice.ID), ipns.NameFromPeer(mallory.ID)
	future := time.Now().Add(time.Hour)

	// forged: Alice's record bytes presented for Mallory's name.
	steps := []struct {
		name    string
		human   string
		ipns    ipns.Name
		raw     []byte
		wantErr error
		wantCID cid.Cid
	}{
		{"first claim", "blog", aliceName, record(t, alice, v1.root, 1, future, "blog"), nil, v1.root},
		{"same record again", "blog", aliceName, record(t, alice, v1.root, 1, future, "blog"), nil, v1.root},
		{"move forward", "blog", aliceName, record(t, alice, v2.root, 2, future, "blog"), nil, v2.root},
		{"roll back", "blog", aliceName, record(t, alice, v1.root, 1, future, "blog"), ErrConflict, v2.root},
		{"same sequence other value", "blog", aliceName, record(t, alice, v1.root, 2, future, "blog"), ErrConflict, v2.root},
		{"expired", "blog", aliceName, record(t, alice, v1.root, 3, time.Now().Add(-time.Minute), "blog"), ErrBadRequest, v2.root},
		{"unpublished content", "blog", aliceName, record(t, alice, unpublished.root, 3, future, "blog"), ErrIncomplete, v2.root},
		{"signed for another name", "blog", aliceName, record(t, alice, v1.root, 3, future, "docs"), ErrBadRequest, v2.root},
		{"no name in record", "blog", aliceName, record(t, alice, v1.root, 3, future, ""), ErrBadRequest, v2.root},
		{"forged", "blog", malloryName, record(t, alice, v1.root, 9, future, "blog"), ErrBadRequest, v2.root},
		{"taken by another key", "blog", malloryName, record(t, mallory, v1.root, 9, future, "blog"), ErrConflict, v2.root},
		{"garbage record", "blog", aliceName, []byte("\x0a\x05hello"), ErrBadRequest, v2.root},
		{"oversized record", "blog", aliceName, bytes.Repeat([]byte{1}, ipns.MaxRecordSize+1), ErrTooLarge, v2.root},
		{"invalid name", "Blog!", aliceName, record(t, alice, v1.root, 3, future, "Blog!"), ErrBadRequest, v2.root},
		{"reserved name", "ipfs", malloryName, record(t, mallory, v1.root, 1, future, "ipfs"), ErrBadRequest, v2.root},
		{"second name for one key", "docs", aliceName, record(t, alice, v1.root, 3, future, "docs"), ErrConflict, v2.root},
	}
	for _, st := range steps {
		_, err := o.ClaimName(ctx, st.human, st.ipns, st.raw)
		if st.wantErr == nil && err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.wantErr != nil && !errors.Is(err, st.wantErr) {
			t.Fatalf("%s: err = %v, want %v", st.name, err, st.wantErr)
		}
		ni, err := o.LookupName(ctx, "blog")
		if err != nil {
			t.Fatalf("%s: lookup: %v", st.name, err)
		}
		if ni.CID != st.wantCID.String() || ni.IPNS != aliceName.String() {
			t.Fatalf("%s: blog -> %s (%s), want %s (%s)", st.name, ni.CID, ni.IPNS, st.wantCID, aliceName)
		}
	}
	// A routing put from the owner moves the bound name too, and is held to
	// the same checks.
	if _, err := o.PutRecord(ctx, aliceName, record(t, alice, unpublished.root, 5, future, "")); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("routing put of unpublished content for a named key: err = %v", err)
	}
	if _, err := o.PutRecord(ctx, aliceName, record(t, alice, v1.root, 5, future, "")); err != nil {
		t.Fatal(err)
	}
	if ni, _ := o.LookupName(ctx, "blog"); ni.CID != v1.root.String() || ni.Sequence != 5 {
		t.Fatalf("after routing put: %+v", ni)
	}
	// An unbound key may publish any valid record, as a routing put.
	if _, err := o.PutRecord(ctx, malloryName, record(t, mallory, unpublished.root, 1, future, "")); err != nil {
		t.Fatal(err)
	}
	names, err := o.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Name != "blog" {
		t.Fatalf("Names = %+v, %v", names, err)
	}
}
