package durability

import (
	"context"
	"testing"
	"time"

	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
)

// TestBillingLogStorageEvents: striping logs each shard's placement with
// its root, a repair logs the shard's move to its new peer, and a flag is
// logged, each in the transaction of its change.
func TestBillingLogStorageEvents(t *testing.T) { pgtest.Dialects(t, testBillingLogStorageEvents) }

func testBillingLogStorageEvents(t *testing.T, dsn string) {
	ctx := context.Background()
	sn := newStripeNet(t, dsn, 7, StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512, RepairThreshold: 6,
		AuditInterval: time.Hour, RepairInterval: time.Hour})
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i)) // peer 0 gets shard 0, peer 6 is the spare
	}
	root := sn.publish(t, []byte("some bytes to stripe over six peers"))
	m, err := sn.kp.Manifest(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	events := func() []originapi.BillingEvent {
		t.Helper()
		evs, _, err := origindb.Events(ctx, sn.kp.db, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	evs := events()
	if len(evs) != 6 {
		t.Fatalf("%d events after striping, want 6 placements: %+v", len(evs), evs)
	}
	for i, ev := range evs {
		sh := m.Segments[0].Shards[i]
		if ev.Kind != originapi.EventPlace || ev.Shard != sh.ID || ev.Peer != sh.Peer || ev.Root != root.String() ||
			ev.Size != m.Segments[0].ShardSize || ev.Segment == 0 {
			t.Fatalf("event %d: %+v, want the placement of %+v", i, ev, sh)
		}
	}

	// Peer 0 misses heartbeats: its shard moves to the spare.
	sn.advance(10 * time.Second)
	for i := 1; i < len(sn.peers); i++ {
		sn.heartbeat(t, i, 500)
	}
	if placed, err := sn.kp.Repair(ctx); err != nil || placed != 1 {
		t.Fatalf("repair placed %d, err %v; want 1 shard moved", placed, err)
	}
	evs = events()
	if len(evs) != 7 || evs[6].Kind != originapi.EventMove || evs[6].Shard != m.Segments[0].Shards[0].ID ||
		evs[6].Peer != sn.keys[6].ID.String() || evs[6].Size != m.Segments[0].ShardSize {
		t.Fatalf("after the repair: %+v, want shard 0 moved to peer 6", evs[len(evs)-1])
	}

	// A peer caught with bad bytes is flagged; a flag for a shard the
	// peer no longer holds is not (nor logged).
	sn.kp.flagPeer(erasure.Flag{Peer: sn.keys[1].ID, Shard: m.Segments[0].Shards[1].ID, Reason: "bad-bytes"}, "read")
	sn.kp.flagPeer(erasure.Flag{Peer: sn.keys[0].ID, Shard: m.Segments[0].Shards[0].ID, Reason: "bad-bytes"}, "read")
	evs = events()
	if len(evs) != 8 || evs[7].Kind != originapi.EventFlag || evs[7].Peer != sn.keys[1].ID.String() ||
		evs[7].Shard != m.Segments[0].Shards[1].ID || evs[7].Reason != "bad-bytes" {
		t.Fatalf("after the flags: %+v, want one flag of peer 1", evs[len(evs)-1])
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID || evs[i].At.Before(evs[i-1].At) {
			t.Fatalf("events out of order: %+v", evs)
		}
	}
}
