package origin

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// testPublisher is the key test uploads are signed by and charged to.
func testPublisher(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.Unmarshal(fuzzKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// blockCIDs lists the CIDs of blks, in order.
func blockCIDs(blks []testBlock) []cid.Cid {
	cs := make([]cid.Cid, len(blks))
	for i, b := range blks {
		cs[i] = b.c
	}
	return cs
}

// ingest uploads a CAR of blks under roots as the test publisher, with
// the Upload that AuthorizeUpload gives for a matching authorization.
func ingest(t testing.TB, o *Origin, roots []cid.Cid, blks ...testBlock) (*originapi.UploadResult, error) {
	t.Helper()
	up := Upload{Publisher: testPublisher(t).ID, Roots: roots, BlocksDigest: originapi.BlocksDigest(blockCIDs(blks))}
	return o.Ingest(context.Background(), up, bytes.NewReader(carBytes(t, roots, blks...)))
}

// signUpload returns an UploadHeader value by key for a CAR of blks under
// roots, signed at the given time with the given nonce.
func signUpload(t testing.TB, key *identity.Key, at time.Time, nonce string, roots []cid.Cid, blks ...testBlock) string {
	t.Helper()
	auth := originapi.UploadAuthorization{BlocksSHA256: hex.EncodeToString(originapi.BlocksDigest(blockCIDs(blks))), Time: at.UTC(), Nonce: nonce}
	for _, r := range roots {
		auth.Roots = append(auth.Roots, r.String())
	}
	h, err := originapi.SignUploadAuthorization(key, auth)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// postCAR posts car to srv's upload API with the given UploadHeader value
// (none if empty) and returns the status and body.
func postCAR(t testing.TB, srv *httptest.Server, auth string, car []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", srv.URL+"/api/v1/car", bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.ipld.car")
	if auth != "" {
		req.Header.Set(originapi.UploadHeader, auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func dagSize(blks []testBlock) int64 {
	var n int64
	for _, b := range blks {
		n += int64(len(b.data))
	}
	return n
}

// TestSignedUploads runs uploads through the HTTP API, in order, against
// one origin: each refused one must store nothing and charge nothing.
func TestSignedUploads(t *testing.T) { pgtest.Dialects(t, testSignedUploads) }

func testSignedUploads(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	o.now = func() time.Time { return time.Unix(0, clock.Load()) }
	now := o.now()
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()

	alice := testPublisher(t)
	bob, _ := identity.Generate(nil)
	d := newTestDAG(t, "signed", 3)
	other := newTestDAG(t, "other", 2)
	roots := []cid.Cid{d.root}
	full := carBytes(t, roots, d.blocks...)
	size := dagSize(d.blocks)
	good := signUpload(t, alice, now, "nonce-good-000001", roots, d.blocks...)

	auth := originapi.UploadAuthorization{Roots: []string{d.root.String()}, Time: now.UTC(), Nonce: "nonce-forged-0001",
		BlocksSHA256: hex.EncodeToString(originapi.BlocksDigest(blockCIDs(d.blocks)))}
	env, err := bob.Sign(originapi.TypeUpload, auth)
	if err != nil {
		t.Fatal(err)
	}
	env.Signer = alice.ID.String() // Bob's signature, Alice's name
	forged, _ := env.Encode()
	env, _ = alice.Sign("topcdn/heartbeat/v1", auth)
	wrongType, _ := env.Encode()

	steps := []struct {
		name       string
		auth       string
		car        []byte
		wantCode   int
		wantMsg    string // part of the JSON error
		wantStored int    // blocks stored after
		wantUsed   int64  // Alice's usage after
	}{
		{"unsigned", "", full, 401, originapi.UploadHeader, 0, 0},
		{"malformed header", "not an envelope!", full, 401, "malformed", 0, 0},
		{"forged signature", forged, full, 403, "signature does not verify", 0, 0},
		{"another message type", wrongType, full, 403, originapi.TypeUpload, 0, 0},
		{"stale", signUpload(t, alice, now.Add(-originapi.UploadSkew-time.Minute), "nonce-stale-00001", roots, d.blocks...), full, 401, "stale", 0, 0},
		{"from the future", signUpload(t, alice, now.Add(originapi.UploadSkew+time.Minute), "nonce-future-0001", roots, d.blocks...), full, 401, "future", 0, 0},
		{"roots not signed for", signUpload(t, alice, now, "nonce-roots-00001", []cid.Cid{other.root}, d.blocks...), full, 403, "signed for", 0, 0},
		{"blocks not signed for", signUpload(t, alice, now, "nonce-blocks-0001", roots, d.blocks[:2]...), full, 403, "blocks_sha256", 0, 0},
		{"nonce too short", signUpload(t, alice, now, "x", roots, d.blocks...), full, 400, "nonce", 0, 0},
		{"good", good, full, 201, "", len(d.blocks), size},
		{"replayed", good, full, 409, "already used", len(d.blocks), size},
		{"same content again", signUpload(t, alice, now, "nonce-again-00001", roots, d.blocks...), full, 201, "", len(d.blocks), size},
	}
	for _, st := range steps {
		code, body := postCAR(t, srv, st.auth, st.car)
		if code != st.wantCode {
			t.Fatalf("%s: HTTP %d %s, want %d", st.name, code, body, st.wantCode)
		}
		if code >= 400 {
			var e originapi.ErrorResponse
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, st.wantMsg) {
				t.Fatalf("%s: error body %s, want a JSON error mentioning %q", st.name, body, st.wantMsg)
			}
		}
		if n := storedCount(t, o); n != st.wantStored {
			t.Fatalf("%s: %d blocks stored, want %d", st.name, n, st.wantStored)
		}
		u, err := o.Usage(ctx, alice.ID)
		if err != nil || u.UsedBytes != st.wantUsed {
			t.Fatalf("%s: Alice's usage %+v, %v; want %d bytes", st.name, u, err, st.wantUsed)
		}
	}

	// Every refusal is counted by its reason, including those decided on
	// the header before the CAR is read.
	for _, c := range []struct {
		result, reason string
		want           float64
	}{
		{"ok", "", 2}, {"rejected", "unauthorized", 4}, {"rejected", "forbidden", 4},
		{"rejected", "bad_request", 1}, {"rejected", "conflict", 1},
	} {
		if got := testutil.ToFloat64(o.metrics.uploads.WithLabelValues(c.result, c.reason)); got != c.want {
			t.Errorf("uploads_total{result=%q,reason=%q} = %v, want %v", c.result, c.reason, got, c.want)
		}
	}

	// Bob uploads the same content: nothing of it is new, so he is charged
	// nothing, but the root is recorded as his too.
	code, body := postCAR(t, srv, signUpload(t, bob, now, "nonce-bob-0000001", roots, d.blocks...), full)
	var res originapi.UploadResult
	if err := json.Unmarshal(body, &res); code != 201 || err != nil || res.NewBytes != 0 || res.Publisher != bob.ID.String() {
		t.Fatalf("Bob's upload of stored content: HTTP %d %s", code, body)
	}

	// Usage over HTTP.
	usage := func(p string) (int, originapi.PublisherUsage) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/api/v1/publishers/" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var u originapi.PublisherUsage
		json.NewDecoder(resp.Body).Decode(&u)
		return resp.StatusCode, u
	}
	if code, u := usage(alice.ID.String()); code != 200 || u.UsedBytes != size || u.Uploads != 2 || u.Roots != 1 || u.LastUpload == nil {
		t.Fatalf("Alice's usage: HTTP %d %+v, want %d bytes in 2 uploads of 1 root", code, u, size)
	}
	if code, u := usage(bob.ID.String()); code != 200 || u.UsedBytes != 0 || u.Uploads != 1 || u.Roots != 1 {
		t.Fatalf("Bob's usage: HTTP %d %+v, want 0 bytes in 1 upload of 1 root", code, u)
	}
	carol, _ := identity.Generate(nil)
	if code, u := usage(carol.ID.String()); code != 200 || u.UsedBytes != 0 || u.Uploads != 0 || u.LastUpload != nil {
		t.Fatalf("a key that never uploaded: HTTP %d %+v", code, u)
	}
	if code, _ := usage("not-a-peer"); code != 400 {
		t.Fatalf("malformed peer ID: HTTP %d, want 400", code)
	}

	// Past the window the replay is stale, and the spent nonces are
	// forgotten at the next upload.
	clock.Store(now.Add(originapi.UploadSkew + time.Second).UnixNano())
	if code, body := postCAR(t, srv, good, full); code != 401 {
		t.Fatalf("replay after the window: HTTP %d %s, want 401", code, body)
	}
	if code, body := postCAR(t, srv, signUpload(t, alice, o.now(), "nonce-later-00001", roots, d.blocks...), full); code != 201 {
		t.Fatalf("upload after the window: HTTP %d %s", code, body)
	}
	var nonces int
	if err := o.db.QueryRowContext(context.Background(), `SELECT count(*) FROM upload_nonces`).Scan(&nonces); err != nil || nonces != 1 {
		t.Fatalf("%d nonces remembered (%v), want only the last one", nonces, err)
	}
}

// TestUploadAllowlist: with Config.Publishers only the listed keys upload.
func TestUploadAllowlist(t *testing.T) {
	ctx := context.Background()
	alice := testPublisher(t)
	bob, _ := identity.Generate(nil)
	o, err := New(ctx, Config{DataDir: t.TempDir(), Publishers: []peer.ID{alice.ID}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d := newTestDAG(t, "allowed", 1)
	roots := []cid.Cid{d.root}
	if _, err := o.AuthorizeUpload(ctx, signUpload(t, bob, time.Now(), "nonce-bob-0000001", roots, d.blocks...)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("key not listed: err = %v, want ErrForbidden", err)
	}
	if _, err := o.AuthorizeUpload(ctx, signUpload(t, alice, time.Now(), "nonce-alice-00001", roots, d.blocks...)); err != nil {
		t.Fatalf("listed key: %v", err)
	}
}

// TestPublisherQuota: an upload that would take its publisher over the
// quota is refused and leaves nothing; only bytes new to the origin count.
func TestPublisherQuota(t *testing.T) { pgtest.Dialects(t, testPublisherQuota) }

func testPublisherQuota(t *testing.T, dsn string) {
	ctx := context.Background()
	const quota = 2000
	o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn, PublisherQuota: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	alice := testPublisher(t).ID
	bob, _ := identity.Generate(nil)
	usedBy := func(p peer.ID) int64 {
		t.Helper()
		u, err := o.Usage(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return u.UsedBytes
	}

	d1 := newTestDAG(t, "quota one", 3)
	res, err := ingest(t, o, []cid.Cid{d1.root}, d1.blocks...)
	if err != nil {
		t.Fatal(err)
	}
	if want := dagSize(d1.blocks); res.NewBytes != want || res.UsedBytes != want || res.QuotaBytes != quota {
		t.Fatalf("first upload: %+v, want %d new and used bytes of %d", res, want, quota)
	}

	big := mdag.NewRawNode([]byte(strings.Repeat("b", quota)))
	bigBlk := testBlock{big.Cid(), big.RawData()}
	_, err = ingest(t, o, []cid.Cid{big.Cid()}, bigBlk)
	if !errors.Is(err, ErrOverQuota) || httpkit.StatusOf(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("upload over the quota: err = %v, want 413 ErrOverQuota", err)
	}
	if n := storedCount(t, o); n != len(d1.blocks) {
		t.Fatalf("refused upload stored blocks: %d in store, want %d", n, len(d1.blocks))
	}
	if got := usedBy(alice); got != dagSize(d1.blocks) {
		t.Fatalf("refused upload was charged: usage %d, want %d", got, dagSize(d1.blocks))
	}

	// Content already stored costs nothing: re-sending d1's root.
	if res, err := ingest(t, o, []cid.Cid{d1.root}); err != nil || res.NewBytes != 0 {
		t.Fatalf("empty CAR for a stored root: %+v, %v", res, err)
	}

	// Bob has his own quota; what he stored is not charged to Alice again.
	d2 := newTestDAG(t, "quota two", 3)
	up := Upload{Publisher: bob.ID, Roots: []cid.Cid{d2.root}, BlocksDigest: originapi.BlocksDigest(blockCIDs(d2.blocks))}
	if _, err := o.Ingest(ctx, up, bytes.NewReader(carBytes(t, up.Roots, d2.blocks...))); err != nil {
		t.Fatal(err)
	}
	d3 := newTestDAG(t, "quota two", 4) // d2's leaves, one more, a new root
	res, err = ingest(t, o, []cid.Cid{d3.root}, d3.blocks...)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(d3.blocks[0].data) + len(d3.blocks[4].data)); res.NewBytes != want {
		t.Fatalf("upload sharing Bob's leaves charged %d bytes, want %d (its new root and leaf)", res.NewBytes, want)
	}
	if got, want := usedBy(bob.ID), dagSize(d2.blocks); got != want {
		t.Fatalf("Bob's usage %d, want %d", got, want)
	}
}

// TestReservationLapses: an upload's reservation counts against its
// publisher's quota until settled; one never settled (its origin killed
// between the two) stops counting once it lapses, instead of for good.
func TestReservationLapses(t *testing.T) { pgtest.Dialects(t, testReservationLapses) }

func testReservationLapses(t *testing.T, dsn string) {
	ctx := context.Background()
	o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn, PublisherQuota: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	p := testPublisher(t).ID
	used := func() int64 {
		t.Helper()
		u, err := o.Usage(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return u.UsedBytes
	}
	if _, err := o.reserve(ctx, p, 600); err != nil {
		t.Fatal(err)
	}
	if got := used(); got != 600 {
		t.Fatalf("usage %d with 600 bytes reserved", got)
	}
	if _, err := o.reserve(ctx, p, 600); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("a second reservation over the quota: %v", err)
	}
	// The origin that made it is killed; the reservation lapses.
	if _, err := o.db.ExecContext(ctx, `UPDATE reservations SET expires = 1`); err != nil {
		t.Fatal(err)
	}
	if got := used(); got != 0 {
		t.Fatalf("usage %d once the reservation lapsed", got)
	}
	r, err := o.reserve(ctx, p, 600)
	if err != nil {
		t.Fatalf("reservation after the lapsed one: %v", err)
	}
	if got, err := o.settle(ctx, p, r, 400, nil); err != nil || got != 400 {
		t.Fatalf("settled 400 of 600 reserved: usage %d, %v", got, err)
	}
	var n int
	if err := o.db.QueryRowContext(ctx, `SELECT count(*) FROM reservations`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d reservations left (%v), want 0: settled and lapsed ones go", n, err)
	}
}

// TestPublisherQuotaConcurrent: two uploads that each fit but not together
// cannot both pass the quota check before either is stored.
func TestPublisherQuotaConcurrent(t *testing.T) { pgtest.Dialects(t, testPublisherQuotaConcurrent) }

func testPublisherQuotaConcurrent(t *testing.T, dsn string) {
	const quota = 3000
	o, err := New(context.Background(), Config{DataDir: t.TempDir(), DB: dsn, PublisherQuota: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		nd := mdag.NewRawNode([]byte(fmt.Sprintf("%d%s", i, strings.Repeat("c", 2000))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ingest(t, o, []cid.Cid{nd.Cid()}, testBlock{nd.Cid(), nd.RawData()})
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two uploads of 2001 bytes under a %d-byte quota: errors %v, want exactly one refused", quota, errs)
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrOverQuota) {
			t.Fatalf("err = %v, want ErrOverQuota", err)
		}
	}
	if n := storedCount(t, o); n != 1 {
		t.Fatalf("%d blocks stored, want 1", n)
	}
}

// TestNameOnOthersContent: a name may point at content another publisher
// uploaded. Content addressing makes that safe (the bytes are the CID's,
// whoever sent them), and the uploader, not the name's owner, was charged.
func TestNameOnOthersContent(t *testing.T) {
	ctx := context.Background()
	o := newTestOrigin(t)
	d := newTestDAG(t, "shared", 2)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil { // by the test publisher
		t.Fatal(err)
	}
	bob, _ := identity.Generate(nil)
	ni, err := o.ClaimName(ctx, "bobsite", ipns.NameFromPeer(bob.ID), record(t, bob, d.root, 1, time.Now().Add(time.Hour), "bobsite"))
	if err != nil || ni.CID != d.root.String() {
		t.Fatalf("naming content another key uploaded: %+v, %v", ni, err)
	}
	if u, _ := o.Usage(ctx, bob.ID); u.UsedBytes != 0 {
		t.Fatalf("naming content charged its owner %d bytes", u.UsedBytes)
	}
}

// fakeFunds answers CanPay from a map, or fails with err.
type fakeFunds struct {
	mu    sync.Mutex
	funds map[peer.ID]bool
	err   error
}

func (f *fakeFunds) CanPay(ctx context.Context, p peer.ID) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.funds[p], f.err
}

// TestUploadNeedsFunds: with Config.Funds, a publisher billing says cannot
// pay gets 402 and nothing is stored or charged, billing's silence gives
// 503 (retry), and a funded publisher's upload goes through.
func TestUploadNeedsFunds(t *testing.T) {
	ctx := context.Background()
	alice := testPublisher(t)
	funds := &fakeFunds{funds: map[peer.ID]bool{}}
	o, err := New(ctx, Config{DataDir: t.TempDir(), Funds: funds})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	d := newTestDAG(t, "funds", 2)
	roots := []cid.Cid{d.root}
	car := carBytes(t, roots, d.blocks...)
	steps := []struct {
		name  string
		funds bool
		err   error
		want  int
	}{
		{"no funds", false, nil, http.StatusPaymentRequired},
		{"billing unreachable", true, errors.New("connection refused"), http.StatusServiceUnavailable},
		{"funded", true, nil, http.StatusCreated},
	}
	for i, s := range steps {
		funds.mu.Lock()
		funds.funds[alice.ID], funds.err = s.funds, s.err
		funds.mu.Unlock()
		code, body := postCAR(t, srv, signUpload(t, alice, time.Now(), fmt.Sprintf("nonce-funds-%06d", i), roots, d.blocks...), car)
		if code != s.want {
			t.Fatalf("%s: HTTP %d %s, want %d", s.name, code, body, s.want)
		}
		if code == http.StatusCreated {
			continue
		}
		if n := storedCount(t, o); n != 0 {
			t.Fatalf("%s: the refused upload stored %d blocks", s.name, n)
		}
		if u, _ := o.Usage(ctx, alice.ID); u.UsedBytes != 0 {
			t.Fatalf("%s: %d bytes charged for a refused upload", s.name, u.UsedBytes)
		}
	}
}
