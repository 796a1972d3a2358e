package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// Schema is a database's migrations, applied in order, each once. A
// service whose SQLite databases predate PostgreSQL support keeps their
// history (SQLite) and gives PostgreSQL the schema it reaches in one step
// (Baseline); a newer service has only Shared.
//
// In Baseline and Shared, {{id}} is an auto-increment primary key
// (INTEGER PRIMARY KEY, SQLite's rowid; BIGSERIAL PRIMARY KEY) and {{blob}}
// a byte string (BLOB; BYTEA). The rest must be SQL both dialects accept:
// BIGINT for integers (SQLite's INTEGER is 64-bit, PostgreSQL's 32),
// DOUBLE PRECISION for floats, no reserved words as names.
type Schema struct {
	// SQLite is the history SQLite databases went through before the
	// dialects shared their migrations. Released, it is never edited.
	SQLite []string
	// Baseline is what a new PostgreSQL database gets instead of the SQLite
	// history: the schema that history reaches, in portable SQL. Required
	// with SQLite.
	Baseline string
	// BaselineVersion is the version Baseline reaches; it must be
	// len(SQLite).
	BaselineVersion int
	// Shared are the migrations after BaselineVersion, one text for both
	// dialects.
	Shared []string
}

// check refuses a Schema whose versions do not line up.
func (s Schema) check() error {
	switch {
	case s.BaselineVersion != len(s.SQLite):
		return fmt.Errorf("sqldb: schema: baseline version %d, but %d SQLite migrations", s.BaselineVersion, len(s.SQLite))
	case (s.Baseline == "") != (len(s.SQLite) == 0):
		return errors.New("sqldb: schema: a SQLite history needs a baseline, and a baseline a SQLite history")
	}
	return nil
}

// Version is the version a database reaches once migrated.
func (s Schema) Version() int { return s.BaselineVersion + len(s.Shared) }

// sqlite returns the migrations of a SQLite database, in order.
func (s Schema) sqlite() ([]string, error) {
	out := append([]string(nil), s.SQLite...)
	for _, m := range s.Shared {
		r, err := render(m, false)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// placeholder matches what render replaces, and typos of it.
var placeholder = regexp.MustCompile(`\{\{[^}]*\}\}`)

// render writes a migration's placeholders in the dialect's SQL.
func render(m string, pg bool) (string, error) {
	var err error
	out := placeholder.ReplaceAllStringFunc(m, func(p string) string {
		switch {
		case p == "{{id}}" && pg:
			return "BIGSERIAL PRIMARY KEY"
		case p == "{{id}}":
			return "INTEGER PRIMARY KEY"
		case p == "{{blob}}" && pg:
			return "BYTEA"
		case p == "{{blob}}":
			return "BLOB"
		}
		err = fmt.Errorf("sqldb: schema: unknown placeholder %s", p)
		return p
	})
	return out, err
}

// postgresLock is the key of the advisory lock migrations run under.
const postgresLock = 7007

// migratePostgres brings a PostgreSQL database to s.Version(): an empty
// database gets the Baseline, then each Shared migration it lacks is
// applied. Each step runs in its own transaction with the version it
// reaches (table schema_version), under a transaction-level advisory lock,
// so that services starting together over one database neither race nor
// apply a step twice.
func (d *DB) migratePostgres(ctx context.Context, s Schema) error {
	for {
		done, err := d.migrateStep(ctx, s)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the next step the database lacks, if any, and
// reports whether it was already up to date.
func (d *DB) migrateStep(ctx context.Context, s Schema) (done bool, err error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("sqldb: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+strconv.Itoa(postgresLock)+`)`); err != nil {
		return false, fmt.Errorf("sqldb: migrate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return false, fmt.Errorf("sqldb: migrate: %w", err)
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return false, fmt.Errorf("sqldb: migrate: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("sqldb: migrate: %w", err)
	}
	var step string
	to := v + 1
	switch {
	case v > s.Version():
		return false, fmt.Errorf("sqldb: schema version %d is newer than this binary's (%d)", v, s.Version())
	case v == s.Version():
		return true, tx.Commit()
	case v == 0 && s.Baseline != "":
		step, to = s.Baseline, s.BaselineVersion
	case v < s.BaselineVersion:
		return false, fmt.Errorf("sqldb: schema version %d is below the baseline (%d), which PostgreSQL databases start from", v, s.BaselineVersion)
	default:
		step = s.Shared[v-s.BaselineVersion]
	}
	if step, err = render(step, true); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, step); err != nil {
		return false, fmt.Errorf("sqldb: migrate to version %d: %w", to, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = `+strconv.Itoa(to)); err != nil {
		return false, fmt.Errorf("sqldb: migrate to version %d: %w", to, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("sqldb: migrate to version %d: %w", to, err)
	}
	return false, nil
}
