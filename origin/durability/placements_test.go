package durability

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/storageapi"
)

// TestPlacements: a delete is refused while a put of the same shard on the
// same peer is in flight, and a put waits for a delete in progress.
func TestPlacements(t *testing.T) {
	ps := newPlacements()
	k := placement{shard: "s", peer: "p"}
	other := placement{shard: "s", peer: "q"}
	ctx := context.Background()

	if err := ps.begin(ctx, k); err != nil {
		t.Fatal(err)
	}
	if ps.startDelete(k) {
		t.Fatal("delete allowed while the shard is being put on the peer")
	}
	if !ps.startDelete(other) {
		t.Fatal("delete refused for the same shard on another peer")
	}
	ps.endDelete(other)
	ps.end(k)
	if !ps.startDelete(k) {
		t.Fatal("delete refused once the put ended")
	}
	if ps.startDelete(k) {
		t.Fatal("two deletes of one shard on one peer at once")
	}

	// A put during the delete waits for it; a cancelled one gives up.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := ps.begin(cctx, k); !errors.Is(err, context.Canceled) {
		t.Fatalf("begin with a cancelled context during a delete: %v", err)
	}
	began := make(chan error, 1)
	go func() { began <- ps.begin(ctx, k) }()
	select {
	case err := <-began:
		t.Fatalf("a put began during a delete of the same shard on the same peer (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	ps.endDelete(k)
	if err := <-began; err != nil {
		t.Fatal(err)
	}
	if ps.startDelete(k) {
		t.Fatal("delete allowed while the waiting put is in flight")
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
	job := sn.kp.placingShards()
	if err := job.PutShard(ctx, sn.keys[0].ID, id, data); err != nil {
		t.Fatal(err)
	}
	// No row places the shard on peer 0 yet: only the job in flight does.
	sn.kp.dropOldShard(ctx, shardRow{id: id, peer: sn.keys[0].ID.String()})
	if !sn.holds(t, 0, id) {
		t.Fatal("repair deleted a shard a stripe job had just placed on the peer")
	}
	job.release()
	sn.kp.dropOldShard(ctx, shardRow{id: id, peer: sn.keys[0].ID.String()})
	if sn.holds(t, 0, id) {
		t.Fatal("an old shard no row or job places on the peer was kept")
	}
}
