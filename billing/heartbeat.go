package billing

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// HeartbeatSlackBytes is the fixed part of the heartbeat check's slack.
const HeartbeatSlackBytes = 1 << 20

// errHeartbeatBehind defers a batch the edge's heartbeats do not cover
// yet: billing answers 503 and the edge sends it again.
var errHeartbeatBehind = fmt.Errorf("%w: the edge's heartbeats are behind its batch", errTransient)

// checkHeartbeats bounds what an edge claims for an epoch by what its
// heartbeats say it sent. Its Reporter runs in the process whose byte
// counter the heartbeats carry, and counts a response before recording
// it, so every batch it sends is at most that counter. The claim (this
// batch plus the accepted bytes of the epoch's other parts) may exceed
// the highest counter ever seen (MaxBytes, kept across restarts) by
//
//	2 × ByteRate × (time since the last heartbeat + one heartbeat interval) + 1 MiB
//
// for what the edge served since its last heartbeat. Above that, the
// batch is refused as implausible_vs_heartbeats only when the last
// heartbeat came at least skew (5 s) after billing first received this
// batch, and the edge did not restart from restartMargin before that:
// that counter then includes every response of it (the process that
// sent the batch signed it before). Otherwise the batch is deferred (the
// heartbeats may not show a burst yet; the edge resends); a batch whose
// process restarted around it stays deferred, never paid nor refused.
//
// The check is skipped when the router gives no heartbeat time (an older
// router) or the edge never reported a byte (an older edge, or one that
// had served nothing at its last heartbeat).
func (l *Ledger) checkHeartbeats(ctx context.Context, edge string, b *billingapi.Batch, digest string, total int64, e witness.EdgeInfo) error {
	if e.LastHeartbeat.IsZero() || max(e.MaxBytes, e.Bytes) == 0 {
		return nil
	}
	earlier, err := l.epochBytes(ctx, edge, b.Epoch)
	if err != nil {
		return err
	}
	sum := addBytes(total, earlier)
	what, ok := l.heartbeatBound(e, b.Epoch, sum, total, earlier)
	if ok {
		l.forgetSeen(digest)
		return nil
	}
	first := l.firstSeen(digest)
	covered := func(e witness.EdgeInfo) bool {
		return !e.LastHeartbeat.Before(first.Add(skew)) && e.Restarted.Before(first.Add(-restartMargin))
	}
	if !covered(e) {
		// Perhaps a newer heartbeat than the cached one covers it.
		if edges, found := l.dnsEdgesWithin(ctx, 0); found {
			if fresh, listed := edges[edge]; listed && !fresh.LastHeartbeat.IsZero() {
				e = fresh
				if what, ok = l.heartbeatBound(e, b.Epoch, sum, total, earlier); ok {
					l.forgetSeen(digest)
					return nil
				}
			}
		}
	}
	if !covered(e) {
		why := "after the last heartbeat (" + e.LastHeartbeat.UTC().Format(time.RFC3339) + ")"
		if !e.Restarted.Before(first.Add(-restartMargin)) {
			why = "around a restart of the edge (" + e.Restarted.UTC().Format(time.RFC3339) + "): its heartbeats may not count it"
		}
		return fmt.Errorf("billing: %w: %s; billing first received this batch at %s, %s: send it again",
			errHeartbeatBehind, what, first.UTC().Format(time.RFC3339), why)
	}
	l.forgetSeen(digest)
	return reject(billingapi.ReasonImplausibleHeartbeats, "%s", what)
}

// heartbeatBound reports whether sum bytes claimed for epoch are within
// what e's heartbeats allow, and if not, why.
func (l *Ledger) heartbeatBound(e witness.EdgeInfo, epoch, sum, total, earlier int64) (string, bool) {
	high := max(e.MaxBytes, e.Bytes)
	interval := time.Duration(e.IntervalMS) * time.Millisecond
	if interval <= 0 {
		interval = dnsrouteapi.DefaultHeartbeatInterval // the router does not give it: the edge's default
	}
	age := max(l.opts.now().Sub(e.LastHeartbeat), 0)
	slack := 2*e.ByteRate*(age+interval).Seconds() + HeartbeatSlackBytes
	bound := float64(high) + slack
	if float64(sum) <= bound {
		return "", true
	}
	return fmt.Sprintf("edge claims %d bytes for epoch %d (this batch %d, its other parts %d) but its heartbeats report at most %d bytes sent; "+
		"with %.0f bytes of slack (rate %.0f B/s, last heartbeat %s ago, interval %s) at most %.0f bytes are plausible",
		sum, epoch, total, earlier, high, slack, e.ByteRate, age.Round(time.Millisecond), interval, bound), false
}

// restartMargin: a batch first received less than this after the edge
// restarted may come from the process before (a Reporter posts for up to
// 30 s, and flushes for 10 s at shutdown), which the heartbeats after the
// restart do not count.
const restartMargin = time.Minute

// maxDeferred bounds how many deferred batches billing remembers.
const maxDeferred = 10000

// firstSeen returns when billing first received the batch with digest
// while deferring it (now, the first time).
func (l *Ledger) firstSeen(digest string) time.Time {
	now := l.opts.now()
	l.dnsMu.Lock()
	defer l.dnsMu.Unlock()
	if t, ok := l.deferred[digest]; ok {
		return t
	}
	if l.deferred == nil || len(l.deferred) >= maxDeferred {
		// Forgetting only defers a batch longer.
		l.deferred = map[string]time.Time{}
	}
	l.deferred[digest] = now
	return now
}

// forgetSeen drops a batch judged.
func (l *Ledger) forgetSeen(digest string) {
	l.dnsMu.Lock()
	delete(l.deferred, digest)
	l.dnsMu.Unlock()
}

// epochBytes returns the accepted bytes of the parts of (edge, epoch)
// stored so far.
func (l *Ledger) epochBytes(ctx context.Context, edge string, epoch int64) (int64, error) {
	var parts int64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM batches WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&parts); err != nil {
		return 0, fmt.Errorf("billing: %w: epoch bytes: %w", errTransient, err)
	}
	if parts == 0 {
		return 0, nil
	}
	var n sql.NullInt64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT CAST(sum(bytes) AS BIGINT) FROM records WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&n); err != nil {
		return 0, fmt.Errorf("billing: %w: epoch bytes: %w", errTransient, err)
	}
	return n.Int64, nil
}
