package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storage"
)

// carNet is a striping origin (2+1) served on loopback, with storage
// peers that send heartbeats every 100 ms.
type carNet struct {
	ctx  context.Context
	o    *Origin
	url  string
	mu   sync.Mutex
	stop []func()
}

func newCARNet(t *testing.T, dsn string) *carNet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn, HeartbeatInterval: 100 * time.Millisecond,
		Stripe: &durability.StripeConfig{DataShards: 2, ParityShards: 1, ChunkSize: 512,
			AuditInterval: time.Hour, RepairInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(func() { srv.Close(); o.Close() })
	go o.Run(ctx)
	return &carNet{ctx: ctx, o: o, url: srv.URL}
}

// addPeers starts n storage peers of the given capacity (placement puts
// the emptiest first) and waits until the origin counts them healthy.
func (cn *carNet) addPeers(t *testing.T, n int, capacity int64) []func() {
	t.Helper()
	var stops []func()
	for range n {
		ctx, cancel := context.WithCancel(cn.ctx)
		ts := httptest.NewUnstartedServer(nil)
		s, err := storage.New(ctx, storage.Config{DataDir: t.TempDir(), Origin: cn.url, OriginID: cn.o.ID().ID,
			Capacity: capacity, PublicAddr: "http://" + ts.Listener.Addr().String(),
			HeartbeatInterval: 100 * time.Millisecond, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ts.Config.Handler = s.Handler()
		ts.Start()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); ts.Close(); s.Close() }) }
		t.Cleanup(stop)
		stops = append(stops, stop)
		go s.Run(ctx)
	}
	cn.waitHealthy(t, func(h int) bool { return h >= n })
	return stops
}

