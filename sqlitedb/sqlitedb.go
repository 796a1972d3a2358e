// Package sqlitedb opens the embedded SQLite database (modernc.org/sqlite,
// pure Go) that topcdn services keep their state in, and brings its schema
// up to date.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// Open opens (creating if needed) the database at path and applies the
// migrations in schema that it lacks, each in its own transaction;
// PRAGMA user_version records how many are applied. Writes are durable
// (synchronous=FULL) and the journal is a WAL, so a kill at any point
// leaves the last committed state. The pool holds one connection:
// SQLite serialises writers anyway, and this keeps read-check-write
// sequences in one transaction free of SQLITE_BUSY; callers must not
// query the database from inside a transaction.
func Open(ctx context.Context, path string, schema []string) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitedb: %s: %w", path, err)
	}
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB, schema []string) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(schema) {
		return fmt.Errorf("schema version %d is newer than this binary's (%d)", version, len(schema))
	}
	for v := version; v < len(schema); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, schema[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
	}
	return nil
}
