package sqlitedb

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenMigrates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	v1 := []string{`CREATE TABLE a (x INTEGER)`}
	db, err := Open(ctx, path, v1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO a VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// A newer binary adds a migration; the data stays.
	v2 := append(v1, `CREATE TABLE b (y TEXT)`)
	db, err = Open(ctx, path, v2)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after migration: %d, %v", n, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO b VALUES ('z')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// An older binary refuses the newer database rather than misread it.
	if _, err := Open(ctx, path, v1); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("old schema on a newer database: %v", err)
	}
	// A broken migration leaves the version where it was.
	if _, err := Open(ctx, path, append(v2, `CREATE TABLE nonsense (`)); err == nil {
		t.Fatal("broken migration accepted")
	}
	if db, err = Open(ctx, path, v2); err != nil {
		t.Fatalf("reopen after failed migration: %v", err)
	}
	db.Close()
}
