package origindb

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/sqlitedb"
)

var update = flag.Bool("update", false, "rewrite testdata/schema.golden")

// TestSchemaGolden: the schema a new database gets is the one data
// directories already have. A migration edited in place would give new
// databases tables that old ones lack; testdata/schema.golden was written
// by the schema as released, and changes only with a new migration.
func TestSchemaGolden(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "origin.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, `SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	b.WriteString("-- user_version " + strconv.Itoa(version) + "\n")
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		b.WriteString(s + ";\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "schema.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Fatalf("schema differs from %s (a released migration edited?):\n%s", golden, b.String())
	}
}

// TestOpenOlderDatabase: a database an older origin left (here at version
// 2, before stale manifests, uploads and audit results) opens, migrates,
// and keeps its rows.
func TestOpenOlderDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "origin.db")
	old, err := sqlitedb.Open(ctx, path, history[:2])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.ExecContext(ctx, `INSERT INTO manifests (root, version, envelope, updated_at) VALUES ('r', 3, x'00', 1);
		INSERT INTO audits (peer_id, shard_id, ok, reason, at) VALUES ('p', 's', 1, '', 1)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var version, stale int
	var result string
	if err := db.QueryRowContext(ctx, `SELECT version, stale FROM manifests WHERE root = 'r'`).Scan(&version, &stale); err != nil || version != 3 || stale != 0 {
		t.Fatalf("manifest after migration: version %d, stale %d, %v", version, stale, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT result FROM audits WHERE peer_id = 'p'`).Scan(&result); err != nil || result != "" {
		t.Fatalf("audit after migration: result %q, %v", result, err)
	}
}
