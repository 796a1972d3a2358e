package origindb

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// The billing log (table billing_log, migration 7) is the origin's
// append-only record of the facts billing pays by: uploads, name moves,
// shard placements and moves, flags. Both sides of the origin append to
// it, each event in the transaction of the change it records, so the log
// never says more or less than the tables.

// Execer is what AppendEvent writes through: the *sqldb.Tx of the change.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// AppendEvent appends ev (its ID ignored, the log assigns it) to the
// billing log through tx.
func AppendEvent(ctx context.Context, tx Execer, ev originapi.BillingEvent) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO billing_log (kind, root, publisher, name, ipns, seq, ttl_ns, shard, peer,
			segment_id, size, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ev.Kind, ev.Root, ev.Publisher, ev.Name, ev.IPNS, int64(ev.Seq), ev.TTLSeconds*int64(time.Second), ev.Shard, ev.Peer,
		ev.Segment, ev.Size, ev.Reason, ev.At.UnixNano()); err != nil {
		return fmt.Errorf("origin: billing log: append %s: %w", ev.Kind, err)
	}
	return nil
}

// Events returns at most limit events of the billing log with IDs above
// since, oldest first, and the ID of the log's last event. A name event
// backfilled from the tables, which lack the publisher, gets the IPNS
// name's peer.
func Events(ctx context.Context, db *sqldb.DB, since int64, limit int) (evs []originapi.BillingEvent, last int64, err error) {
	err = sqldb.InTx(ctx, db, func(tx *sqldb.Tx) error {
		evs, last, err = events(ctx, tx, since, limit)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("origin: billing log: %w", err)
	}
	return evs, last, nil
}

// events reads Events' answer in tx, so that last and the events agree.
func events(ctx context.Context, tx *sqldb.Tx, since int64, limit int) ([]originapi.BillingEvent, int64, error) {
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(max(id), 0) FROM billing_log`).Scan(&last); err != nil {
		return nil, 0, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, kind, root, publisher, name, ipns, seq, ttl_ns, shard, peer, segment_id, size,
			reason, at FROM billing_log WHERE id > ? ORDER BY id LIMIT ?`, since, limit)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	evs := []originapi.BillingEvent{}
	for rows.Next() {
		var ev originapi.BillingEvent
		var seq, ttl, at int64
		if err := rows.Scan(&ev.ID, &ev.Kind, &ev.Root, &ev.Publisher, &ev.Name, &ev.IPNS, &seq, &ttl, &ev.Shard, &ev.Peer,
			&ev.Segment, &ev.Size, &ev.Reason, &at); err != nil {
			return nil, 0, err
		}
		ev.Seq, ev.TTLSeconds, ev.At = uint64(seq), ttl/int64(time.Second), time.Unix(0, at).UTC()
		if ev.Kind == originapi.EventName && ev.Publisher == "" {
			if n, err := ipns.NameFromString(ev.IPNS); err == nil {
				ev.Publisher = n.Peer().String()
			}
		}
		evs = append(evs, ev)
	}
	return evs, last, rows.Err()
}
