package origin

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/originapi"
)

// testBlock is a block for building CARs by hand.
type testBlock struct {
	c    cid.Cid
	data []byte
}

// testDAG is a small UnixFS-shaped DAG: a dag-pb root linking raw leaves.
type testDAG struct {
	root   cid.Cid
	blocks []testBlock // root first
}

func newTestDAG(t testing.TB, seed string, leaves int) testDAG {
	t.Helper()
	var d testDAG
	nd := &mdag.ProtoNode{}
	nd.SetCidBuilder(mdag.V1CidPrefix())
	nd.SetData([]byte{0x08, 0x01}) // UnixFS directory
	var leafBlocks []testBlock
	for i := range leaves {
		raw := mdag.NewRawNode([]byte(fmt.Sprintf("%s leaf %d %s", seed, i, strings.Repeat("x", i))))
		if err := nd.AddNodeLink(fmt.Sprintf("f%d", i), raw); err != nil {
			t.Fatal(err)
		}
		leafBlocks = append(leafBlocks, testBlock{raw.Cid(), raw.RawData()})
	}
	d.root = nd.Cid()
	d.blocks = append([]testBlock{{nd.Cid(), nd.RawData()}}, leafBlocks...)
	return d
}

// carBytes writes a CARv1 with the given roots and blocks, unchecked.
func carBytes(t testing.TB, roots []cid.Cid, blks ...testBlock) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, roots, car.WriteAsCarV1(true), car.AllowDuplicatePuts(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blks {
		if err := w.Put(context.Background(), b.c.KeyString(), b.data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestMain runs the tests, then stops the PostgreSQL cluster those that
// run on both dialects (pgtest.Dialects) started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func newTestOrigin(t testing.TB) *Origin {
	t.Helper()
	return newTestOriginOn(t, "")
}

// newTestOriginOn returns a new origin over the database dsn ("": SQLite
// in its data directory, the default).
func newTestOriginOn(t testing.TB, dsn string) *Origin {
	t.Helper()
	o, err := New(context.Background(), Config{DataDir: t.TempDir(), DB: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// storedCount counts the blocks in the origin's store.
func storedCount(t testing.TB, o *Origin) int {
	t.Helper()
	ch, err := o.blocks.AllKeysChan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestIngest(t *testing.T) {
	d := newTestDAG(t, "a", 3)
	other := newTestDAG(t, "b", 2)
	corrupt := testBlock{d.blocks[1].c, []byte("not the leaf")}
	big := mdag.NewRawNode(bytes.Repeat([]byte{7}, 2<<20+1))
	full := carBytes(t, []cid.Cid{d.root}, d.blocks...)

	tests := []struct {
		name    string
		car     []byte
		roots   []cid.Cid // signed for; default d.root
		wantErr error     // nil: accepted
		wantMsg string    // part of the error message
	}{
		{name: "complete", car: full},
		{name: "leaves before root", car: carBytes(t, []cid.Cid{d.root}, append(d.blocks[1:], d.blocks[0])...)},
		{name: "corrupt block", car: carBytes(t, []cid.Cid{d.root}, d.blocks[0], corrupt, d.blocks[2], d.blocks[3]),
			wantErr: ErrBadRequest, wantMsg: d.blocks[1].c.String()},
		{name: "oversized block", car: carBytes(t, []cid.Cid{big.Cid()}, testBlock{big.Cid(), big.RawData()}),
			roots: []cid.Cid{big.Cid()}, wantErr: ErrTooLarge, wantMsg: "2 MiB"},
		{name: "missing root", car: carBytes(t, []cid.Cid{other.root}, d.blocks...),
			roots: []cid.Cid{other.root}, wantErr: ErrIncomplete, wantMsg: other.root.String()},
		{name: "roots not signed for", car: full, roots: []cid.Cid{other.root}, wantErr: ErrForbidden, wantMsg: other.root.String()},
		{name: "roots in another order", car: carBytes(t, []cid.Cid{d.root, d.blocks[1].c}, d.blocks...),
			roots: []cid.Cid{d.blocks[1].c, d.root}, wantErr: ErrForbidden, wantMsg: "signed for"},
		{name: "missing leaf", car: carBytes(t, []cid.Cid{d.root}, d.blocks[:3]...),
			wantErr: ErrIncomplete, wantMsg: d.blocks[3].c.String()},
		{name: "truncated", car: full[:len(full)-5], wantErr: ErrBadRequest, wantMsg: "truncated"},
		{name: "truncated header", car: full[:10], wantErr: ErrBadRequest},
		{name: "no roots", car: carBytes(t, nil, d.blocks...), wantErr: ErrBadRequest},
		{name: "garbage", car: []byte("hello, this is not a CAR"), wantErr: ErrBadRequest},
		{name: "empty", car: nil, wantErr: ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOrigin(t)
			roots := tc.roots
			if roots == nil {
				roots = []cid.Cid{d.root}
			}
			res, err := o.Ingest(context.Background(), Upload{Publisher: testPublisher(t).ID, Roots: roots}, bytes.NewReader(tc.car))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Ingest: %v", err)
				}
				if res.NewBlocks != len(d.blocks) || res.Roots[0] != d.root.String() {
					t.Fatalf("result %+v, want %d new blocks under root %s", res, len(d.blocks), d.root)
				}
				if n := storedCount(t, o); n != len(d.blocks) {
					t.Fatalf("%d blocks stored, want %d", n, len(d.blocks))
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tc.wantMsg)
			}
			if n := storedCount(t, o); n != 0 {
				t.Fatalf("a rejected upload stored %d blocks", n)
			}
			entries, _ := os.ReadDir(o.stagingDir)
			if len(entries) != 0 {
				t.Fatalf("staging not cleaned: %d files left", len(entries))
			}
		})
	}
}

func TestIngestIncremental(t *testing.T) {
	o := newTestOrigin(t)
	ctx := context.Background()
	d := newTestDAG(t, "v1", 4)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	// Everything is there now.
	all := make([]cid.Cid, len(d.blocks))
	for i, b := range d.blocks {
		all[i] = b.c
	}
	missing, err := o.Missing(ctx, all)
	if err != nil || len(missing) != 0 {
		t.Fatalf("Missing = %v, %v; want none", missing, err)
	}
	// A new version sharing leaves needs only its new blocks: the CAR may
	// omit what the origin has.
	d2 := newTestDAG(t, "v1", 5) // same first 4 leaves, one more, new root
	cs := make([]cid.Cid, len(d2.blocks))
	for i, b := range d2.blocks {
		cs[i] = b.c
	}
	missing, err = o.Missing(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 2 || missing[0] != d2.root || missing[1] != d2.blocks[5].c {
		t.Fatalf("Missing = %v, want the new root and the new leaf", missing)
	}
	res, err := ingest(t, o, []cid.Cid{d2.root}, d2.blocks[0], d2.blocks[5])
	if err != nil {
		t.Fatal(err)
	}
	if res.NewBlocks != 2 {
		t.Fatalf("NewBlocks = %d, want 2", res.NewBlocks)
	}
	// Re-publishing unchanged content: an empty CAR naming a stored root.
	if _, err := ingest(t, o, []cid.Cid{d2.root}); err != nil {
		t.Fatalf("empty CAR for a stored root: %v", err)
	}
}

func TestHandler(t *testing.T) {
	o := newTestOrigin(t)
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	d := newTestDAG(t, "http", 3)
	alice, _ := identity.Generate(nil)
	aliceName := ipns.NameFromPeer(alice.ID)

	do := func(method, target, ctype string, body []byte) (int, []byte, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+target, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header
	}
	get := func(target, accept string) (int, []byte) {
		t.Helper()
		return testkit.Get(t, srv.URL+target, accept)
	}

	code, body, _ := do("POST", "/api/v1/blocks/missing", "application/json",
		[]byte(fmt.Sprintf(`{"cids":[%q,%q]}`, d.root, d.blocks[1].c)))
	if code != 200 || !strings.Contains(string(body), d.root.String()) {
		t.Fatalf("missing: %d %s", code, body)
	}
	if code, body, _ := do("POST", "/api/v1/blocks/missing", "application/json", []byte(`{"cids":["bafyNOPE"]}`)); code != 400 || !strings.Contains(string(body), "bafyNOPE") {
		t.Fatalf("malformed CID: %d %s", code, body)
	}
	roots := []cid.Cid{d.root}
	if code, body := postCAR(t, srv, signUpload(t, alice, time.Now(), "nonce-handler-0001", roots, d.blocks...),
		carBytes(t, roots, d.blocks...)); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body := postCAR(t, srv, signUpload(t, alice, time.Now(), "nonce-handler-0002", roots, d.blocks...), []byte("junk")); code != 400 {
		t.Fatalf("junk upload: %d %s", code, body)
	}

	// Trustless gateway: raw blocks and a CAR.
	for _, b := range d.blocks {
		code, got := get("/ipfs/"+b.c.String(), "application/vnd.ipld.raw")
		if code != 200 || !bytes.Equal(got, b.data) {
			t.Fatalf("raw %s: %d, %d bytes", b.c, code, len(got))
		}
	}
	code, carData := get("/ipfs/"+d.root.String()+"?format=car", "")
	if code != 200 {
		t.Fatalf("car: %d %s", code, carData)
	}
	br, err := car.NewBlockReader(bytes.NewReader(carData))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := br.Next(); err != nil {
			break
		}
		n++
	}
	if n != len(d.blocks) {
		t.Fatalf("CAR has %d blocks, want %d", n, len(d.blocks))
	}
	if code, _ := get("/ipfs/"+newTestDAG(t, "absent", 1).root.String(), "application/vnd.ipld.raw"); code < 400 {
		t.Fatalf("absent block: %d", code)
	}

	// Names over HTTP, then the IPNS record through the gateway.
	rec := record(t, alice, d.root, 1, time.Now().Add(time.Hour), "blog")
	claimJSON := []byte(fmt.Sprintf(`{"ipns":%q,"record":%q}`, aliceName, b64(rec)))
	if code, body, _ := do("PUT", "/api/v1/names/blog", "application/json", claimJSON); code != 200 {
		t.Fatalf("claim: %d %s", code, body)
	}
	if code, body, _ := do("GET", "/api/v1/names/blog", "", nil); code != 200 || !strings.Contains(string(body), d.root.String()) {
		t.Fatalf("lookup: %d %s", code, body)
	}
	if code, _, _ := do("GET", "/api/v1/names/nope", "", nil); code != 404 {
		t.Fatalf("unknown name: %d", code)
	}
	bob, _ := identity.Generate(nil)
	if code, _ := get("/ipns/"+ipns.NameFromPeer(bob.ID).String(), "application/vnd.ipfs.ipns-record"); code != 404 {
		t.Fatalf("unknown IPNS name: %d, want 404", code)
	}
	code, got := get("/ipns/"+aliceName.String(), "application/vnd.ipfs.ipns-record")
	if code != 200 || !bytes.Equal(got, rec) {
		t.Fatalf("ipns record: %d", code)
	}
	// A rolled-back record over routing put is refused with a 4xx.
	old := record(t, alice, d.root, 0, time.Now().Add(time.Hour), "")
	if code, body, _ := do("PUT", "/ipns/"+aliceName.String(), "application/vnd.ipfs.ipns-record", old); code != 409 {
		t.Fatalf("rollback via routing put: %d %s", code, body)
	}
	if code, body, _ := do("GET", "/metrics", "", nil); code != 200 || !strings.Contains(string(body), "topcdn_origin_uploads_total") {
		t.Fatalf("metrics: %d", code)
	}
}

func TestRestartKeepsState(t *testing.T) { pgtest.Dialects(t, testRestartKeepsState) }

func testRestartKeepsState(t *testing.T, dsn string) {
	dir := t.TempDir()
	ctx := context.Background()
	o, err := New(ctx, Config{DataDir: dir, DB: dsn})
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDAG(t, "persist", 2)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	alice, _ := identity.Generate(nil)
	if _, err := o.ClaimName(ctx, "site", ipns.NameFromPeer(alice.ID), record(t, alice, d.root, 1, time.Now().Add(time.Hour), "site")); err != nil {
		t.Fatal(err)
	}
	id := o.ID().ID
	o.Close()
	// A stale staging file, as a kill -9 mid-upload leaves, is cleared.
	if err := os.WriteFile(filepath.Join(dir, "staging", "upload-1.blocks"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	o2, err := New(ctx, Config{DataDir: dir, DB: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if o2.ID().ID != id {
		t.Fatal("origin key changed across restart")
	}
	ni, err := o2.LookupName(ctx, "site")
	if err != nil || ni.CID != d.root.String() {
		t.Fatalf("after restart: %+v, %v", ni, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "staging")); len(entries) != 0 {
		t.Fatal("stale staging file survived restart")
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestDeserializedHumanName(t *testing.T) {
	ctx := context.Background()
	o, err := New(ctx, Config{DataDir: t.TempDir(), Deserialized: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d := newTestDAG(t, "browse", 2)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	alice, _ := identity.Generate(nil)
	if _, err := o.ClaimName(ctx, "blog", ipns.NameFromPeer(alice.ID), record(t, alice, d.root, 1, time.Now().Add(time.Hour), "blog")); err != nil {
		t.Fatal(err)
	}
	// The human name resolves like a DNSLink name: /ipns/blog/f1.
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ipns/blog/f1", nil))
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), d.blocks[2].data) {
		t.Fatalf("/ipns/blog/f1: %d %q", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ipns/nosuchname/f1", nil))
	if rec.Code < 400 {
		t.Fatalf("/ipns/nosuchname: %d", rec.Code)
	}
}

func TestUploadConcurrencyLimit(t *testing.T) {
	o, err := New(context.Background(), Config{DataDir: t.TempDir(), MaxConcurrentUploads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	// Hold the only upload slot with a signed request whose body never ends.
	d := newTestDAG(t, "busy", 1)
	roots := []cid.Cid{d.root}
	full := carBytes(t, roots, d.blocks...)
	key := testPublisher(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	held, err := http.NewRequest("POST", srv.URL+"/api/v1/car", pr)
	if err != nil {
		t.Fatal(err)
	}
	held.Header.Set(originapi.UploadHeader, signUpload(t, key, time.Now(), "nonce-busy-held-01", roots, d.blocks...))
	heldDone := make(chan struct{})
	go func() {
		defer close(heldDone)
		if resp, err := http.DefaultClient.Do(held); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write(full[:20])
	// The held request must be inside the handler (its slot taken) before the
	// second is sent; otherwise the second may win the slot and the held one
	// be the request turned away.
	deadline := time.Now().Add(5 * time.Second)
	for len(o.uploads) == 0 {
		select {
		case <-heldDone:
			t.Fatal("the held upload ended before it took the slot")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the held upload never took the upload slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	req, err := http.NewRequest("POST", srv.URL+"/api/v1/car", bytes.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(originapi.UploadHeader, signUpload(t, key, time.Now(), "nonce-busy-second", roots, d.blocks...))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second upload got %d while the slot was held, want 503", resp.StatusCode)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Once the held upload ends, its slot is free again.
	pw.CloseWithError(errors.New("client gave up"))
	<-heldDone
	for len(o.uploads) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the held upload's slot was never given back")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIngestChecksLinksByCID: the same bytes under a raw CID and a dag-pb
// CID are different blocks; storing one must not make the other (and its
// unchecked links) present. Identity CIDs must not smuggle links either.
func TestIngestChecksLinksByCID(t *testing.T) {
	o := newTestOrigin(t)
	missing := mdag.NewRawNode([]byte("never uploaded"))
	nd := &mdag.ProtoNode{}
	nd.SetCidBuilder(mdag.V1CidPrefix())
	nd.SetData([]byte{0x08, 0x01})
	if err := nd.AddNodeLink("x", missing); err != nil {
		t.Fatal(err)
	}
	asRaw := mdag.NewRawNode(nd.RawData()) // same bytes, raw codec: no links
	if _, err := ingest(t, o, []cid.Cid{asRaw.Cid()}, testBlock{asRaw.Cid(), asRaw.RawData()}); err != nil {
		t.Fatal(err)
	}
	_, err := ingest(t, o, []cid.Cid{nd.Cid()})
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("dag-pb root whose bytes are stored as raw: err = %v, want ErrIncomplete", err)
	}

	idPrefix := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.IDENTITY, MhLength: -1}
	idRoot, err := idPrefix.Sum(nd.RawData())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ingest(t, o, []cid.Cid{idRoot}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("identity dag-pb root with links: err = %v, want ErrBadRequest", err)
	}
}

func TestIngestBlockLimit(t *testing.T) {
	o, err := New(context.Background(), Config{DataDir: t.TempDir(), MaxUploadBlocks: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d := newTestDAG(t, "many", 3) // root + 3 leaves
	_, err = ingest(t, o, []cid.Cid{d.root}, d.blocks...)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("4 blocks with a limit of 3: err = %v, want ErrTooLarge", err)
	}
	if n := storedCount(t, o); n != 0 {
		t.Fatalf("refused upload stored %d blocks", n)
	}
}

// TestIngestAllowIncomplete: fixtures that leave blocks out on purpose
// (gateway-conformance's) are taken with AllowIncomplete, roots still
// required; the option refuses striping.
func TestIngestAllowIncomplete(t *testing.T) {
	d := newTestDAG(t, "a", 3)
	other := newTestDAG(t, "b", 2)
	o, err := New(context.Background(), Config{DataDir: t.TempDir(), AllowIncomplete: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	res, err := ingest(t, o, []cid.Cid{d.root}, d.blocks[:3]...)
	if err != nil {
		t.Fatalf("missing leaf with AllowIncomplete: %v", err)
	}
	if res.NewBlocks != 3 {
		t.Fatalf("%d new blocks, want 3", res.NewBlocks)
	}
	if _, err := ingest(t, o, []cid.Cid{other.root}, d.blocks...); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("missing root with AllowIncomplete: err = %v, want ErrIncomplete", err)
	}
	if _, err := New(context.Background(), Config{DataDir: t.TempDir(), AllowIncomplete: true, Stripe: &durability.StripeConfig{}}); err == nil {
		t.Fatal("AllowIncomplete with striping accepted")
	}
}

// TestCIDVersionsNameOneBlock: a dag-pb node stored under its CIDv0 is
// served for its CIDv1 (and back), as kubo does: gateways ask for CIDv1s.
func TestCIDVersionsNameOneBlock(t *testing.T) {
	ctx := context.Background()
	o := newTestOrigin(t)
	v0 := &mdag.ProtoNode{} // CIDv0 by default
	v0.SetData([]byte{0x08, 0x01})
	v1 := &mdag.ProtoNode{}
	v1.SetCidBuilder(mdag.V1CidPrefix())
	v1.SetData([]byte{0x08, 0x01, 0x12, 0x01, 'x'})
	for _, nd := range []*mdag.ProtoNode{v0, v1} {
		if _, err := ingest(t, o, []cid.Cid{nd.Cid()}, testBlock{nd.Cid(), nd.RawData()}); err != nil {
			t.Fatal(err)
		}
	}
	h := o.Handler()
	for _, tc := range []struct {
		stored *mdag.ProtoNode
		ask    cid.Cid
	}{
		{v0, cid.NewCidV1(cid.DagProtobuf, v0.Cid().Hash())},
		{v1, cid.NewCidV0(v1.Cid().Hash())},
	} {
		b, err := o.blocks.Get(ctx, tc.ask)
		if err != nil || !bytes.Equal(b.RawData(), tc.stored.RawData()) || !b.Cid().Equals(tc.ask) {
			t.Fatalf("Get(%s) of a block stored as %s: %v", tc.ask, tc.stored.Cid(), err)
		}
		if ok, err := o.blocks.Has(ctx, tc.ask); !ok || err != nil {
			t.Fatalf("Has(%s) = %v, %v", tc.ask, ok, err)
		}
		if n, err := o.blocks.GetSize(ctx, tc.ask); n != len(tc.stored.RawData()) || err != nil {
			t.Fatalf("GetSize(%s) = %d, %v", tc.ask, n, err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ipfs/"+tc.ask.String()+"?format=raw", nil))
		if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), tc.stored.RawData()) {
			t.Fatalf("GET /ipfs/%s?format=raw: HTTP %d", tc.ask, rec.Code)
		}
	}
	// A raw block with the same hash is another block: not found.
	raw := cid.NewCidV1(cid.Raw, v0.Cid().Hash())
	if ok, _ := o.blocks.Has(ctx, raw); ok {
		t.Fatal("a raw CID found a dag-pb block")
	}
}
