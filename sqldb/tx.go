package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Retries of InTx on PostgreSQL.
const (
	// txTries bounds how many times InTx runs its function.
	txTries = 5
	// txPauseMin and txPauseMax bound the random pause before a retry.
	txPauseMin, txPauseMax = 10 * time.Millisecond, 100 * time.Millisecond
)

// InTx runs fn in a transaction of db and commits it if fn returns nil;
// an error from fn rolls it back and is returned as is, so fn says what
// failed. InTx's own errors say "sqldb: begin" or "sqldb: commit".
//
// On SQLite the transaction begins IMMEDIATE (sqlitedb.Open): it holds the
// database's only connection and write lock from its first statement, so
// what fn reads stays true until it commits. On PostgreSQL it is
// SERIALIZABLE, which gives the same guarantee against other connections
// and processes by failing one of two transactions that conflict
// (SQLSTATE 40001, or a deadlock, 40P01); InTx then runs fn again in a new
// transaction, up to five times in all, after a random pause of 10 to
// 100 ms. fn must therefore leave nothing behind but its writes through
// tx: results go to variables it sets afresh on each run, side effects
// after InTx returns. Inside fn, query only through tx: on SQLite db has
// no other connection to give.
func InTx(ctx context.Context, db *DB, fn func(tx *Tx) error) error {
	var opts *sql.TxOptions
	if db.pg {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	for try := 1; ; try++ {
		err := runTx(ctx, db, opts, fn)
		if err == nil || !db.pg || try == txTries || !retryable(err) {
			return err
		}
		pause := txPauseMin + rand.N(txPauseMax-txPauseMin)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
	}
}

func runTx(ctx context.Context, db *DB, opts *sql.TxOptions, fn func(tx *Tx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("sqldb: begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqldb: commit: %w", err)
	}
	return nil
}

// retryable reports whether err, from PostgreSQL, says the transaction
// lost a conflict with another and may succeed if run again.
func retryable(err error) bool {
	var st interface{ SQLState() string }
	if !errors.As(err, &st) {
		return false
	}
	switch st.SQLState() {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return true
	}
	return false
}
