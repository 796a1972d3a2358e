package origindb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// The name-change stream (table name_changes, migration 8) holds each new
// IPNS record of a human name and each purge, in order, each appended in
// the transaction of the change it records. Unlike the billing log it is
// trimmed: readers that fall behind what is kept start over (Reset).

// AppendChange appends c (its ID ignored, the stream assigns it) to the
// name-change stream through tx, the transaction of the change, and
// returns its ID. IDs come from the counter row 'name_changes', as the
// billing log's do (see AppendEvent): gapless, and committed in order, so
// a reader paging by ID skips none.
func AppendChange(ctx context.Context, tx sqldb.Querier, c originapi.NameChange) (int64, error) {
	var purge []byte
	if c.Purge != nil {
		var err error
		if purge, err = json.Marshal(c.Purge); err != nil {
			return 0, fmt.Errorf("origin: name changes: append %s: %w", c.Kind, err)
		}
	}
	id, err := nextID(ctx, tx, "name_changes")
	if err != nil {
		return 0, fmt.Errorf("origin: name changes: append %s: %w", c.Kind, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO name_changes (id, kind, name, ipns, record, purge, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		id, c.Kind, c.Name, c.IPNS, c.Record, purge, c.At.UnixNano()); err != nil {
		return 0, fmt.Errorf("origin: name changes: append %s: %w", c.Kind, err)
	}
	return id, nil
}

// lastChange returns the ID of the last change ever appended (0 if none),
// trimmed or not: the stream's counter.
func lastChange(ctx context.Context, q sqldb.Querier) (int64, error) {
	var last int64
	err := q.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'name_changes'`).Scan(&last)
	return last, err
}

// LastChange returns the ID of the last change ever appended (0 if none):
// what another origin sharing the database may have appended too.
func LastChange(ctx context.Context, db *sqldb.DB) (int64, error) {
	last, err := lastChange(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("origin: name changes: %w", err)
	}
	return last, nil
}

// ChangesSpan returns the ID of the oldest change kept and of the last one
// ever appended (0 if none). When none is kept, oldest is last+1.
func ChangesSpan(ctx context.Context, db *sqldb.DB) (oldest, last int64, err error) {
	err = sqldb.InTx(ctx, db, func(tx *sqldb.Tx) error {
		if last, err = lastChange(ctx, tx); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT COALESCE(min(id), ?) FROM name_changes`, last+1).Scan(&oldest)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("origin: name changes: %w", err)
	}
	return oldest, last, nil
}

// Changes returns the changes with IDs above since and at most to, oldest
// first: at most limit of them, and no more record and purge bytes than
// maxBytes, except that the first change is returned whatever its size.
func Changes(ctx context.Context, db *sqldb.DB, since, to int64, limit, maxBytes int) ([]originapi.NameChange, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, kind, name, ipns, record, purge, at FROM name_changes
		WHERE id > ? AND id <= ? ORDER BY id LIMIT ?`, since, to, limit)
	if err != nil {
		return nil, fmt.Errorf("origin: name changes: %w", err)
	}
	defer rows.Close()
	cs := []originapi.NameChange{}
	size := 0
	for rows.Next() {
		var c originapi.NameChange
		var purge []byte
		var at int64
		if err := rows.Scan(&c.ID, &c.Kind, &c.Name, &c.IPNS, &c.Record, &purge, &at); err != nil {
			return nil, fmt.Errorf("origin: name changes: %w", err)
		}
		if size += len(c.Record) + len(purge); size > maxBytes && len(cs) > 0 {
			break
		}
		if purge != nil {
			c.Purge = new(identity.Envelope)
			if err := json.Unmarshal(purge, c.Purge); err != nil {
				return nil, fmt.Errorf("origin: name changes: change %d: %w", c.ID, err)
			}
		}
		c.At = time.Unix(0, at).UTC()
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("origin: name changes: %w", err)
	}
	return cs, nil
}

// TrimChanges deletes the changes appended before cutoff, but never one of
// the last keep. It deletes only from the oldest end, so the changes kept
// always follow each other without a gap (a change appended before cutoff
// after one appended later, the clock having gone back, is kept with it).
// It returns how many it deleted and the ID of the oldest change now kept
// (last+1 when none is), as ChangesSpan does.
func TrimChanges(ctx context.Context, db *sqldb.DB, cutoff time.Time, keep int) (deleted, oldest int64, err error) {
	err = sqldb.InTx(ctx, db, func(tx *sqldb.Tx) error {
		last, err := lastChange(ctx, tx)
		if err != nil {
			return err
		}
		// The newest ID to delete: before the first change that is recent
		// enough, and not one of the last keep.
		var upTo int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE((SELECT min(id) - 1 FROM name_changes WHERE at >= ?), ?)`,
			cutoff.UnixNano(), last).Scan(&upTo); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM name_changes WHERE id <= ?`, min(upTo, last-int64(keep)))
		if err != nil {
			return err
		}
		deleted, _ = res.RowsAffected()
		return tx.QueryRowContext(ctx, `SELECT COALESCE(min(id), ?) FROM name_changes`, last+1).Scan(&oldest)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("origin: trim name changes: %w", err)
	}
	return deleted, oldest, nil
}
