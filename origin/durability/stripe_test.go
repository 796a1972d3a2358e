package durability

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/storage"
	"github.com/topcdn/topcdn/storageapi"
)

// stripeNet is a striping Keeper on a settable clock with storage peers
// served over loopback. The peers send no heartbeats of their own: tests
// send them (heartbeat), so placement order and health are theirs to set.
type stripeNet struct {
	kp    *Keeper
	local blockstore.Blockstore // the origin's disk
	peers []*storage.Server
	keys  []*identity.Key
	addrs []string
	// other is the key of a second origin the peers take orders from
	// (addKeeper).
	other *identity.Key

	mu    sync.Mutex
	clock time.Time
	lie   map[int]http.HandlerFunc // answers peer i gives instead of its own
}

func newStripeNet(t *testing.T, dsn string, n int, sc StripeConfig) *stripeNet {
	t.Helper()
	ctx := context.Background()
	sn := &stripeNet{clock: time.Now(), lie: map[int]http.HandlerFunc{}}
	sn.kp, sn.local = newTestKeeper(t, dsn, Config{HeartbeatInterval: time.Second, Stripe: &sc})
	sn.kp.now = sn.now
	var err error
	if sn.other, err = identity.Generate(nil); err != nil {
		t.Fatal(err)
	}
	for range n {
		key, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(nil)
		s, err := storage.New(ctx, storage.Config{DataDir: t.TempDir(), Key: key, OriginIDs: []peer.ID{sn.kp.key.ID, sn.other.ID},
			Capacity: 1 << 20, PublicAddr: "http://" + ts.Listener.Addr().String(), Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		i, h := len(sn.peers), s.Handler()
		ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sn.mu.Lock()
			lie := sn.lie[i]
			sn.mu.Unlock()
			if lie != nil {
				lie(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
		ts.Start()
		t.Cleanup(func() { ts.Close(); s.Close() })
		sn.peers = append(sn.peers, s)
		sn.keys = append(sn.keys, key)
		sn.addrs = append(sn.addrs, ts.URL)
	}
	return sn
}

func (sn *stripeNet) now() time.Time {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.clock
}

func (sn *stripeNet) advance(d time.Duration) {
	sn.mu.Lock()
	sn.clock = sn.clock.Add(d)
	sn.mu.Unlock()
}

// heartbeat has peer i announce free bytes; placement puts the emptiest
// first.
func (sn *stripeNet) heartbeat(t *testing.T, i int, free int64) {
	t.Helper()
	sn.advance(time.Millisecond) // each heartbeat newer than the last
	rec := httptest.NewRecorder()
	sn.peers[i].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var st storageapi.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	env, err := sn.keys[i].Sign(storageapi.TypeHeartbeat, storageapi.Heartbeat{Peer: sn.keys[i].ID.String(),
		Addr: sn.addrs[i], Capacity: 1 << 20, Free: free, Shards: st.Shards, Time: sn.now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.kp.Heartbeat(context.Background(), env); err != nil {
		t.Fatal(err)
	}
}

// publish stores a one-block DAG holding data on the origin's disk, as an
// upload does, queues it and stripes it.
func (sn *stripeNet) publish(t *testing.T, data []byte) cid.Cid {
	t.Helper()
	ctx := context.Background()
	nd := mdag.NewRawNode(data)
	if err := sn.local.Put(ctx, nd); err != nil {
		t.Fatal(err)
	}
	if err := sn.kp.Queue(ctx, nd.Cid()); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.kp.stripeRoot(ctx, nd.Cid()); err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

// holds reports whether peer i lists shard id.
func (sn *stripeNet) holds(t *testing.T, i int, id string) bool {
	t.Helper()
	rec := httptest.NewRecorder()
	sn.peers[i].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/shards", nil))
	return bytes.Contains(rec.Body.Bytes(), []byte(`"`+id+`"`))
}

// TestRepairKeepsShardsOtherSegmentsNeed: a peer keeps one file per shard
// ID, and two segments can hold the same shard (here the all-zero padding
// shard of two tiny publishes) on the same peer. Repairing one segment's
// copy away from that peer must not delete the file the other segment
// still counts on. It did: dropOldShard sent a DeleteOrder without asking
// whether another segment placed the same shard there, so the other
// segment silently lost a shard and the honest peer then failed its audit
// (404) and was flagged, never to get shards again.
func TestRepairKeepsShardsOtherSegmentsNeed(t *testing.T) {
	pgtest.Dialects(t, testRepairKeepsShardsOtherSegmentsNeed)
}

func testRepairKeepsShardsOtherSegmentsNeed(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 8, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512, RepairThreshold: 5,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	const d, z, x = 0, 3, 6 // peer roles; 1, 2, 4, 5 hold shards of both, 7 is a spare
	// Segment A on peers 0..5 (so peer z holds shard 3), segment B on
	// x,1,2,z,4,5: both put shard 3 on peer z.
	for i, free := range []int64{900, 800, 700, 600, 500, 400, 100, 50} {
		sn.heartbeat(t, i, free)
	}
	a := sn.publish(t, []byte("hello")) // 5 bytes, k=4: shard 3 is two zero bytes
	for i, free := range []int64{10, 800, 700, 600, 500, 400, 900, 50} {
		sn.heartbeat(t, i, free)
	}
	b := sn.publish(t, []byte("world"))

	ma, err := sn.kp.Manifest(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := sn.kp.Manifest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	shA, shB := ma.Segments[0].Shards[3], mb.Segments[0].Shards[3]
	if shA.ID != shB.ID || shA.Peer != shB.Peer || shA.Peer != sn.keys[z].ID.String() {
		t.Fatalf("setup: shard 3 of A is %s on %s, of B %s on %s; want the same shard on peer z", shA.ID, shA.Peer, shB.ID, shB.Peer)
	}
	if mb.Segments[0].Shards[0].Peer != sn.keys[x].ID.String() {
		t.Fatalf("setup: B's shard 0 is on %s, want peer x", mb.Segments[0].Shards[0].Peer)
	}

	// Peers d and z miss their heartbeats (z only for a while: it still
	// answers). A, on both, falls below the threshold; B, on z only, not.
	sn.advance(10 * time.Second)
	for i := range sn.peers {
		if i != d && i != z {
			sn.heartbeat(t, i, 500)
		}
	}
	placed, err := sn.kp.Repair(ctx)
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if placed != 2 {
		t.Fatalf("repair placed %d shards, want A's two", placed)
	}
	sn.heartbeat(t, z, 500) // z is back

	if !sn.holds(t, z, shB.ID) {
		t.Fatal("repairing segment A deleted the shard segment B keeps on peer z")
	}
	failed, err := sn.kp.AuditAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if failed != 0 {
		t.Fatalf("%d audits failed after the repair, want 0", failed)
	}
}

// TestFlagIgnoresShardsMovedAway: once repair has moved a shard off a peer
// and had it deleted there, a read or audit that still asks that peer (a
// cached Reader, an audit target listed before the move) gets 404. That is
// no proof of loss: the peer did as told. It used to flag the honest peer
// as serving bad bytes, which keeps it from ever getting shards again.
func TestFlagIgnoresShardsMovedAway(t *testing.T) { pgtest.Dialects(t, testFlagIgnoresShardsMovedAway) }

func testFlagIgnoresShardsMovedAway(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 7, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512, RepairThreshold: 6,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i)) // peer 0 gets shard 0, peer 6 is the spare
	}
	root := sn.publish(t, []byte("some bytes to stripe over six peers"))
	var stale auditTarget
	if err := sn.kp.db.QueryRowContext(ctx, `SELECT s.shard_id, s.peer_id, s.chunks, g.shard_size, g.chunk_size
		FROM shards s JOIN segments g ON g.id = s.segment_id WHERE s.idx = 0`).
		Scan(&stale.shardID, &stale.peer, &stale.chunks, &stale.shardSize, &stale.chunkSize); err != nil {
		t.Fatal(err)
	}
	if stale.peer != sn.keys[0].ID.String() {
		t.Fatalf("setup: shard 0 on %s, want peer 0", stale.peer)
	}

	// Peer 0 misses heartbeats: its shard moves to the spare and is
	// deleted from it.
	sn.advance(10 * time.Second)
	for i := 1; i < len(sn.peers); i++ {
		sn.heartbeat(t, i, 500)
	}
	if placed, err := sn.kp.Repair(ctx); err != nil || placed != 1 {
		t.Fatalf("repair placed %d, err %v; want 1 shard moved", placed, err)
	}
	if sn.holds(t, 0, stale.shardID) {
		t.Fatal("setup: the old copy was not deleted")
	}
	sn.heartbeat(t, 0, 500) // peer 0 is back

	sn.kp.audit(ctx, stale) // listed before the move
	peers, err := sn.kp.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.ID == sn.keys[0].ID.String() && p.Flags != 0 {
			t.Fatalf("peer 0 flagged %d times for a shard it was told to delete", p.Flags)
		}
	}
	if _, err := sn.kp.Manifest(ctx, root); err != nil {
		t.Fatal(err)
	}
}

// TestAuditFailsPeerClaimingShortShard: the origin audits ranges inside
// the shard's size, which its ID commits to, so a 416 answer can only
// come from a peer that no longer holds the shard (or never did). It was
// counted as "unreachable", so a peer that dropped its shards and answered
// every audit 416 was never caught: its shards stayed healthy and were
// never repaired.
func TestAuditFailsPeerClaimingShortShard(t *testing.T) {
	pgtest.Dialects(t, testAuditFailsPeerClaimingShortShard)
}

func testAuditFailsPeerClaimingShortShard(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 6, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i))
	}
	sn.publish(t, bytes.Repeat([]byte("audit me "), 300))
	sn.mu.Lock()
	sn.lie[2] = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		w.Write([]byte(`{"error":"outside the shard"}`))
	}
	sn.mu.Unlock()
	failed, err := sn.kp.AuditAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if failed != 1 {
		t.Fatalf("%d audits failed, want 1 (peer 2's)", failed)
	}
	health, _, err := sn.kp.segmentsHealth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(health) != 1 || health[0].Bad != 1 || !needsRepair(health[0]) {
		t.Fatalf("segment health %+v, want peer 2's shard bad and the segment due for repair", health)
	}
}

