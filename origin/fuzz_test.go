package origin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/origin/origindb"
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

// FuzzNameChangesQuery feeds arbitrary query strings to the parameters of
// GET /api/v1/names/changes. No panic; a refusal is a 400; what is taken
// is within its bounds.
func FuzzNameChangesQuery(f *testing.F) {
	for _, q := range []string{"", "since=0", "since=12&limit=64&wait=30", "since=&wait=25", "since=-1", "limit=65",
		"wait=31", "wait=1s", "since=99999999999999999999", "since=1&since=2", "limit=%00"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		since, limit, wait, err := parseNameChangesQuery(q)
		if err != nil {
			if code := httpkit.StatusOf(err); code != http.StatusBadRequest {
				t.Fatalf("bad parameters gave HTTP %d: %v", code, err)
			}
			return
		}
		if since < -1 || (since == -1) != (q.Get("since") == "") {
			t.Fatalf("since %d from %q", since, q.Get("since"))
		}
		if limit < 1 || limit > originapi.MaxNameChangesPage || wait < 0 || wait > originapi.MaxNameChangesWait {
			t.Fatalf("limit %d, wait %s from %q", limit, wait, raw)
		}
	})
}

// FuzzPurge feeds arbitrary bodies to POST /api/v1/names/fuzz/purge at a
// fixed clock, "fuzz" being published by fuzzKey. No panic; a refusal is a
// client error and appends nothing; a purge taken is appended once, opens
// as a purge of "fuzz" signed by its key within PurgeSkew, and its nonce
// is never taken twice.
func FuzzPurge(f *testing.F) {
	key, err := identity.Unmarshal(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	name := ipns.NameFromPeer(key.ID)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	o := newTestOrigin(f)
	o.now = func() time.Time { return now }
	ctx := context.Background()
	d := newTestDAG(f, "fuzz-purge", 1)
	if _, err := ingest(f, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		f.Fatal(err)
	}
	if _, err := o.ClaimName(ctx, "fuzz", name, record(f, key, d.root, 1, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), "fuzz")); err != nil {
		f.Fatal(err)
	}
	for _, p := range fuzzPurges(name.String(), now) {
		env, err := key.Sign(originapi.TypePurge, p)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(env)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"topcdn/purge/v1","signer":"","body":"","sig":""}`))
	f.Add([]byte("{}"))

	taken := map[string]bool{}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, before, _ := o.changes.state()
		id, err := func() (int64, error) {
			env, err := decodePurge(bytes.NewReader(body))
			if err != nil {
				return 0, err
			}
			return o.Purge(ctx, "fuzz", env)
		}()
		_, after, _ := o.changes.state()
		if err != nil {
			if code := httpkit.StatusOf(err); code < 400 || code >= 500 {
				t.Fatalf("a bad purge gave HTTP %d: %v", code, err)
			}
			if after != before {
				t.Fatalf("a refused purge was appended (%d -> %d): %v", before, after, err)
			}
			return
		}
		if id != before+1 || after != id {
			t.Fatalf("purge taken as change %d, stream %d -> %d", id, before, after)
		}
		cs, err := origindb.Changes(ctx, o.db, before, after, 1, 1<<30)
		if err != nil || len(cs) != 1 {
			t.Fatalf("change %d: %v, %v", id, cs, err)
		}
		p, err := originapi.OpenPurge(cs[0].Purge)
		if err != nil {
			t.Fatalf("took a purge that does not open: %v", err)
		}
		if p.Name != "fuzz" || p.IPNS != name.String() || cs[0].Name != "fuzz" || cs[0].IPNS != name.String() {
			t.Fatalf("took a purge of %q by %s as %+v", p.Name, p.IPNS, cs[0])
		}
		if d := now.Sub(p.Time); d > originapi.PurgeSkew || d < -originapi.PurgeSkew {
			t.Fatalf("took a purge %s off the clock", d)
		}
		if taken[p.Nonce] {
			t.Fatalf("nonce %q taken twice", p.Nonce)
		}
		taken[p.Nonce] = true
	})
}

// fuzzPurges are the purges FuzzPurge's seeds sign: taken, stale, with too
// many paths, of another name, with a short nonce.
func fuzzPurges(ipnsName string, now time.Time) []originapi.Purge {
	many := make([]string, originapi.MaxPurgePaths+1)
	for i := range many {
		many[i] = "/"
	}
	return []originapi.Purge{
		{Name: "fuzz", IPNS: ipnsName, Paths: []string{"/index.html", "/docs/"}, Time: now, Nonce: "fuzz-purge-nonce-1"},
		{Name: "fuzz", IPNS: ipnsName, Time: now, Nonce: "fuzz-purge-nonce-2"},
		{Name: "fuzz", IPNS: ipnsName, Time: now.Add(-time.Hour), Nonce: "fuzz-purge-nonce-3"},
		{Name: "fuzz", IPNS: ipnsName, Paths: many, Time: now, Nonce: "fuzz-purge-nonce-4"},
		{Name: "blog", IPNS: ipnsName, Time: now, Nonce: "fuzz-purge-nonce-5"},
		{Name: "fuzz", IPNS: ipnsName, Time: now, Nonce: "short"},
	}
}
