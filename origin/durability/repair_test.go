package durability

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
)

// countingShards is a ShardStore that counts the shard reads it passes
// on: each is a read order the publisher pays.
type countingShards struct {
	erasure.ShardStore
	gets atomic.Int64
}

func (s *countingShards) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	s.gets.Add(1)
	return s.ShardStore.GetShard(ctx, p, shard, off, length)
}

var _ erasure.ShardStore = (*countingShards)(nil)

// TestRepairBackoff: a segment with fewer than k healthy shards cannot be
// rebuilt, and repair reads nothing of it, however many passes run; a
// segment whose repair fails (here: no peer takes the rebuilt shard) is
// tried again 1, 2, 4, 8 repair intervals later (±10 %), at once when a
// new peer joins or its healthy shards change, and forgotten once
// repaired. Repair used to read
// k whole shards of every segment at risk every pass, before learning it
// had fewer than k, each read billed to the publisher.
func TestRepairBackoff(t *testing.T) {
	const interval = 10 * time.Millisecond // the test runs the passes: only the clock matters
	sc := StripeConfig{DataShards: 4, ParityShards: 2, ChunkSize: 512, AuditInterval: time.Hour, RepairInterval: interval}

	t.Run("below k reads nothing", func(t *testing.T) {
		pgtest.Dialects(t, func(t *testing.T, dsn string) {
			ctx := context.Background()
			sn := newStripeNet(t, dsn, 6, sc)
			for i := range sn.peers {
				sn.heartbeat(t, i, int64(900-100*i))
			}
			sn.publish(t, bytes.Repeat([]byte("unrecoverable "), 100))
			store := &countingShards{ShardStore: sn.kp.shardStore}
			sn.kp.shardStore = store
			// Three peers (k−1) stay; the others are silent past 3 heartbeats.
			sn.advance(4 * time.Second)
			for i := range 3 {
				sn.heartbeat(t, i, 500)
			}
			for pass := range 10 {
				_, err := sn.kp.Repair(ctx)
				if !errors.Is(err, erasure.ErrNotEnoughShards) && pass == 0 {
					t.Fatalf("pass %d: err %v, want ErrNotEnoughShards", pass, err)
				}
				sn.advance(interval)
			}
			if n := store.gets.Load(); n != 0 {
				t.Fatalf("%d shard reads over 10 passes of a segment with k−1 healthy shards, want 0", n)
			}
			skipped := testutil.ToFloat64(sn.kp.metrics.repairSkips.WithLabelValues("not_enough_shards")) +
				testutil.ToFloat64(sn.kp.metrics.repairSkips.WithLabelValues("backoff"))
			if skipped != 10 {
				t.Fatalf("repairs_skipped_total = %v over 10 passes, want 10", skipped)
			}
		})
	})

	t.Run("failing repair backs off", func(t *testing.T) {
		pgtest.Dialects(t, func(t *testing.T, dsn string) {
			ctx := context.Background()
			sn := newStripeNet(t, dsn, 8, sc) // peer 6 is the spare; peer 7 joins later
			for i := range 7 {
				sn.heartbeat(t, i, int64(900-100*i))
			}
			sn.publish(t, bytes.Repeat([]byte("repair me "), 100))
			store := &countingShards{ShardStore: sn.kp.shardStore}
			sn.kp.shardStore = store
			// The spare, and later peer 7, refuse every shard.
			refuse := func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "disk full", http.StatusInsufficientStorage)
			}
			sn.mu.Lock()
			sn.lie[6], sn.lie[7] = refuse, refuse
			sn.mu.Unlock()
			// Peers 0 and 1 go silent: k = 4 healthy shards are left.
			sn.advance(4 * time.Second)
			for i := 2; i < 7; i++ {
				sn.heartbeat(t, i, 500)
			}
			start := sn.now()
			var attempts []time.Duration // since start
			pass := func() {
				before := store.gets.Load()
				sn.kp.Repair(ctx)
				if store.gets.Load() > before {
					attempts = append(attempts, sn.now().Sub(start))
				}
			}
			const step = interval / 20
			// 1+2+4+8 intervals, +10 % at most, come before 18; the sixth
			// attempt, 16 intervals later (−10 %), after.
			for sn.now().Sub(start) < 18*interval {
				pass()
				sn.advance(step)
			}
			// Attempts at 0, then gaps of 1, 2, 4, 8 intervals, each ±10 %
			// (and up to one step late: passes run every step).
			if len(attempts) != 5 {
				t.Fatalf("attempts at %v over 18 intervals, want 5 (gaps of 1, 2, 4, 8 intervals)", attempts)
			}
			for i := 1; i < len(attempts); i++ {
				gap, want := attempts[i]-attempts[i-1], interval<<(i-1)
				if gap < want*9/10 || gap > want*11/10+step {
					t.Fatalf("gap %d between attempts %v, want %v ± 10 %% (attempts at %v)", i, gap, want, attempts)
				}
			}
			if skipped := testutil.ToFloat64(sn.kp.metrics.repairSkips.WithLabelValues("backoff")); skipped == 0 {
				t.Fatal("no backed-off repair counted")
			}
			var failures int
			if err := sn.kp.db.QueryRowContext(ctx, `SELECT failures FROM repair_backoff`).Scan(&failures); err != nil || failures != 5 {
				t.Fatalf("repair_backoff failures %d, %v; want 5", failures, err)
			}

			// A new peer joins: a shard may now find a place, so the segment is
			// tried at once (not 16 intervals later), and backs off afresh.
			sn.heartbeat(t, 7, 900)
			before := store.gets.Load()
			if _, err := sn.kp.Repair(ctx); err == nil || store.gets.Load() == before {
				t.Fatalf("repair after a new peer joined: err %v, reads %d; want a failed attempt at once", err, store.gets.Load()-before)
			}
			if err := sn.kp.db.QueryRowContext(ctx, `SELECT failures FROM repair_backoff`).Scan(&failures); err != nil || failures != 1 {
				t.Fatalf("repair_backoff failures %d, %v after a new peer joined; want 1", failures, err)
			}

			// Peer 0 comes back: the segment changed, so it is tried at once,
			// and this time repaired.
			sn.mu.Lock()
			delete(sn.lie, 6)
			sn.mu.Unlock()
			sn.heartbeat(t, 0, 500)
			before = store.gets.Load()
			placed, err := sn.kp.Repair(ctx)
			if err != nil || placed != 1 || store.gets.Load() == before {
				t.Fatalf("repair after a peer came back: placed %d, err %v, reads %d; want shard 1 placed at once", placed, err, store.gets.Load()-before)
			}
			var rows int
			if err := sn.kp.db.QueryRowContext(ctx, `SELECT count(*) FROM repair_backoff`).Scan(&rows); err != nil || rows != 0 {
				t.Fatalf("%d repair_backoff rows after a successful repair (%v), want 0", rows, err)
			}
		})
	})
}

// TestRepairDelay: the backoff doubles from one interval, is capped at
// MaxRepairBackoff, and jitters by at most 10 %.
func TestRepairDelay(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		failures int
		u        float64
		want     time.Duration
	}{
		{"first failure", 10 * time.Second, 1, 0.5, 10 * time.Second},
		{"third failure", 10 * time.Second, 3, 0.5, 40 * time.Second},
		{"capped", 10 * time.Second, 12, 0.5, MaxRepairBackoff},
		{"overflow capped", 10 * time.Second, 200, 0.5, MaxRepairBackoff},
		{"would wrap around", 10 * time.Second, 32, 0.5, MaxRepairBackoff},
		{"interval over the cap", 2 * time.Hour, 1, 0.5, MaxRepairBackoff},
		{"least jitter", 10 * time.Second, 1, 0, 9 * time.Second},
		{"most jitter", 10 * time.Second, 2, 1, 22 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := repairDelay(tc.interval, tc.failures, tc.u); got != tc.want {
				t.Fatalf("repairDelay(%v, %d, %v) = %v, want %v", tc.interval, tc.failures, tc.u, got, tc.want)
			}
		})
	}
}
