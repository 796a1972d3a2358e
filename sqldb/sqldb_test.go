package sqldb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/sqlitedb"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestRebind(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"none", `SELECT 1`, `SELECT 1`},
		{"bare", `SELECT a FROM t WHERE b = ? AND c IN (?, ?)`, `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)`},
		{"numbered", `SELECT a FROM t WHERE b = ?1 OR c = ?1 AND d > ?2`, `SELECT a FROM t WHERE b = $1 OR c = $1 AND d > $2`},
		{"bare after numbered", `VALUES (?2, ?, ?1, ?)`, `VALUES ($2, $3, $1, $4)`},
		{"in a string", `SELECT '?', 'it''s ?' || ? FROM t`, `SELECT '?', 'it''s ?' || $1 FROM t`},
		{"in an identifier", `SELECT "a?b" FROM t WHERE x = ?`, `SELECT "a?b" FROM t WHERE x = $1`},
		{"in comments", "SELECT a -- why?\nFROM t /* ? */ WHERE x = ?", "SELECT a -- why?\nFROM t /* ? */ WHERE x = $1"},
		{"comment to the end", `SELECT ? -- ?`, `SELECT $1 -- ?`},
		{"unclosed string", `SELECT ?, 'a?`, `SELECT $1, 'a?`},
		{"ten and more", `VALUES (?,?,?,?,?,?,?,?,?,?,?)`, `VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Rebind(tc.in); got != tc.want {
				t.Errorf("Rebind(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// testSchema has a SQLite history of two steps, its baseline, and two
// shared steps after.
var testSchema = Schema{
	SQLite: []string{
		`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at INTEGER NOT NULL)`,
		`ALTER TABLE items ADD COLUMN data BLOB`,
	},
	Baseline: `CREATE TABLE items (id {{id}}, name TEXT NOT NULL, at BIGINT NOT NULL, data {{blob}});
		CREATE TABLE two (a BIGINT NOT NULL)`,
	BaselineVersion: 2,
	Shared: []string{
		`CREATE TABLE tags (id {{id}}, item BIGINT NOT NULL, tag TEXT NOT NULL, raw {{blob}} NOT NULL);
		CREATE INDEX tags_item ON tags (item)`,
		`ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT ''`,
	},
}

// version reads the schema version a database records.
func version(t *testing.T, db *DB) int {
	t.Helper()
	q := `PRAGMA user_version`
	if db.Postgres() {
		q = `SELECT version FROM schema_version`
	}
	var v int
	if err := db.QueryRowContext(context.Background(), q).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOpen: a new database of either dialect reaches the last version,
// takes ? placeholders, numbers new rows with RETURNING, and opens again
// without migrating anything; a binary with fewer migrations refuses it.
func TestOpen(t *testing.T) {
	pgtest.Dialects(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := Open(ctx, dsn, testSchema)
		if err != nil {
			t.Fatal(err)
		}
		if v := version(t, db); v != 4 {
			t.Fatalf("version %d, want 4", v)
		}
		// Only the baseline has table two: PostgreSQL got it, SQLite the history.
		if _, err := db.ExecContext(ctx, `SELECT a FROM two`); (err == nil) != db.Postgres() {
			t.Fatalf("table two read: %v", err)
		}
		var id int64
		if err := db.QueryRowContext(ctx, `INSERT INTO items (name, at, data, kind) VALUES (?, ?, ?, ?) RETURNING id`,
			"a", time.Now().UnixNano(), []byte{0, 1}, "k").Scan(&id); err != nil || id != 1 {
			t.Fatalf("insert: id %d, %v", id, err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO tags (item, tag, raw) VALUES (?1, ?2, ?3), (?1, ?2 || '2', ?3)`, id, "t", []byte{}); err != nil {
			t.Fatal(err)
		}
		var n int
		var data []byte
		if err := db.QueryRowContext(ctx, `SELECT count(*), i.data FROM items i JOIN tags g ON g.item = i.id WHERE i.name = ?
			GROUP BY i.id, i.data`, "a").Scan(&n, &data); err != nil || n != 2 || string(data) != "\x00\x01" {
			t.Fatalf("read back: %d tags, data %x, %v", n, data, err)
		}
		db.Close()

		if db, err = Open(ctx, dsn, testSchema); err != nil {
			t.Fatalf("open again: %v", err)
		}
		if v := version(t, db); v != 4 {
			t.Fatalf("version %d after opening again, want 4", v)
		}
		db.Close()

		older := testSchema
		older.Shared = older.Shared[:1]
		if _, err := Open(ctx, dsn, older); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
			t.Fatalf("an older binary opened a version 4 database: %v", err)
		}
	})
}

