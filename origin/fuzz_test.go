package origin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// FuzzIngest feeds arbitrary bytes to the CAR upload path. Whatever the
// input: no panic; a rejected upload writes nothing; an accepted one leaves
// every root stored with its whole DAG.
func FuzzIngest(f *testing.F) {
	d := newTestDAG(f, "fuzz", 3)
	full := carBytes(f, []cid.Cid{d.root}, d.blocks...)
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(carBytes(f, []cid.Cid{d.root}, d.blocks[0], testBlock{d.blocks[1].c, []byte("bad")}))
	f.Add(carBytes(f, []cid.Cid{d.root}, d.blocks[1:]...))
	f.Add(carBytes(f, nil))
	f.Add([]byte{})

	o := newTestOrigin(f)
	ctx := context.Background()
	publisher := testPublisher(f).ID
	f.Fuzz(func(t *testing.T, data []byte) {
		before := storedCount(t, o)
		// Sign for the roots the CAR declares, so the fuzzer reaches the
		// blocks (FuzzUploadAuth covers the authorization).
		up := Upload{Publisher: publisher}
		if br, err := car.NewBlockReader(bytes.NewReader(data), car.MaxAllowedHeaderSize(maxCARHeader)); err == nil {
			up.Roots = br.Roots
		}
		res, err := o.Ingest(ctx, up, bytes.NewReader(data))
		if err != nil {
			if httpkit.StatusOf(err) >= 500 {
				t.Fatalf("malformed input gave a server error: %v", err)
			}
			if after := storedCount(t, o); after != before {
				t.Fatalf("rejected upload changed the store: %d -> %d blocks (%v)", before, after, err)
			}
			return
		}
		for _, r := range res.Roots {
			assertComplete(t, o, cid.MustParse(r))
		}
	})
}

// assertComplete walks the DAG under root in the origin's store.
func assertComplete(t *testing.T, o *Origin, root cid.Cid) {
	t.Helper()
	ctx := context.Background()
	seen := map[cid.Cid]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] {
			continue
		}
		seen[c] = true
		b, err := o.blocks.Get(ctx, c)
		if err != nil {
			t.Fatalf("accepted upload left %s unreadable: %v", c, err)
		}
		links, err := dag.Links(c, b.RawData())
		if err != nil {
			continue // unknown codec: a leaf for us
		}
		stack = append(stack, links...)
	}
}