// TestAuditRefusalsCountAsLoss: a peer that keeps sending heartbeats but
// answers audits with errors (here 503) proves nothing; AuditRefusals such
// audits of a shard in a row make the shard lost and due for repair. A
// proof in between starts the count again, and a peer that is down (no
// heartbeats) is not refusing.
func TestAuditRefusalsCountAsLoss(t *testing.T) { pgtest.Dialects(t, testAuditRefusalsCountAsLoss) }

func testAuditRefusalsCountAsLoss(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 6, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512,
		AuditInterval: time.Hour, RepairInterval: time.Hour, LostAfter: time.Hour})
	beat := func(except int) {
		for i := range sn.peers {
			if i != except {
				sn.heartbeat(t, i, int64(900-100*i))
			}
		}
	}
	beat(-1)
	sn.publish(t, bytes.Repeat([]byte("prove it "), 300))
	refuse := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }
	setLie := func(i int, h http.HandlerFunc) {
		sn.mu.Lock()
		sn.lie[i] = h
		sn.mu.Unlock()
	}
	// Peer 2 refuses while heartbeating; peer 4 refuses too, but is down.
	setLie(2, refuse)
	setLie(4, refuse)
	steps := []struct {
		name       string
		peer2Lies  bool
		wantFailed int
		wantBad    int
	}{
		{"first refusal", true, 0, 0},
		{"second refusal", true, 0, 0},
		{"a proof", false, 0, 0},
		{"refusal after the proof", true, 0, 0},
		{"second after the proof", true, 0, 0},
		{"third in a row", true, 1, 1},
	}
	for _, st := range steps {
		if st.peer2Lies {
			setLie(2, refuse)
		} else {
			setLie(2, nil)
		}
		sn.advance(5 * time.Second) // peer 4's last heartbeat grows old
		beat(4)
		failed, err := sn.kp.AuditAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		health, _, err := sn.kp.segmentsHealth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if failed != st.wantFailed || len(health) != 1 || health[0].Bad != st.wantBad {
			t.Fatalf("%s: %d audits failed, segment health %+v; want %d failed, %d bad", st.name, failed, health, st.wantFailed, st.wantBad)
		}
	}
	if !func() bool { h, _, _ := sn.kp.segmentsHealth(ctx); return needsRepair(h[0]) }() {
		t.Fatal("the refused shard is bad but its segment is not due for repair")
	}
}

