package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/topcdn/topcdn/sqlitedb"
)

// DefaultMaxOpenConns is the size of a PostgreSQL database's connection
// pool unless WithMaxOpenConns says otherwise. A SQLite database always
// has one connection (see sqlitedb.Open).
const DefaultMaxOpenConns = 16

// DB is a SQLite or PostgreSQL database whose methods take queries
// written for SQLite (? placeholders) and rewrite them for the database's
// dialect. It is safe for concurrent use, as *sql.DB is.
type DB struct {
	db *sql.DB
	pg bool

	// Testing.
	now func() time.Time // the clock of a SQLite database
}

// Option configures Open.
type Option func(*options)

type options struct {
	maxOpen int
	now     func() time.Time
}

// WithMaxOpenConns bounds the connections to a PostgreSQL database.
// Default: DefaultMaxOpenConns. It is ignored for SQLite, and if n <= 0.
func WithMaxOpenConns(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxOpen = n
		}
	}
}

// WithClock sets the clock Now reads on a SQLite database, for tests.
// Default: time.Now. It is ignored for PostgreSQL, whose clock is the
// server's, and if now is nil.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// IsPostgres reports whether dsn names a PostgreSQL database: it starts
// with postgres:// or postgresql://. Anything else is a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the database dsn names and brings its schema up to date (see
// Schema). "postgres://…" or "postgresql://…" is PostgreSQL; a file path,
// or "sqlite:PATH", is a SQLite file, created with its directory if
// needed.
func Open(ctx context.Context, dsn string, s Schema, opts ...Option) (*DB, error) {
	o := options{maxOpen: DefaultMaxOpenConns, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if IsPostgres(dsn) {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("sqldb: open postgres: %w", err)
		}
		db.SetMaxOpenConns(o.maxOpen)
		d := &DB{db: db, pg: true, now: o.now}
		if err := d.migratePostgres(ctx, s); err != nil {
			db.Close()
			return nil, err
		}
		return d, nil
	}
	path := strings.TrimPrefix(dsn, "sqlite:")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqldb: %w", err)
	}
	migrations, err := s.sqlite()
	if err != nil {
		return nil, err
	}
	db, err := sqlitedb.Open(ctx, path, migrations)
	if err != nil {
		return nil, fmt.Errorf("sqldb: %w", err)
	}
	return &DB{db: db, now: o.now}, nil
}

// Postgres reports whether the database is PostgreSQL.
func (d *DB) Postgres() bool { return d.pg }

// SQL returns the underlying *sql.DB, whose methods do not rewrite
// queries: for code that does so itself.
func (d *DB) SQL() *sql.DB { return d.db }

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// PingContext checks that the database answers.
func (d *DB) PingContext(ctx context.Context) error { return d.db.PingContext(ctx) }

// q rewrites query for the database's dialect.
func (d *DB) q(query string) string {
	if d.pg {
		return Rebind(query)
	}
	return query
}

// ExecContext runs a query that returns no rows.
func (d *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return d.db.ExecContext(ctx, d.q(query), args...)
}

// QueryContext runs a query that returns rows.
func (d *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return d.db.QueryContext(ctx, d.q(query), args...)
}

// QueryRowContext runs a query that returns at most one row.
func (d *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return d.db.QueryRowContext(ctx, d.q(query), args...)
}

// PrepareContext prepares a statement for later queries.
func (d *DB) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return d.db.PrepareContext(ctx, d.q(query))
}

// BeginTx starts a transaction. Code that reads, checks and writes should
// use InTx instead, which picks the isolation and retries.
func (d *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{tx: tx, pg: d.pg}, nil
}

// Now returns the database's time: the PostgreSQL server's clock, which
// every process sharing the database reads alike; for SQLite, used by one
// process, the process's clock (WithClock).
func (d *DB) Now(ctx context.Context) (time.Time, error) {
	if !d.pg {
		return d.now(), nil
	}
	var ns int64
	if err := d.db.QueryRowContext(ctx, `SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint`).Scan(&ns); err != nil {
		return time.Time{}, fmt.Errorf("sqldb: now: %w", err)
	}
	return time.Unix(0, ns), nil
}

// Tx is a transaction of a DB; its methods rewrite queries as the DB's do.
type Tx struct {
	tx *sql.Tx
	pg bool
}

// Postgres reports whether the transaction's database is PostgreSQL.
func (t *Tx) Postgres() bool { return t.pg }

func (t *Tx) q(query string) string {
	if t.pg {
		return Rebind(query)
	}
	return query
}

// ExecContext runs a query that returns no rows.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.q(query), args...)
}

// QueryContext runs a query that returns rows.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.q(query), args...)
}

// QueryRowContext runs a query that returns at most one row.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.q(query), args...)
}

// PrepareContext prepares a statement for use in the transaction.
func (t *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, t.q(query))
}

// Commit commits the transaction.
func (t *Tx) Commit() error { return t.tx.Commit() }

// Rollback aborts the transaction; after Commit it does nothing and
// returns sql.ErrTxDone.
func (t *Tx) Rollback() error { return t.tx.Rollback() }

// Querier is what a DB and a Tx both offer: code that may run inside a
// transaction or outside one takes it.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	Postgres() bool
}

var (
	_ Querier = (*DB)(nil)
	_ Querier = (*Tx)(nil)
)