func (cn *carNet) waitHealthy(t *testing.T, ok func(healthy int) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		peers, _ := cn.o.Storage().Peers(cn.ctx)
		healthy := 0
		for _, p := range peers {
			if p.Healthy {
				healthy++
			}
		}
		if ok(healthy) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d healthy peers", healthy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publish uploads blks under root and waits until root is striped.
func (cn *carNet) publish(t *testing.T, root cid.Cid, blks ...testBlock) {
	t.Helper()
	if _, err := ingest(t, cn.o, []cid.Cid{root}, blks...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := cn.o.Storage().Manifest(cn.ctx, root); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not striped", root)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getCAR fetches root's CAR over HTTP, asking with ?format=car or with an
// Accept header, and returns the answer with its body read (and the read
// error, for a truncated stream).
func (cn *carNet) getCAR(t *testing.T, root cid.Cid, byAccept bool) (*http.Response, []byte, error) {
	t.Helper()
	u := cn.url + "/ipfs/" + root.String() + "?format=car&dag-scope=all"
	req, _ := http.NewRequest("GET", cn.url+"/ipfs/"+root.String(), nil)
	if byAccept {
		req.Header.Set("Accept", "application/vnd.ipld.car; version=1")
	} else {
		req, _ = http.NewRequest("GET", u, nil)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// carBlocks parses a CAR and returns its blocks' CIDs, or the parse error.
func carBlocks(body []byte) (map[cid.Cid]bool, error) {
	br, err := car.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	got := map[cid.Cid]bool{}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return nil, err
		}
		got[b.Cid()] = true
	}
}

// TestCARNeverTruncated200: a CAR whose DAG the origin knows it cannot
// read whole (a striped segment below k healthy shards) is refused with
// 503 and Retry-After before any byte; a DAG that can be read streams 200
// whole. The root block here sits in a segment that is fine and its child
// in one whose peers are all gone: boxo's gateway sent 200 and the root,
// then cut the stream, so the client got a truncated CAR with status 200.
func TestCARNeverTruncated200(t *testing.T) { pgtest.Dialects(t, testCARNeverTruncated200) }

func testCARNeverTruncated200(t *testing.T, dsn string) {
	cn := newCARNet(t, dsn)
	// Segment 1 (the shared leaf) on the first three peers.
	oldPeers := cn.addPeers(t, 3, 1<<20)
	shared := newTestDAG(t, "shared", 1)
	cn.publish(t, shared.root, shared.blocks...)
	// Three roomier peers: what comes next is placed on them.
	cn.addPeers(t, 3, 64<<20)
	site := mdag.NodeWithData([]byte{0x08, 0x01})
	site.SetCidBuilder(mdag.V1CidPrefix())
	if err := site.AddRawLink("shared", &format.Link{Cid: shared.root}); err != nil {
		t.Fatal(err)
	}
	own := mdag.NewRawNode([]byte("the site's own leaf"))
	if err := site.AddNodeLink("own", own); err != nil {
		t.Fatal(err)
	}
	cn.publish(t, site.Cid(), testBlock{site.Cid(), site.RawData()}, testBlock{own.Cid(), own.RawData()})
	other := newTestDAG(t, "other", 3)
	cn.publish(t, other.root, other.blocks...)

	siteBlocks := map[cid.Cid]bool{site.Cid(): true, own.Cid(): true}
	for _, b := range shared.blocks {
		siteBlocks[b.c] = true
	}
	otherBlocks := map[cid.Cid]bool{}
	for _, b := range other.blocks {
		otherBlocks[b.c] = true
	}
	whole := func(name string, root cid.Cid, want map[cid.Cid]bool) {
		t.Helper()
		for _, byAccept := range []bool{false, true} {
			resp, body, err := cn.getCAR(t, root, byAccept)
			if err != nil || resp.StatusCode != 200 || resp.Trailer.Get("X-Stream-Error") != "" {
				t.Fatalf("%s (Accept %v): HTTP %d, read error %v, trailer %v; want 200 whole", name, byAccept, resp.StatusCode, err, resp.Trailer)
			}
			got, err := carBlocks(body)
			if err != nil || len(got) != len(want) {
				t.Fatalf("%s (Accept %v): CAR of %d blocks (%v), want %d", name, byAccept, len(got), err, len(want))
			}
			for c := range want {
				if !got[c] {
					t.Fatalf("%s (Accept %v): CAR lacks %s", name, byAccept, c)
				}
			}
		}
	}
	whole("site, all peers up", site.Cid(), siteBlocks)

	// The first three peers go away: the shared leaf's segment has no
	// healthy shard left, the site's own segment all of them.
	for _, stop := range oldPeers {
		stop()
	}
	cn.waitHealthy(t, func(h int) bool { return h == 3 })
	for _, byAccept := range []bool{false, true} {
		resp, body, err := cn.getCAR(t, site.Cid(), byAccept)
		var e originapi.ErrorResponse
		if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != carRetryAfter || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Fatalf("site with a segment below k (Accept %v): HTTP %d, Retry-After %q, read error %v, body %.200q; want 503, Retry-After %s and a JSON error",
				byAccept, resp.StatusCode, resp.Header.Get("Retry-After"), err, body, carRetryAfter)
		}
	}
	// A raw block request is not a CAR: boxo answers it (the root block is
	// readable).
	resp, err := http.Get(cn.url + "/ipfs/" + site.Cid().String() + "?format=raw")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("raw root block: HTTP %d, want 200", resp.StatusCode)
	}
	whole("root on healthy peers", other.root, otherBlocks)
}

// TestUploadAcknowledgedStriped: with SQLite (one origin), an upload is
// answered once its root is striped onto the storage peers (its manifest
// there at once), so the name a publisher moves next is served from the
// peers; with too few healthy peers it is answered after the failed
// attempt, kept on the origin, saying why. With PostgreSQL it is striped
// before it is acknowledged (TestUploadStripedBeforeAck).
func TestUploadAcknowledgedStriped(t *testing.T) {
	testUploadAcknowledgedStriped(t, filepath.Join(t.TempDir(), "origin.db"))
}

func testUploadAcknowledgedStriped(t *testing.T, dsn string) {
	cn := newCARNet(t, dsn)
	cn.addPeers(t, 2, 1<<20) // 2+1 shards need 3
	// Each upload gets its own attempt, though the one before it keeps
	// failing: it is answered saying why, not after the whole wait.
	for _, name := range []string{"too few peers", "still too few"} {
		few := newTestDAG(t, name, 2)
		res, err := ingest(t, cn.o, []cid.Cid{few.root}, few.blocks...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Striped || !strings.Contains(res.StripeError, "healthy storage peers") {
			t.Fatalf("%s: with 2 peers for 2+1 shards: striped %v, error %q; want not striped, saying why", name, res.Striped, res.StripeError)
		}
	}
	cn.addPeers(t, 1, 1<<20)
	d := newTestDAG(t, "striped before the answer", 3)
	res, err := ingest(t, cn.o, []cid.Cid{d.root}, d.blocks...)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Striped || res.StripeError != "" {
		t.Fatalf("with 3 peers: striped %v, error %q; want striped", res.Striped, res.StripeError)
	}
	if _, err := cn.o.Storage().Manifest(cn.ctx, d.root); err != nil {
		t.Fatalf("acknowledged striped, but no manifest: %v", err)
	}
}

// TestUploadStripedBeforeAck: with several origins sharing a PostgreSQL
// database, no acknowledged upload may live on one origin's disk: it is
// striped before it is answered 201. With too few healthy peers it is
// refused, 503 with Retry-After, and nothing is published: no root, no
// charge, no reservation left, no billing event. Retried once the peers
// are there, it is published and charged once, for the blocks the refused
// attempt left in the origin's cache too. (On SQLite with the origin set
// to stripe before acknowledging.)
func TestUploadStripedBeforeAck(t *testing.T) { pgtest.Dialects(t, testUploadStripedBeforeAck) }

func testUploadStripedBeforeAck(t *testing.T, dsn string) {
	cn := newCARNet(t, dsn)
	if !cn.o.stripeBeforeAck {
		if cn.o.db.Postgres() {
			t.Fatal("an origin over PostgreSQL, striping, does not stripe before acknowledging")
		}
		cn.o.stripeBeforeAck = true
	}
	cn.addPeers(t, 2, 1<<20) // 2+1 shards need 3
	d := newTestDAG(t, "striped before the answer", 3)
	p := testPublisher(t)
	post := func() (int, http.Header, []byte) {
		t.Helper()
		car := carBytes(t, []cid.Cid{d.root}, d.blocks...)
		req, err := http.NewRequest("POST", cn.url+"/api/v1/car", bytes.NewReader(car))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(originapi.UploadHeader, signUpload(t, p, time.Now(), fmt.Sprintf("nonce-%024d", time.Now().UnixNano()),
			[]cid.Cid{d.root}, d.blocks...))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, body
	}
	code, h, body := post()
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !bytes.Contains(body, []byte("healthy storage peers")) {
		t.Fatalf("with 2 peers for 2+1 shards: HTTP %d, Retry-After %q, %s; want 503, retry later, saying why", code, h.Get("Retry-After"), body)
	}
	ctx := cn.ctx
	var roots, reservations, events int
	count := func() {
		t.Helper()
		for q, n := range map[string]*int{`SELECT count(*) FROM roots`: &roots, `SELECT count(*) FROM reservations`: &reservations,
			`SELECT count(*) FROM billing_log WHERE kind = 'upload'`: &events} {
			if err := cn.o.db.QueryRowContext(ctx, q).Scan(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	count()
	u, err := cn.o.Usage(ctx, p.ID)
	if err != nil || roots != 0 || reservations != 0 || events != 0 || u.UsedBytes != 0 || u.Uploads != 0 {
		t.Fatalf("after the refusal: %d roots, %d reservations, %d upload events, usage %+v (%v); want nothing", roots, reservations, events, u, err)
	}

	cn.addPeers(t, 1, 1<<20)
	// A peer whose 100 ms heartbeats come late on a loaded machine is
	// unhealthy for a moment: retry as a client would.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if code, _, body = post(); code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusCreated {
		t.Fatalf("with 3 peers: HTTP %d, %s", code, body)
	}
	var res originapi.UploadResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	size := dagSize(d.blocks)
	if !res.Striped || res.NewBytes != size || res.UsedBytes != size {
		t.Fatalf("acknowledged %+v; want striped, charged %d once", res, size)
	}
	if _, err := cn.o.Storage().Manifest(ctx, d.root); err != nil {
		t.Fatalf("acknowledged, but no manifest: %v", err)
	}
	count()
	if roots != 1 || reservations != 0 || events != 1 {
		t.Fatalf("after the upload: %d roots, %d reservations, %d upload events", roots, reservations, events)
	}
}
