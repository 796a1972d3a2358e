package origindb

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqlitedb"
)

// TestBillingLogBackfill: a database from before the billing log gets,
// when it migrates, one event per fact its tables hold, in time order:
// each upload, each name's current value (its publisher the IPNS key's
// peer), each shard where it is now with the root that made its segment,
// each flag.
func TestBillingLogBackfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "origin.db")
	old, err := sqlitedb.Open(ctx, path, history[:5])
	if err != nil {
		t.Fatal(err)
	}
	pub := testkit.Key(t, 1).ID
	name := ipns.NameFromPeer(pub).String()
	sec := int64(time.Second)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO root_publishers (root, publisher, created_at) VALUES ('r1', 'P', 10), ('r1', 'A', 40), ('r2', 'P', 20)`, nil},
		{`INSERT INTO names (name, ipns, created_at) VALUES ('blog', ?, 11), ('odd', 'k51-not-a-name', 12)`, []any{name}},
		{`INSERT INTO records (ipns, sequence, value, validity, ttl_ns, record, updated_at)
			VALUES (?, 2, '/ipfs/r2/index.html', 0, ?, x'00', ?), ('k51-not-a-name', 1, '/ipns/elsewhere', 0, 0, x'00', ?)`,
			[]any{name, 30 * sec, 25 * sec, 12 * sec}},
		{`INSERT INTO segments (id, length, shard_size, data_shards, parity_shards, chunk_size, created_at) VALUES (7, 100, 50, 2, 1, 16, ?)`,
			[]any{15 * sec}},
		{`INSERT INTO shards (segment_id, idx, shard_id, peer_id, chunks) VALUES (7, 0, 's0', 'S1', x''), (7, 1, 's1', 'S2', x'')`, nil},
		{`INSERT INTO manifest_segments (root, idx, segment_id) VALUES ('r2', 0, 7), ('r1', 0, 7)`, nil},
		{`INSERT INTO stripe_jobs (root, state, created_at, updated_at) VALUES ('r1', 'done', 1, 1), ('r2', 'done', 2, 2)`, nil},
		{`INSERT INTO flags (peer_id, shard_id, reason, source, at) VALUES ('S2', 's1', 'bad-bytes', 'audit', ?)`, []any{50 * sec}},
	} {
		if _, err := old.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	evs, last, err := Events(ctx, db, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []originapi.BillingEvent{
		{Kind: "upload", Root: "r1", Publisher: "P", At: time.Unix(10, 0)},
		{Kind: "place", Shard: "s0", Peer: "S1", Segment: 7, Size: 50, Root: "r1", At: time.Unix(15, 0)},
		{Kind: "place", Shard: "s1", Peer: "S2", Segment: 7, Size: 50, Root: "r1", At: time.Unix(15, 0)},
		{Kind: "upload", Root: "r2", Publisher: "P", At: time.Unix(20, 0)},
		{Kind: "name", Name: "blog", IPNS: name, Publisher: pub.String(), Root: "r2", Seq: 2, TTLSeconds: 30, At: time.Unix(25, 0)},
		{Kind: "upload", Root: "r1", Publisher: "A", At: time.Unix(40, 0)},
		{Kind: "flag", Shard: "s1", Peer: "S2", Reason: "bad-bytes", At: time.Unix(50, 0)},
	}
	if len(evs) != len(want) || last != int64(len(want)) {
		t.Fatalf("%d events, last %d: %+v; want %d", len(evs), last, evs, len(want))
	}
	for i, w := range want {
		w.ID, w.At = int64(i+1), w.At.UTC()
		if evs[i] != w {
			t.Errorf("event %d: %+v\nwant      %+v", i, evs[i], w)
		}
	}
	// Version 10 seeds the log's counter with its last ID.
	var n int64
	if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'billing_log'`).Scan(&n); err != nil || n != last {
		t.Fatalf("billing_log counter %d, %v; want %d", n, err, last)
	}
}
