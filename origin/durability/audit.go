package durability

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// auditTarget is one shard to audit.
type auditTarget struct {
	shardID   string
	peer      string
	chunks    []byte
	shardSize int64
	chunkSize int
}

// runAuditor audits one random shard every AuditInterval until ctx ends,
// under lease audit: one origin audits at a time, so refusals in a row
// (AuditRefusals) are counted at one auditor's pace.
func (kp *Keeper) runAuditor(ctx context.Context) {
	tick.Every(ctx, kp.stripeCfg.AuditInterval, func(ctx context.Context) {
		kp.withLease(ctx, leaseAudit, kp.auditOne)
	})
}

// auditOne audits one random shard not known to be bad.
func (kp *Keeper) auditOne(ctx context.Context) {
	var t auditTarget
	err := kp.db.QueryRowContext(ctx, `SELECT s.shard_id, s.peer_id, s.chunks, g.shard_size, g.chunk_size
		FROM shards s JOIN segments g ON g.id = s.segment_id WHERE s.bad = '' ORDER BY random() LIMIT 1`).
		Scan(&t.shardID, &t.peer, &t.chunks, &t.shardSize, &t.chunkSize)
	if err != nil {
		return // nothing striped yet
	}
	kp.audit(ctx, t)
}

// AuditAll audits every shard once, each at a random chunk, and returns
// how many failed. Peers that are down count as unreachable, not failed.
func (kp *Keeper) AuditAll(ctx context.Context) (failed int, err error) {
	rows, err := kp.db.QueryContext(ctx, `SELECT s.shard_id, s.peer_id, s.chunks, g.shard_size, g.chunk_size
		FROM shards s JOIN segments g ON g.id = s.segment_id`)
	if err != nil {
		return 0, fmt.Errorf("durability: audit: %w", err)
	}
	var targets []auditTarget
	for rows.Next() {
		var t auditTarget
		if err := rows.Scan(&t.shardID, &t.peer, &t.chunks, &t.shardSize, &t.chunkSize); err != nil {
			rows.Close()
			return 0, fmt.Errorf("durability: audit: %w", err)
		}
		targets = append(targets, t)
	}
	rows.Close()
	for _, t := range targets {
		if kp.audit(ctx, t) == "failed" {
			failed++
		}
	}
	return failed, ctx.Err()
}

// audit challenges the peer holding t for a random chunk and records the
// result: ok, failed (wrong or missing bytes: the shard is marked bad and
// the peer flagged), unreachable, or refused: no proof from a peer whose
// heartbeats say it is up. AuditRefusals refusals of the shard in a row
// count as a failure: a peer must not keep shards it will not prove it
// holds by answering audits with errors.
func (kp *Keeper) audit(ctx context.Context, t auditTarget) string {
	p, err := peer.Decode(t.peer)
	if err != nil {
		return "failed"
	}
	chunks := int((t.shardSize + int64(t.chunkSize) - 1) / int64(t.chunkSize))
	i := rand.IntN(chunks)
	off := int64(i) * int64(t.chunkSize)
	length := min(int64(t.chunkSize), t.shardSize-off)
	result, reason := "ok", ""
	addr, err := kp.cachedAddr(ctx, p)
	if err == nil {
		var data []byte
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		data, err = kp.storage.Audit(actx, p, addr, t.shardID, off, length)
		cancel()
		if err == nil {
			sum := sha256.Sum256(data)
			if string(sum[:]) != string(t.chunks[i*sha256.Size:(i+1)*sha256.Size]) {
				err = fmt.Errorf("chunk %d does not match the manifest", i)
				result = "failed"
			}
		} else if errors.Is(err, storageapi.ErrBadAnswer) || errors.Is(err, storageapi.ErrNotFound) ||
			errors.Is(err, storageapi.ErrRangeNotSatisfiable) {
			// It answered, but without the bytes it keeps for us: the range
			// is inside the shard, whose ID commits to its size.
			result = "failed"
		} else {
			result = "unreachable" // transport errors, and refusals that are not proof of loss (403, 5xx)
		}
	} else {
		result = "unreachable"
	}
	if ctx.Err() != nil {
		return "unreachable"
	}
	if err != nil {
		reason = err.Error()
	}
	if result == "unreachable" && kp.heartbeating(ctx, t.peer) {
		result = "refused"
	}
	kp.metrics.audits.WithLabelValues(result).Inc()
	if _, err := kp.db.ExecContext(ctx, `INSERT INTO audits (peer_id, shard_id, ok, reason, at, result) VALUES (?, ?, ?, ?, ?, ?)`,
		t.peer, t.shardID, boolInt(result == "ok"), reason, kp.now().UnixNano(), result); err != nil {
		kp.log.Error("record audit", zap.Error(err))
	}
	switch {
	case result == "failed":
		kp.flagPeer(erasure.Flag{Peer: p, Shard: t.shardID, Reason: "bad-bytes"}, "audit")
	case result == "refused" && kp.refusedInARow(ctx, t) >= kp.stripeCfg.AuditRefusals:
		kp.flagPeer(erasure.Flag{Peer: p, Shard: t.shardID, Reason: "refused-audits"}, "audit")
		result = "failed"
	}
	kp.log.Debug("audit", zap.String("peer", t.peer), zap.String("shard", t.shardID), zap.String("result", result), zap.String("reason", reason))
	return result
}

// heartbeating reports whether the peer's heartbeats are fresh (within
// three intervals), as the peer list counts it healthy.
func (kp *Keeper) heartbeating(ctx context.Context, peerID string) bool {
	var lastSeen int64
	if err := kp.db.QueryRowContext(ctx, `SELECT last_seen FROM peers WHERE peer_id = ?`, peerID).Scan(&lastSeen); err != nil {
		return false
	}
	return kp.now().Sub(time.Unix(0, lastSeen)) <= 3*kp.cfg.HeartbeatInterval
}

// refusedInARow counts the latest audits of t's shard on its peer that
// were refused, back to the last that was not.
func (kp *Keeper) refusedInARow(ctx context.Context, t auditTarget) int {
	rows, err := kp.db.QueryContext(ctx, `SELECT result FROM audits WHERE shard_id = ? AND peer_id = ?
		ORDER BY at DESC, id DESC LIMIT ?`, t.shardID, t.peer, kp.stripeCfg.AuditRefusals)
	if err != nil {
		kp.log.Error("count refused audits", zap.Error(err))
		return 0
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var r string
		if rows.Scan(&r) != nil || r != "refused" {
			break
		}
		n++
	}
	return n
}

// boolInt is b as the database stores it: 1 or 0 (PostgreSQL takes no
// bool for an integer column).
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
