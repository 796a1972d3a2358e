package origindb

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/sqldb"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestSchemaDialects: the three ways to a current database reach the same
// tables, each with the same columns (type, nullability, default), primary
// key, unique constraints, foreign keys and indexes: SQLite through its
// released history, SQLite through the baseline (a check of the baseline
// that needs no PostgreSQL), and PostgreSQL. Types are compared as SQLite
// stores them (INTEGER, TEXT, REAL, BLOB), except that PostgreSQL's 32-bit
// integer and single-precision real are told apart: Unix nanoseconds do
// not fit the one, coordinates lose digits in the other. Every migration
// added to shared is checked here as well.
func TestSchemaDialects(t *testing.T) {
	ctx := context.Background()
	describe := func(t *testing.T, db *sqldb.DB) []string {
		t.Helper()
		if db.Postgres() {
			return describePostgres(t, db)
		}
		return describeSQLite(t, db)
	}
	db, err := Open(ctx, filepath.Join(t.TempDir(), "origin.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := describe(t, db)

	viaBaseline, err := sqldb.Open(ctx, filepath.Join(t.TempDir(), "baseline.db"), sqldb.Schema{Shared: append([]string{baseline}, shared...)})
	if err != nil {
		t.Fatalf("the baseline on SQLite: %v", err)
	}
	defer viaBaseline.Close()
	t.Run("baseline on sqlite", func(t *testing.T) { compareSchemas(t, describe(t, viaBaseline), want) })

	t.Run("postgres", func(t *testing.T) {
		pg, err := Open(ctx, pgtest.DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		compareSchemas(t, describe(t, pg), want)
		var version int
		if err := pg.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil || version != schema.Version() {
			t.Fatalf("schema_version %d, %v; want %d", version, err, schema.Version())
		}
	})
}

func compareSchemas(t *testing.T, got, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing: %s", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("extra:   %s", g)
		}
	}
}

// sqliteType maps a declared type to its SQLite affinity.
func sqliteType(decl string) string {
	d := strings.ToUpper(decl)
	switch {
	case strings.Contains(d, "INT"):
		return "INTEGER"
	case strings.Contains(d, "CHAR"), strings.Contains(d, "CLOB"), strings.Contains(d, "TEXT"):
		return "TEXT"
	case d == "", strings.Contains(d, "BLOB"):
		return "BLOB"
	case strings.Contains(d, "REAL"), strings.Contains(d, "FLOA"), strings.Contains(d, "DOUB"):
		return "REAL"
	}
	return "NUMERIC"
}

// postgresType maps a PostgreSQL type to the SQLite affinity it stands
// for; what no SQLite column should become is left as it is.
func postgresType(typ string) string {
	switch typ {
	case "bigint":
		return "INTEGER"
	case "text":
		return "TEXT"
	case "bytea":
		return "BLOB"
	case "double precision":
		return "REAL"
	}
	return typ
}

// cast matches PostgreSQL's casts in defaults: ”::text.
var cast = regexp.MustCompile(`::[a-z ]+$`)

// describeSQLite lists a SQLite database's schema, one fact a line.
func describeSQLite(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	ctx := context.Background()
	tables := queryStrings(t, db, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	var out []string
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT name, type, "notnull", COALESCE(dflt_value, ''), pk FROM pragma_table_info(?) ORDER BY pk, cid`, table)
		if err != nil {
			t.Fatal(err)
		}
		var pk []string
		for rows.Next() {
			var name, typ, dflt string
			var notNull bool
			var pkPos int
			if err := rows.Scan(&name, &typ, &notNull, &dflt, &pkPos); err != nil {
				t.Fatal(err)
			}
			out = append(out, columnLine(table, name, sqliteType(typ), notNull || pkPos > 0, dflt))
			if pkPos > 0 {
				pk = append(pk, name)
			}
		}
		rows.Close()
		out = append(out, table+" PRIMARY KEY ("+strings.Join(pk, ", ")+")")
		for _, fk := range queryStrings(t, db, `SELECT "from" || ' REFERENCES ' || "table" || ' (' || "to" || ')' FROM pragma_foreign_key_list(?)`, table) {
			out = append(out, table+"."+fk)
		}
		rows, err = db.QueryContext(ctx, `SELECT name, origin, "unique" FROM pragma_index_list(?) WHERE origin != 'pk'`, table)
		if err != nil {
			t.Fatal(err)
		}
		type index struct {
			name, origin string
			unique       bool
		}
		var indexes []index
		for rows.Next() {
			var ix index
			if err := rows.Scan(&ix.name, &ix.origin, &ix.unique); err != nil {
				t.Fatal(err)
			}
			indexes = append(indexes, ix)
		}
		rows.Close()
		for _, ix := range indexes {
			cols := strings.Join(queryStrings(t, db, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, ix.name), ", ")
			out = append(out, indexLine(table, ix.name, ix.origin == "u", ix.unique, cols))
		}
	}
	return out
}

// describePostgres lists a PostgreSQL database's schema as describeSQLite
// does SQLite's.
func describePostgres(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	ctx := context.Background()
	tables := queryStrings(t, db, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name != 'schema_version' ORDER BY table_name`)
	var out []string
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT column_name, data_type, is_nullable = 'NO', COALESCE(column_default, '')
			FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?`, table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, typ, dflt string
			var notNull bool
			if err := rows.Scan(&name, &typ, &notNull, &dflt); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(dflt, "nextval(") {
				dflt = "" // {{id}}: BIGSERIAL, INTEGER PRIMARY KEY in SQLite
			}
			out = append(out, columnLine(table, name, postgresType(typ), notNull, cast.ReplaceAllString(dflt, "")))
		}
		rows.Close()
		pk := queryStrings(t, db, `SELECT a.attname FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
			WHERE i.indrelid = ?::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
		out = append(out, table+" PRIMARY KEY ("+strings.Join(pk, ", ")+")")
		for _, fk := range queryStrings(t, db, `SELECT a.attname || ' REFERENCES ' || c.confrelid::regclass::text || ' (' || af.attname || ')'
			FROM pg_constraint c
			JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
			JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]
			WHERE c.contype = 'f' AND c.conrelid = ?::regclass`, table) {
			out = append(out, table+"."+fk)
		}
		rows, err = db.QueryContext(ctx, `SELECT ic.relname, COALESCE(con.contype, ''), i.indisunique,
				(SELECT string_agg(a.attname, ', ' ORDER BY array_position(i.indkey::int2[], a.attnum))
				FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
			FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
			LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid
			WHERE i.indrelid = ?::regclass AND NOT i.indisprimary`, table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, contype, cols string
			var unique bool
			if err := rows.Scan(&name, &contype, &unique, &cols); err != nil {
				t.Fatal(err)
			}
			out = append(out, indexLine(table, name, contype == "u", unique, cols))
		}
		rows.Close()
	}
	return out
}

func columnLine(table, name, typ string, notNull bool, dflt string) string {
	s := table + "." + name + " " + typ
	if notNull {
		s += " NOT NULL"
	}
	if dflt != "" {
		s += " DEFAULT " + dflt
	}
	return s
}

// indexLine describes an index: a UNIQUE constraint by its columns (each
// dialect names its index its own way), one made by CREATE INDEX by name.
func indexLine(table, name string, constraint, unique bool, cols string) string {
	switch {
	case constraint:
		return table + " UNIQUE (" + cols + ")"
	case unique:
		return table + " UNIQUE INDEX " + name + " (" + cols + ")"
	}
	return table + " INDEX " + name + " (" + cols + ")"
}

func queryStrings(t *testing.T, db *sqldb.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