// TestStripeSharesStripedBlocks: a root whose DAG holds a block striped
// with an earlier publish (and dropped from the origin's disk) is walked
// whole and striped without it; its manifest places the shared block in
// the earlier segment, and it reads back from the peers.
func TestStripeSharesStripedBlocks(t *testing.T) { pgtest.Dialects(t, testStripeSharesStripedBlocks) }

func testStripeSharesStripedBlocks(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 6, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	leaf := sn.publish(t, []byte("a leaf two sites share"))
	if has, _ := sn.local.Has(ctx, leaf); has {
		t.Fatal("setup: the striped leaf is still on the origin's disk")
	}
	root := mdag.NodeWithData([]byte("a site"))
	if err := root.AddRawLink("leaf", &format.Link{Cid: leaf}); err != nil {
		t.Fatal(err)
	}
	if err := sn.local.Put(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.kp.stripeRoot(ctx, root.Cid()); err != nil {
		t.Fatal(err)
	}
	m, err := sn.kp.Manifest(ctx, root.Cid())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Blocks) != 2 || m.Blocks[0].CID != root.Cid().String() || m.Blocks[1].CID != leaf.String() || len(m.Segments) != 2 {
		t.Fatalf("manifest blocks %+v in %d segments; want the root, then the leaf in its earlier segment", m.Blocks, len(m.Segments))
	}
	for _, c := range []cid.Cid{root.Cid(), leaf} {
		if _, err := sn.kp.ReadBlock(ctx, c); err != nil {
			t.Fatalf("read %s back: %v", c, err)
		}
	}
}
