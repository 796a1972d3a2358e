package durability

import (
	"context"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/storageapi"
)

// TestSweepOrphans: a shard a failed job left on a peer is deleted; shards
// segments place, and a shard a job is placing right now, are kept.
func TestSweepOrphans(t *testing.T) { pgtest.Dialects(t, testSweepOrphans) }

func testSweepOrphans(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 6, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512,
		AuditInterval: time.Hour, RepairInterval: time.Hour, SweepInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	root := sn.publish(t, []byte("content that stays"))

	put := func(job *placingShards, i int, data []byte) string {
		t.Helper()
		id := storageapi.ShardID(data)
		if err := job.PutShard(ctx, sn.keys[i].ID, id, data); err != nil {
			t.Fatal(err)
		}
		return id
	}
	failed := sn.kp.placingShards(ctx, func() {})
	orphan := put(failed, 0, []byte("a shard whose job failed before saving its row"))
	failed.release(ctx)
	running := sn.kp.placingShards(ctx, func() {})
	inFlight := put(running, 1, []byte("a shard whose job is still running"))
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}

	n, err := sn.kp.SweepOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || sn.holds(t, 0, orphan) {
		t.Fatalf("sweep deleted %d shards; orphan still held: %v; want the orphan alone deleted", n, sn.holds(t, 0, orphan))
	}
	if !sn.holds(t, 1, inFlight) {
		t.Fatal("sweep deleted a shard a running job had just placed")
	}
	if failed, err := sn.kp.AuditAll(ctx); err != nil || failed != 0 {
		t.Fatalf("after the sweep, %d audits failed (%v): it deleted placed shards", failed, err)
	}
	m, err := sn.kp.Manifest(ctx, root)
	if err != nil || len(m.Segments) != 1 {
		t.Fatalf("manifest: %v", err)
	}

	// The job ends without saving a row: its shard is an orphan now.
	running.release(ctx)
	sn.heartbeat(t, 1, 900)
	if n, err := sn.kp.SweepOrphans(ctx); err != nil || n != 1 || sn.holds(t, 1, inFlight) {
		t.Fatalf("second sweep: %d deleted (%v), shard still held: %v; want 1", n, err, sn.holds(t, 1, inFlight))
	}
	if n, err := sn.kp.SweepOrphans(ctx); err != nil || n != 0 {
		t.Fatalf("a sweep with nothing left to delete deleted %d (%v)", n, err)
	}
}
