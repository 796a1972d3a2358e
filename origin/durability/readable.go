package durability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/erasure"
)

// CheckReadable tells whether the DAG under c can be read whole from the
// storage peers right now, by what the Keeper knows, without reading a
// byte: every segment of c's manifest (or, for a block that is not a
// root, of every manifest holding the block's segment, a superset of the
// segments under it) must have at least k healthy shards, shards neither
// marked bad nor on a peer past its heartbeats. It returns nil when c is
// not striped or the origin keeps local copies (its DAG is on the
// origin's disk), and else an error wrapping erasure.ErrNotEnoughShards
// that names the first segment short of shards. One query; the answer is
// only as fresh as the heartbeats: a peer dying mid-read still fails the
// read.
func (kp *Keeper) CheckReadable(ctx context.Context, c cid.Cid) error {
	if kp.striper == nil || kp.stripeCfg.KeepLocal {
		return nil
	}
	since := kp.now().Add(-3 * kp.cfg.HeartbeatInterval).UnixNano()
	var seg int64
	var k, healthy int
	err := kp.db.QueryRowContext(ctx, `
		WITH segs AS (
			SELECT segment_id FROM manifest_segments WHERE root = ?1
			UNION
			SELECT ms2.segment_id FROM blocks b
				JOIN manifest_segments ms ON ms.segment_id = b.segment_id
				JOIN manifest_segments ms2 ON ms2.root = ms.root
			WHERE b.cid = ?1 AND NOT EXISTS (SELECT 1 FROM manifest_segments WHERE root = ?1)
		)
		SELECT g.id, g.data_shards, SUM(CASE WHEN s.bad = '' AND p.last_seen >= ?2 THEN 1 ELSE 0 END)
		FROM segments g
			JOIN shards s ON s.segment_id = g.id
			LEFT JOIN peers p ON p.peer_id = s.peer_id
		WHERE g.id IN (SELECT segment_id FROM segs)
		GROUP BY g.id
		HAVING SUM(CASE WHEN s.bad = '' AND p.last_seen >= ?2 THEN 1 ELSE 0 END) < g.data_shards
		ORDER BY g.id
		LIMIT 1`, c.String(), since).Scan(&seg, &k, &healthy)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("durability: check %s readable: %w", c, err)
	}
	return fmt.Errorf("durability: %s: segment %d has %d healthy shards of the %d needed: %w", c, seg, healthy, k, erasure.ErrNotEnoughShards)
}