// FuzzPutRecord feeds arbitrary bytes as an IPNS record for a key that
// publishes a name. No panic; an accepted record is valid for the key, has
// a higher sequence than before, and points to stored content.
func FuzzPutRecord(f *testing.F) {
	key, err := identity.Unmarshal(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	name := ipns.NameFromPeer(key.ID)
	o := newTestOrigin(f)
	ctx := context.Background()
	d := newTestDAG(f, "fuzz-record", 2)
	if _, err := ingest(f, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		f.Fatal(err)
	}
	far := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := o.ClaimName(ctx, "fuzz", name, record(f, key, d.root, 1, far, "fuzz")); err != nil {
		f.Fatal(err)
	}
	leaf := mdag.NewRawNode([]byte("unpublished"))
	for seq := uint64(0); seq < 4; seq++ {
		f.Add(record(f, key, d.root, seq, far, ""))
		f.Add(record(f, key, leaf.Cid(), seq+2, far, "fuzz"))
	}
	f.Add([]byte("\x0a\x00"))

	f.Fuzz(func(t *testing.T, raw []byte) {
		before, _ := o.LookupName(ctx, "fuzz")
		changed, err := o.PutRecord(ctx, name, raw)
		if err != nil {
			if httpkit.StatusOf(err) >= 500 {
				t.Fatalf("bad record gave a server error: %v", err)
			}
			if after, _ := o.LookupName(ctx, "fuzz"); *after != *before {
				t.Fatalf("rejected record changed the name: %+v -> %+v", before, after)
			}
			return
		}
		if !changed {
			return
		}
		rec, err := ipns.UnmarshalRecord(raw)
		if err != nil {
			t.Fatalf("accepted an unparsable record: %v", err)
		}
		if err := ipns.ValidateWithName(rec, name); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		after, _ := o.LookupName(ctx, "fuzz")
		if after.Sequence <= before.Sequence {
			t.Fatalf("sequence went %d -> %d", before.Sequence, after.Sequence)
		}
		if ok, _ := o.blocks.Has(ctx, cid.MustParse(after.CID)); !ok {
			t.Fatalf("name moved to unstored content %s", after.CID)
		}
	})
}

// fuzzKey is a fixed ed25519 key so the seed corpus stays valid across runs.
var fuzzKey = []byte{
	0x08, 0x01, 0x12, 0x40, 0x93, 0x59, 0x9c, 0x18, 0xa2, 0x4e, 0xa0, 0x4f, 0x59, 0x45, 0x32, 0x97,
	0xe9, 0x22, 0x78, 0x96, 0x8c, 0x6a, 0x4f, 0x17, 0x34, 0x24, 0x53, 0xf6, 0x63, 0x99, 0x31, 0xd6,
	0x34, 0x36, 0xfb, 0xef, 0xf7, 0x4d, 0xea, 0x0f, 0x3e, 0x8a, 0x0e, 0x09, 0x2f, 0xa9, 0x59, 0x14,
	0x12, 0x86, 0x54, 0xc1, 0xd6, 0xba, 0x0d, 0x90, 0x25, 0x78, 0x21, 0xb9, 0x87, 0x1b, 0x08, 0x72,
	0x50, 0x2f, 0xac, 0x2e,
}

// FuzzUploadAuth feeds arbitrary strings to the upload authorization
// parser at a fixed clock. Whatever the input: no panic, a client error
// (400, 401 or 403) if refused; if accepted, an envelope of TypeUpload
// whose signature verifies for the publisher returned, signed within
// UploadSkew, naming 1 to maxRoots roots and a SHA-256 of the blocks.
func FuzzUploadAuth(f *testing.F) {
	key := testPublisher(f)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d := newTestDAG(f, "fuzz-auth", 2)
	roots := []cid.Cid{d.root}
	f.Add(signUpload(f, key, now, "fuzz-nonce-0000001", roots, d.blocks...))
	f.Add(signUpload(f, key, now.Add(-time.Hour), "fuzz-nonce-0000002", roots, d.blocks...))
	f.Add(signUpload(f, key, now, "short", roots))
	f.Add(signUpload(f, key, now, "fuzz-nonce-0000003", nil))
	if env, err := key.Sign("topcdn/heartbeat/v1", map[string]string{"roots": d.root.String()}); err == nil {
		s, _ := env.Encode()
		f.Add(s)
	}
	f.Add("")

	f.Fuzz(func(t *testing.T, header string) {
		up, auth, err := parseUploadAuth(header, now)
		if err != nil {
			if code := httpkit.StatusOf(err); code != 400 && code != 401 && code != 403 {
				t.Fatalf("bad authorization gave HTTP %d: %v", code, err)
			}
			return
		}
		env, err := identity.DecodeEnvelope(header)
		if err != nil {
			t.Fatalf("accepted an undecodable header: %v", err)
		}
		var again originapi.UploadAuthorization
		signer, err := env.Open(originapi.TypeUpload, &again)
		if err != nil || signer != up.Publisher {
			t.Fatalf("accepted an envelope that does not open for %s: %v", up.Publisher, err)
		}
		if d := now.Sub(auth.Time); d > originapi.UploadSkew || d < -originapi.UploadSkew {
			t.Fatalf("accepted an authorization %s off the clock", d)
		}
		if len(up.Roots) == 0 || len(up.Roots) > maxRoots || len(up.BlocksDigest) != sha256.Size {
			t.Fatalf("accepted %d roots and a %d-byte digest", len(up.Roots), len(up.BlocksDigest))
		}
	})
}
