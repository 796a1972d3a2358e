package durability

import (
	"context"
	"fmt"
	"time"

	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// MaxRepairBackoff bounds the pause before the next repair of a segment
// whose repairs keep failing.
const MaxRepairBackoff = time.Hour

// repairJitter is the share of a backoff added or taken at random, so
// segments that failed together are not retried together.
const repairJitter = 0.1

// repairBackoff is a segment's row in repair_backoff: its repairs failed
// failures times in a row, the last with healthySeen healthy shards and
// peersSeen peers to place shards on, and the next is not tried before
// nextAt.
type repairBackoff struct {
	failures    int
	nextAt      time.Time
	healthySeen int
	peersSeen   int
}

// due reports whether a segment backed off as b, now with h's health and
// pool peers to place shards on, may be repaired at now, and with how
// many failures behind it: afresh if its healthy shards changed (a peer
// came back, or another left) or more peers can take its shards than at
// its last failure (a placement that failed may succeed).
func (b repairBackoff) due(h originapi.SegmentHealth, pool int, now time.Time) (ok bool, failures int) {
	if b.failures == 0 || b.healthySeen != h.Healthy || pool > b.peersSeen {
		return true, 0
	}
	return !now.Before(b.nextAt), b.failures
}

// repairDelay is the pause after the failures-th failed repair in a row:
// interval × 2^(failures−1), so attempts come 1, 2, 4, … intervals apart,
// at most MaxRepairBackoff, then ±10 % at random (u in [0, 1)).
func repairDelay(interval time.Duration, failures int, u float64) time.Duration {
	d := max(interval, time.Nanosecond)
	for i := 1; i < failures && d < MaxRepairBackoff; i++ { // no overflow: d < 1h before doubling
		d *= 2
	}
	d = min(d, MaxRepairBackoff)
	return d + time.Duration(float64(d)*repairJitter*(2*u-1))
}

// loadBackoff returns every segment's repair backoff.
func (kp *Keeper) loadBackoff(ctx context.Context) (map[int64]repairBackoff, error) {
	rows, err := kp.db.QueryContext(ctx, `SELECT segment_id, failures, next_at, healthy_seen, peers_seen FROM repair_backoff`)
	if err != nil {
		return nil, fmt.Errorf("durability: repair backoff: %w", err)
	}
	defer rows.Close()
	out := map[int64]repairBackoff{}
	for rows.Next() {
		var seg, next int64
		var b repairBackoff
		if err := rows.Scan(&seg, &b.failures, &next, &b.healthySeen, &b.peersSeen); err != nil {
			return nil, fmt.Errorf("durability: repair backoff: %w", err)
		}
		b.nextAt = time.Unix(0, next)
		out[seg] = b
	}
	return out, rows.Err()
}

// backOff records the failures-th failed repair in a row of segment h,
// with why and the pool of peers to place shards on, and when the next
// may be tried (repairDelay).
func (kp *Keeper) backOff(ctx context.Context, h originapi.SegmentHealth, pool, failures int, why error) {
	delay := repairDelay(kp.stripeCfg.RepairInterval, failures, kp.rand())
	next := kp.now().Add(delay)
	if _, err := kp.db.ExecContext(ctx, `INSERT INTO repair_backoff (segment_id, failures, next_at, last_error, healthy_seen, peers_seen)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (segment_id) DO UPDATE SET failures = excluded.failures, next_at = excluded.next_at,
			last_error = excluded.last_error, healthy_seen = excluded.healthy_seen, peers_seen = excluded.peers_seen`,
		h.Segment, failures, next.UnixNano(), why.Error(), h.Healthy, pool); err != nil {
		kp.log.Error("record repair backoff", zap.Int64("segment", h.Segment), zap.Error(err))
		return
	}
	kp.log.Info("repair backed off", zap.Int64("segment", h.Segment), zap.Int("failures", failures),
		zap.Int("healthy", h.Healthy), zap.Duration("retry_in", delay), zap.Error(why))
}

// clearBackoff forgets segment seg's failed repairs.
func (kp *Keeper) clearBackoff(ctx context.Context, seg int64) {
	if _, err := kp.db.ExecContext(ctx, `DELETE FROM repair_backoff WHERE segment_id = ?`, seg); err != nil {
		kp.log.Error("clear repair backoff", zap.Int64("segment", seg), zap.Error(err))
	}
}
