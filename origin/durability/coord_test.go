package durability

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/storageapi"
)

// Two origins over one database: each job runs once, and a holder that
// stops has its work taken over.

// addKeeper adds to sn a second origin sharing sn.kp's database (over its
// own connections to a PostgreSQL database, over the same handle to a
// SQLite file), with its own key (sn.other, which the peers take orders
// from) and disk, on sn's clock; the two read back each other's
// manifests.
func (sn *stripeNet) addKeeper(t *testing.T, dsn string, sc StripeConfig) (*Keeper, blockstore.Blockstore) {
	t.Helper()
	db := sn.kp.db
	if db.Postgres() {
		var err error
		if db, err = origindb.Open(context.Background(), dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
	}
	kp, _ := keeperOn(t, db, sc, sn.other)
	kp.now = sn.now
	kp.origins[sn.kp.key.ID] = true
	sn.kp.origins[kp.key.ID] = true
	return kp, kp.cfg.Local.(blockstore.Blockstore)
}

// silenceFirst has the first n peers go silent: the clock moves on, and
// only the others send heartbeats.
func (sn *stripeNet) silenceFirst(t *testing.T, n int) {
	t.Helper()
	sn.advance(10 * time.Second)
	for i := n; i < len(sn.peers); i++ {
		sn.heartbeat(t, i, 500)
	}
}

// rawRoots stores n one-block roots on each of the disks, and returns them.
func rawRoots(t *testing.T, n int, disks ...blockstore.Blockstore) []cid.Cid {
	t.Helper()
	var roots []cid.Cid
	for i := range n {
		nd := mdag.NewRawNode([]byte(fmt.Sprintf("root %d of %s", i, t.Name())))
		for _, d := range disks {
			if err := d.Put(context.Background(), nd); err != nil {
				t.Fatal(err)
			}
		}
		roots = append(roots, nd.Cid())
	}
	return roots
}

// count returns the result of a count(*) query.
func count(t *testing.T, kp *Keeper, query string, args ...any) int {
	t.Helper()
	var n int
	if err := kp.db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStripeJobsRunOnce: two origins' stripers, started together over the
// same unclaimed jobs (both disks hold the blocks), stripe each root once:
// one segment and one manifest version per root, and no more shards
// placed than that.
func TestStripeJobsRunOnce(t *testing.T) { pgtest.Dialects(t, testStripeJobsRunOnce) }

func testStripeJobsRunOnce(t *testing.T, dsn string) {
	sc := StripeConfig{DataShards: 2, ParityShards: 1, ChunkSize: 512, AuditInterval: time.Hour, RepairInterval: time.Hour,
		LeaseTTL: 2 * time.Second}
	sn := newStripeNet(t, dsn, 3, sc)
	b, diskB := sn.addKeeper(t, dsn, sc)
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 8
	roots := rawRoots(t, n, sn.local, diskB)
	for _, r := range roots {
		if err := sn.kp.Queue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Unclaimed, as jobs queued before claims were: either may take each.
	if _, err := sn.kp.db.ExecContext(ctx, `UPDATE stripe_jobs SET holder = '', lease_until = 0`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, kp := range []*Keeper{sn.kp, b} {
		wg.Go(func() { kp.runStriper(ctx) })
	}
	testkit.WaitFor(t, 30*time.Second, "every root striped", func() bool {
		return count(t, b, `SELECT count(*) FROM stripe_jobs WHERE state = 'done'`) == n
	})
	cancel()
	wg.Wait()
	if segs, places := count(t, b, `SELECT count(*) FROM segments`), count(t, b, `SELECT count(*) FROM billing_log WHERE kind = 'place'`); segs != n || places != 3*n {
		t.Fatalf("%d segments and %d shards placed for %d one-block roots: some were striped twice", segs, places, n)
	}
	if v := count(t, b, `SELECT count(*) FROM manifests WHERE version != 1`); v != 0 {
		t.Fatalf("%d manifests signed more than once", v)
	}
	signers := count(t, b, `SELECT count(DISTINCT signer) FROM manifests`)
	t.Logf("%d roots striped by %d origin(s)", n, signers)
}

// TestStripeJobTakenOver: an origin queues two roots and stops before
// striping them. Once its claims lapse the other origin takes both over:
// the root it has a copy of it stripes, and the origin that queued it,
// waiting in another process, hears of it; the root whose blocks only the
// stopped origin had is abandoned. Queued again (the origin is back, and
// its upload is retried), it is striped.
func TestStripeJobTakenOver(t *testing.T) { pgtest.Dialects(t, testStripeJobTakenOver) }

func testStripeJobTakenOver(t *testing.T, dsn string) {
	const ttl = 500 * time.Millisecond
	sc := StripeConfig{DataShards: 2, ParityShards: 1, ChunkSize: 512, AuditInterval: time.Hour, RepairInterval: time.Hour,
		LeaseTTL: ttl}
	sn := newStripeNet(t, dsn, 3, sc)
	b, diskB := sn.addKeeper(t, dsn, sc)
	for i := range sn.peers {
		sn.heartbeat(t, i, 900)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shared := rawRoots(t, 1, sn.local, diskB)[0]
	onlyA := rawRoots(t, 2, sn.local)[1]
	for _, r := range []cid.Cid{shared, onlyA} {
		if err := sn.kp.Queue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// A stops here. B's striper runs.
	start := time.Now()
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan struct{})
	go func() { b.runStriper(bctx); close(bdone) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if ok, err := sn.kp.WaitStriped(wctx, shared); !ok || err != nil {
		t.Fatalf("the root both disks hold: striped %v, %v", ok, err)
	}
	if took := time.Since(start); took < ttl || took > 10*ttl {
		t.Errorf("taken over after %s; want once the claim lapsed (TTL %s), within a pass", took, ttl)
	}
	if ok, err := sn.kp.WaitStriped(wctx, onlyA); ok || err == nil {
		t.Fatalf("the root only A's disk held: striped %v, %v; want abandoned", ok, err)
	}
	var state, holder string
	if err := b.db.QueryRowContext(ctx, `SELECT state, holder FROM stripe_jobs WHERE root = ?`, onlyA.String()).Scan(&state, &holder); err != nil ||
		state != "abandoned" || holder != b.holder() {
		t.Fatalf("job of the root only A had: %s, held by %s (%v)", state, holder, err)
	}
	bstop() // B stops; A is back, and the upload is retried
	<-bdone
	if err := sn.kp.Queue(ctx, onlyA); err != nil {
		t.Fatal(err)
	}
	root, previous, ok, err := sn.kp.claimNextStripeJob(ctx)
	if err != nil || !ok || root != onlyA || previous != sn.kp.holder() {
		t.Fatalf("A's claim of the root queued again: %s from %q, %v, %v", root, previous, ok, err)
	}
	if _, err := sn.kp.runStripeJob(ctx, root, previous); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Manifest(ctx, onlyA); err != nil {
		t.Fatalf("B reads A's manifest: %v", err)
	}
}

// TestRepairAcrossOrigins: two origins repair the same segment at once
// (each as if it held the lease): every lost shard is moved once, the
// loser's copy is dropped, the manifest is re-signed, and every shard
// passes its audit.
func TestRepairAcrossOrigins(t *testing.T) { pgtest.Dialects(t, testRepairAcrossOrigins) }

func testRepairAcrossOrigins(t *testing.T, dsn string) {
	ctx := context.Background()
	sc := StripeConfig{DataShards: 2, ParityShards: 2, ChunkSize: 512, RepairThreshold: 4, AuditInterval: time.Hour,
		RepairInterval: time.Hour}
	sn := newStripeNet(t, dsn, 7, sc)
	b, _ := sn.addKeeper(t, dsn, sc)
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i)) // peers 0-3 get the shards, 4-6 are spares
	}
	root := sn.publish(t, []byte("a segment two origins repair at once"))
	sn.silenceFirst(t, 2)
	_, bySeg, err := sn.kp.segmentsHealth(ctx)
	if err != nil || len(bySeg) != 1 {
		t.Fatalf("segments: %d, %v", len(bySeg), err)
	}
	var seg int64
	for id := range bySeg {
		seg = id
	}
	var wg sync.WaitGroup
	placed := make([]int, 2)
	errs := make([]error, 2)
	for i, kp := range []*Keeper{sn.kp, b} {
		rows := append([]shardRow(nil), bySeg[seg]...)
		wg.Go(func() { placed[i], errs[i] = kp.repairSegment(ctx, seg, rows) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("repairs: %v; %v", errs[0], errs[1])
	}
	if moves := count(t, b, `SELECT count(*) FROM billing_log WHERE kind = 'move'`); moves != 2 || placed[0]+placed[1] != 2 {
		t.Fatalf("%d moves logged, %d+%d shards placed; want the 2 lost shards moved once each", moves, placed[0], placed[1])
	}
	if off := count(t, b, `SELECT count(*) FROM shards WHERE peer_id IN (?, ?)`, sn.keys[0].ID.String(), sn.keys[1].ID.String()); off != 0 {
		t.Fatalf("%d shards still on the silent peers", off)
	}
	m, err := b.Manifest(ctx, root)
	if err != nil || m.Version < 2 {
		t.Fatalf("manifest after the repair: %+v, %v", m, err)
	}
	for _, sh := range m.Segments[0].Shards {
		if sh.Peer == sn.keys[0].ID.String() || sh.Peer == sn.keys[1].ID.String() {
			t.Fatalf("the re-signed manifest still places a shard on a silent peer")
		}
	}
	if failed, err := sn.kp.AuditAll(ctx); err != nil || failed != 0 {
		t.Fatalf("%d audits failed after the repair (%v)", failed, err)
	}
	// Nothing left behind on the spares that no row places.
	for i := 4; i < len(sn.peers); i++ {
		sn.heartbeat(t, i, 500)
	}
	if n, err := b.SweepOrphans(ctx); err != nil || n != 0 {
		t.Fatalf("sweep after the repairs deleted %d shards (%v): a loser's copy was left", n, err)
	}
}

// TestSweepAcrossOrigins: one origin's sweep keeps a shard another origin
// is putting on a peer right now, and deletes it once that job ends
// without a row placing it.
func TestSweepAcrossOrigins(t *testing.T) { pgtest.Dialects(t, testSweepAcrossOrigins) }

func testSweepAcrossOrigins(t *testing.T, dsn string) {
	ctx := context.Background()
	sc := StripeConfig{DataShards: 1, ParityShards: 1, ChunkSize: 512, AuditInterval: time.Hour, RepairInterval: time.Hour}
	sn := newStripeNet(t, dsn, 2, sc)
	b, _ := sn.addKeeper(t, dsn, sc)
	data := []byte("a shard origin A is placing")
	id := storageapi.ShardID(data)
	sn.heartbeat(t, 0, 900)
	job := sn.kp.placingShards(ctx, func() {})
	if err := job.PutShard(ctx, sn.keys[0].ID, id, data); err != nil {
		t.Fatal(err)
	}
	sn.heartbeat(t, 0, 900) // it reports more shards than are placed
	if n, err := b.SweepOrphans(ctx); err != nil || n != 0 || !sn.holds(t, 0, id) {
		t.Fatalf("B's sweep deleted %d shards (%v), held: %v; want A's shard in flight kept", n, err, sn.holds(t, 0, id))
	}
	job.release(ctx)
	sn.heartbeat(t, 0, 900)
	if n, err := b.SweepOrphans(ctx); err != nil || n != 1 || sn.holds(t, 0, id) {
		t.Fatalf("B's sweep after A's job ended: %d deleted (%v); want the orphan deleted", n, err)
	}
}

// TestRunRepairsOnce: two origins run their loops over a segment that
// lost two shards; the repair lease lets one pass at a time run, so each
// shard is moved once and the manifest re-signed once.
func TestRunRepairsOnce(t *testing.T) { pgtest.Dialects(t, testRunRepairsOnce) }

func testRunRepairsOnce(t *testing.T, dsn string) {
	sc := StripeConfig{DataShards: 2, ParityShards: 2, ChunkSize: 512, RepairThreshold: 4, AuditInterval: time.Hour,
		RepairInterval: 50 * time.Millisecond, LeaseTTL: time.Second}
	sn := newStripeNet(t, dsn, 7, sc)
	b, _ := sn.addKeeper(t, dsn, sc)
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i))
	}
	root := sn.publish(t, []byte("a segment two origins' loops would repair"))
	sn.silenceFirst(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, kp := range []*Keeper{sn.kp, b} {
		wg.Go(func() { kp.Run(ctx) })
	}
	testkit.WaitFor(t, 20*time.Second, "the segment repaired", func() bool {
		return count(t, b, `SELECT count(*) FROM shards WHERE peer_id IN (?, ?)`, sn.keys[0].ID.String(), sn.keys[1].ID.String()) == 0
	})
	time.Sleep(10 * sc.RepairInterval) // more passes, by either
	cancel()
	wg.Wait()
	if moves := count(t, b, `SELECT count(*) FROM billing_log WHERE kind = 'move'`); moves != 2 {
		t.Fatalf("%d moves logged, want the 2 lost shards moved once each", moves)
	}
	if m, err := b.Manifest(context.Background(), root); err != nil || m.Version != 2 {
		t.Fatalf("manifest %+v, %v; want version 2, re-signed once", m, err)
	}
}

// TestReadersFollowMoves: an origin reading a segment through a cached
// Reader, after another origin moved shards off peers that deleted them,
// reads around them, and drops the Reader so that the next is made from
// the database as it is now.
func TestReadersFollowMoves(t *testing.T) { pgtest.Dialects(t, testReadersFollowMoves) }

func testReadersFollowMoves(t *testing.T, dsn string) {
	ctx := context.Background()
	sc := StripeConfig{DataShards: 2, ParityShards: 2, ChunkSize: 512, RepairThreshold: 4, AuditInterval: time.Hour,
		RepairInterval: time.Hour}
	sn := newStripeNet(t, dsn, 7, sc)
	b, _ := sn.addKeeper(t, dsn, sc)
	for i := range sn.peers {
		sn.heartbeat(t, i, int64(900-100*i))
	}
	root := sn.publish(t, []byte("a segment B reads while A repairs it"))
	if _, err := b.ReadBlock(ctx, root); err != nil {
		t.Fatal(err)
	}
	segs := b.readers.Keys()
	if len(segs) != 1 {
		t.Fatalf("%d readers cached", len(segs))
	}
	stale, _ := b.readers.Peek(segs[0])
	sn.silenceFirst(t, 2) // A moves their shards away
	if placed, err := sn.kp.Repair(ctx); err != nil || placed != 2 {
		t.Fatalf("A's repair placed %d (%v)", placed, err)
	}
	if _, err := b.ReadBlock(ctx, root); err != nil {
		t.Fatalf("B's read through its old Reader: %v", err)
	}
	if now, ok := b.readers.Peek(segs[0]); ok && now.r == stale.r {
		t.Fatal("B still reads the segment through a Reader made before the move")
	}
	if _, err := b.ReadBlock(ctx, root); err != nil {
		t.Fatal(err)
	}
}
