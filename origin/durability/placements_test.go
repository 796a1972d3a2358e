package durability

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/sqldb"
	"github.com/topcdn/topcdn/storageapi"
)

// TestPlacements: a delete is refused while a put of the same shard on the
// same peer is in flight, by this origin or another sharing the database,
// or while a saved row places it there; a put waits for a delete in
// progress; the intents of an origin that stopped lapse. On the
// database's clock, a test's on SQLite.
func TestPlacements(t *testing.T) { pgtest.Dialects(t, testPlacements) }

func testPlacements(t *testing.T, dsn string) {
	ctx := context.Background()
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	db, err := origindb.Open(ctx, dsn, sqldb.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sc := StripeConfig{LeaseTTL: time.Minute}
	a, _ := keeperOn(t, db, sc)
	b, _ := keeperOn(t, db, sc)
	pa, pb := testkit.Key(t, 1).ID, testkit.Key(t, 2).ID
	k := placement{shard: "s", peer: pa}
	other := placement{shard: "s", peer: pb}

	if err := a.beginPut(ctx, k, 100); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.startDelete(ctx, k); err != nil || ok {
		t.Fatalf("delete allowed while another origin puts the shard on the peer: %v, %v", ok, err)
	}
	if ok, err := a.startDelete(ctx, other); err != nil || !ok {
		t.Fatalf("delete refused for the same shard on another peer: %v, %v", ok, err)
	}
	if err := a.endDelete(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := a.beginPut(ctx, k, 100); err != nil { // a second put of it there
		t.Fatal(err)
	}
	if err := a.endPut(ctx, k); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.startDelete(ctx, k); ok {
		t.Fatal("delete allowed while the second put is in flight")
	}
	if err := a.endPut(ctx, k); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.startDelete(ctx, k); err != nil || !ok {
		t.Fatalf("delete refused once the puts ended: %v, %v", ok, err)
	}
	if ok, _ := a.startDelete(ctx, k); ok {
		t.Fatal("two deletes of one shard on one peer at once")
	}

	// A put during the delete waits for it; a cancelled one gives up.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.beginPut(cctx, k, 100); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context during a delete: %v", err)
	}
	began := make(chan error, 1)
	go func() { began <- a.beginPut(ctx, k, 100) }()
	select {
	case err := <-began:
		t.Fatalf("a put began during a delete of the same shard on the same peer (err %v)", err)
	case <-time.After(3 * placementPoll):
	}
	if err := b.endDelete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := <-began; err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.startDelete(ctx, k); ok {
		t.Fatal("delete allowed while the waiting put is in flight")
	}

	// A saved row places the shard there: no delete, and no intent left
	// behind to hold up puts.
	placed := placement{shard: "placed", peer: pa}
	if _, err := db.ExecContext(ctx, `INSERT INTO segments (id, length, shard_size, data_shards, parity_shards, chunk_size, created_at)
		VALUES (1, 1, 1, 1, 1, 512, 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO shards (segment_id, idx, shard_id, peer_id, chunks) VALUES (1, 0, ?, ?, ?)`,
		placed.shard, placed.peer.String(), []byte{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.startDelete(ctx, placed); err != nil || ok {
		t.Fatalf("delete allowed of a shard a row places: %v, %v", ok, err)
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if err := a.beginPut(pctx, placed, 100); err != nil {
		t.Fatalf("a refused delete held up a put: %v", err)
	}

	if db.Postgres() {
		return // its clock is the server's
	}
	// A stops with its put of k in flight: once the put's time and the
	// lease TTL are past, it no longer holds up a delete.
	mu.Lock()
	clock = clock.Add(transferTimeout(100) + sc.LeaseTTL + time.Second)
	mu.Unlock()
	if ok, err := b.startDelete(ctx, k); err != nil || !ok {
		t.Fatalf("a stopped origin's put still holds up the delete: %v, %v", ok, err)
	}
}

// TestRepairKeepsShardBeingPlaced: a stripe job has put a shard on a peer
// and not saved its row yet, when repair moves the same shard (same bytes,
// same ID) of another segment off that peer. Repair must not delete the
// file the job's row is about to count on; it did, between its check of
// the rows and its delete order, and the new segment lost a shard.
func TestRepairKeepsShardBeingPlaced(t *testing.T) {
	pgtest.Dialects(t, testRepairKeepsShardBeingPlaced)
}

func testRepairKeepsShardBeingPlaced(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 2, StripeConfig{DataShards: 1, ParityShards: 1, ChunkSize: 512,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	data := []byte("the same shard, placed twice")
	id := storageapi.ShardID(data)
	job := sn.kp.placingShards(ctx, func() {})
	if err := job.PutShard(ctx, sn.keys[0].ID, id, data); err != nil {
		t.Fatal(err)
	}
	// No row places the shard on peer 0 yet: only the job in flight does.
	sn.kp.dropOldShard(ctx, shardRow{id: id, peer: sn.keys[0].ID.String()})
	if !sn.holds(t, 0, id) {
		t.Fatal("repair deleted a shard a stripe job had just placed on the peer")
	}
	job.release(ctx)
	sn.kp.dropOldShard(ctx, shardRow{id: id, peer: sn.keys[0].ID.String()})
	if sn.holds(t, 0, id) {
		t.Fatal("an old shard no row or job places on the peer was kept")
	}
}
