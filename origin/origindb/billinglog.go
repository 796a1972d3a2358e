package origindb

import (
	"context"
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
//
// Readers page through it by ID (Events, since) and keep the last ID they
// read, so an event must never become visible after one with a higher ID:
// it would be skipped for good. An auto-increment key does not promise
// that once several connections append (on PostgreSQL the transaction
// that took ID 100 may commit after the one that took 101), so each event
// takes its ID from the counter row 'billing_log' (table counters) in its
// own transaction: the row's lock makes every other appender wait for
// that transaction to end (or, under SERIALIZABLE, fail and be retried by
// sqldb.InTx), so IDs are gapless and committed in order.

// nextID takes the next ID of counter name (table counters) through q, the
// transaction that uses it: the counter row stays locked until it ends.
func nextID(ctx context.Context, q sqldb.Querier, name string) (int64, error) {
	var id int64
	if err := q.QueryRowContext(ctx, `UPDATE counters SET n = n + 1 WHERE name = ? RETURNING n`, name).Scan(&id); err != nil {
		return 0, fmt.Errorf("counter %s: %w", name, err)
	}
	return id, nil
}

// AppendEvent appends ev (its ID ignored, the log assigns it) to the
// billing log through tx, the transaction of the change it records.
func AppendEvent(ctx context.Context, tx sqldb.Querier, ev originapi.BillingEvent) error {
	id, err := nextID(ctx, tx, "billing_log")
	if err != nil {
		return fmt.Errorf("origin: billing log: append %s: %w", ev.Kind, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO billing_log (id, kind, root, publisher, name, ipns, seq, ttl_ns, shard, peer,
			segment_id, size, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, ev.Kind, ev.Root, ev.Publisher, ev.Name, ev.IPNS, int64(ev.Seq), ev.TTLSeconds*int64(time.Second), ev.Shard, ev.Peer,
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
	if err := tx.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'billing_log'`).Scan(&last); err != nil {
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
