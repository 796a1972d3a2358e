package origindb

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// NameHistory returns the latest limit moves of the human name, oldest
// first: the name events of the billing log, which every accepted record
// of a bound name appends (a database older than the log has the record
// it held then, backfilled).
func NameHistory(ctx context.Context, db *sqldb.DB, name string, limit int) ([]originapi.NameMove, error) {
	rows, err := db.QueryContext(ctx, `SELECT root, seq, ipns, at FROM billing_log WHERE kind = ? AND name = ?
		ORDER BY id DESC LIMIT ?`, originapi.EventName, name, limit)
	if err != nil {
		return nil, fmt.Errorf("origin: history of %q: %w", name, err)
	}
	defer rows.Close()
	moves := []originapi.NameMove{}
	for rows.Next() {
		var (
			m       originapi.NameMove
			seq, at int64
		)
		if err := rows.Scan(&m.Root, &seq, &m.IPNS, &at); err != nil {
			return nil, fmt.Errorf("origin: history of %q: %w", name, err)
		}
		m.Sequence, m.At = uint64(seq), time.Unix(0, at).UTC()
		moves = append(moves, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("origin: history of %q: %w", name, err)
	}
	slices.Reverse(moves)
	return moves, nil
}
