package storage

import (
	"context"
	"fmt"

	"github.com/topcdn/topcdn/storageapi"
)

// ServedReads returns up to limit served reads not yet claimed with IDs
// above after, in ID order, for a billing claimer to claim.
func (s *Server) ServedReads(ctx context.Context, after int64, limit int) ([]storageapi.ServedRead, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, reader, serial, length, envelope FROM served_reads
		WHERE claimed = 0 AND id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: served reads: %w", err)
	}
	defer rows.Close()
	var out []storageapi.ServedRead
	for rows.Next() {
		var r storageapi.ServedRead
		if err := rows.Scan(&r.ID, &r.Reader, &r.Serial, &r.Length, &r.Envelope); err != nil {
			return nil, fmt.Errorf("storage: served reads: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: served reads: %w", err)
	}
	return out, nil
}

// PruneServedReads marks the served reads with IDs up to upto as
// collected by billing, so ServedReads skips them, and drops the collected
// rows whose orders have surely expired (served more than
// MaxOrderLifetime ago): until then a row still refuses its order's
// replay. It returns how many rows it dropped. This bounds served_reads,
// which otherwise grows forever.
func (s *Server) PruneServedReads(ctx context.Context, upto int64) (int64, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE served_reads SET claimed = 1 WHERE claimed = 0 AND id <= ?`, upto); err != nil {
		return 0, fmt.Errorf("storage: prune served reads: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM served_reads WHERE claimed = 1 AND served_at < ?`,
		s.now().Add(-storageapi.MaxOrderLifetime).UnixNano())
	if err != nil {
		return 0, fmt.Errorf("storage: prune served reads: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: prune served reads: %w", err)
	}
	return n, nil
}