// TestOpenOlderSQLite: a SQLite database part-way through the SQLite
// history (here at version 1) goes on with the rest of it, then the
// shared migrations, keeping its rows.
func TestOpenOlderSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "test.db")
	old, err := sqlitedb.Open(ctx, path, testSchema.SQLite[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.ExecContext(ctx, `INSERT INTO items (name, at) VALUES ('old', 1)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	db, err := Open(ctx, "sqlite:"+path, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var kind string
	if err := db.QueryRowContext(ctx, `SELECT kind FROM items WHERE name = ?`, "old").Scan(&kind); err != nil || kind != "" {
		t.Fatalf("old row: kind %q, %v", kind, err)
	}
	if v := version(t, db); v != 4 {
		t.Fatalf("version %d, want 4", v)
	}
}

// TestOpenPostgresBelowBaseline: a PostgreSQL database never stops between
// 0 and the baseline; one that says it did is refused, not migrated.
func TestOpenPostgresBelowBaseline(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	db, err := Open(ctx, dsn, Schema{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE schema_version SET version = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, dsn, testSchema); err == nil || !strings.Contains(err.Error(), "below the baseline") {
		t.Fatalf("open at version 1 of a baseline at 2: %v", err)
	}
}

// TestOpenPostgresConcurrently: services starting together over one new
// database migrate it once.
func TestOpenPostgresConcurrently(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			db, err := Open(ctx, dsn, testSchema)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSchemaChecked(t *testing.T) {
	tests := []struct {
		name string
		s    Schema
		want string
	}{
		{"baseline version off", Schema{SQLite: []string{"x"}, Baseline: "x", BaselineVersion: 2}, "baseline version"},
		{"history without baseline", Schema{SQLite: []string{"x"}, BaselineVersion: 1}, "needs a baseline"},
		{"baseline without history", Schema{Baseline: "x"}, "needs a baseline"},
		{"unknown placeholder", Schema{Shared: []string{"CREATE TABLE t (id {{serial}})"}}, "unknown placeholder {{serial}}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(context.Background(), filepath.Join(t.TempDir(), "test.db"), tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestInTx: InTx commits what fn wrote when it returns nil, and rolls it
// back and returns fn's error otherwise.
func TestInTx(t *testing.T) {
	pgtest.Dialects(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := Open(ctx, dsn, Schema{Shared: []string{`CREATE TABLE n (k TEXT PRIMARY KEY, v BIGINT NOT NULL)`}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := InTx(ctx, db, func(tx *Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO n (k, v) VALUES (?, ?)`, "a", 1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		errNo := errors.New("no")
		runs := 0
		err = InTx(ctx, db, func(tx *Tx) error {
			runs++
			if _, err := tx.ExecContext(ctx, `UPDATE n SET v = ? WHERE k = ?`, 2, "a"); err != nil {
				return err
			}
			return errNo
		})
		if !errors.Is(err, errNo) || runs != 1 {
			t.Fatalf("InTx = %v after %d runs, want fn's error after 1", err, runs)
		}
		var v int
		if err := db.QueryRowContext(ctx, `SELECT v FROM n WHERE k = ?`, "a").Scan(&v); err != nil || v != 1 {
			t.Fatalf("v = %d, %v; want 1 (the failed transaction rolled back)", v, err)
		}
	})
}

// TestInTxRetriesConflicts: on PostgreSQL, a read-check-write that loses
// to a concurrent write is run again and then sees it, where READ
// COMMITTED would have overwritten it.
func TestInTxRetriesConflicts(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, pgtest.DSN(t), Schema{Shared: []string{`CREATE TABLE n (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
		INSERT INTO n VALUES ('a', 0)`}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	runs := 0
	err = InTx(ctx, db, func(tx *Tx) error {
		runs++
		var v int
		if err := tx.QueryRowContext(ctx, `SELECT v FROM n WHERE k = ?`, "a").Scan(&v); err != nil {
			return err
		}
		if runs == 1 { // another connection writes meanwhile
			if _, err := db.ExecContext(ctx, `UPDATE n SET v = v + 100 WHERE k = ?`, "a"); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE n SET v = ? WHERE k = ?`, v+1, "a")
		return err
	})
	if err != nil || runs != 2 {
		t.Fatalf("InTx = %v after %d runs, want success after 2", err, runs)
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT v FROM n WHERE k = ?`, "a").Scan(&v); err != nil || v != 101 {
		t.Fatalf("v = %d, %v; want 101", v, err)
	}
}

// TestNow: SQLite's clock is the process's (here a test's); PostgreSQL's
// the server's.
func TestNow(t *testing.T) {
	ctx := context.Background()
	fixed := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	db, err := Open(ctx, filepath.Join(t.TempDir(), "test.db"), Schema{}, WithClock(func() time.Time { return fixed }))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if now, err := db.Now(ctx); err != nil || !now.Equal(fixed) {
		t.Fatalf("SQLite Now = %s, %v; want %s", now, err, fixed)
	}
	pg, err := Open(ctx, pgtest.DSN(t), Schema{}, WithClock(func() time.Time { return fixed }))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	now, err := pg.Now(ctx)
	if d := time.Since(now); err != nil || d < -time.Minute || d > time.Minute {
		t.Fatalf("PostgreSQL Now = %s, %v; want the server's clock, about %s", now, err, time.Now())
	}
}
