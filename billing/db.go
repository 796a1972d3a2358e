package billing

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/topcdn/topcdn/sqldb"
)

// DB is the ledger's database: SQLite or PostgreSQL, one schema.
type DB struct {
	*sql.DB
	// Postgres is true for a PostgreSQL database.
	Postgres bool
}

// schema is the ledger's schema, applied in order. "{{id}}" is an
// auto-increment primary key in each dialect; everything else is SQL both
// accept. Never edit a released migration: append one.
var schema = []string{
	`CREATE TABLE accounts (
		id        TEXT PRIMARY KEY,
		kind      TEXT NOT NULL,             -- publisher, edge, storage, treasury
		balance   BIGINT NOT NULL DEFAULT 0, -- smallest unit; the sum of its entries
		out_since BIGINT NOT NULL DEFAULT 0  -- Unix ns its balance went below zero; 0 when in funds
	);
	CREATE TABLE txs (
		id    TEXT PRIMARY KEY, -- deposit:NONCE, settle:EPOCH
		kind  TEXT NOT NULL,
		epoch BIGINT NOT NULL,
		at    BIGINT NOT NULL
	);
	CREATE TABLE entries (
		id      {{id}},
		tx      TEXT NOT NULL REFERENCES txs (id),
		account TEXT NOT NULL REFERENCES accounts (id),
		amount  BIGINT NOT NULL,
		epoch   BIGINT NOT NULL,
		kind    TEXT NOT NULL,   -- deposit, served, storage_read, stored
		bytes   BIGINT NOT NULL, -- bytes (or byte-epochs stored) priced
		memo    TEXT NOT NULL
	);
	CREATE INDEX entries_account ON entries (account, id);
	CREATE TABLE batches (
		edge    TEXT NOT NULL,
		epoch   BIGINT NOT NULL,
		part    BIGINT NOT NULL,
		seq     BIGINT NOT NULL,
		digest  TEXT NOT NULL, -- SHA-256 of the signed body
		url     TEXT NOT NULL,
		records BIGINT NOT NULL,
		at      BIGINT NOT NULL,
		PRIMARY KEY (edge, epoch, part),
		UNIQUE (edge, seq)
	);
	CREATE TABLE records (
		edge      TEXT NOT NULL,
		serial    BIGINT NOT NULL,
		epoch     BIGINT NOT NULL,
		publisher TEXT NOT NULL,
		cid       TEXT NOT NULL,
		bytes     BIGINT NOT NULL,
		PRIMARY KEY (edge, serial)
	);
	CREATE INDEX records_epoch ON records (epoch);
	CREATE TABLE reads (
		reader    TEXT NOT NULL,
		serial    TEXT NOT NULL,
		peer      TEXT NOT NULL,
		epoch     BIGINT NOT NULL,
		publisher TEXT NOT NULL,
		shard     TEXT NOT NULL,
		bytes     BIGINT NOT NULL,
		PRIMARY KEY (reader, serial)
	);
	CREATE INDEX reads_epoch ON reads (epoch);
	CREATE TABLE forfeits (
		edge   TEXT NOT NULL,
		epoch  BIGINT NOT NULL,
		reason TEXT NOT NULL,
		PRIMARY KEY (edge, epoch)
	);
	CREATE TABLE rejections (
		id      {{id}},
		account TEXT NOT NULL, -- the party the rejected claim would have paid
		epoch   BIGINT NOT NULL,
		kind    TEXT NOT NULL, -- batch, record, order, claim, epoch
		ref     TEXT NOT NULL,
		reason  TEXT NOT NULL,
		detail  TEXT NOT NULL,
		bytes   BIGINT NOT NULL,
		at      BIGINT NOT NULL
	);
	CREATE INDEX rejections_account ON rejections (account, id);
	CREATE TABLE settlements (
		epoch BIGINT PRIMARY KEY,
		tx    TEXT NOT NULL,
		at    BIGINT NOT NULL
	);
	CREATE TABLE meta (
		key   TEXT PRIMARY KEY,
		value BIGINT NOT NULL
	);`,
	// 2: the upstream-read check. records.root is the site root a record's
	// object was found in; held keeps an edge's records of a striped root
	// that no read order of the edge backs yet, until backed (paid) or
	// refused (no_upstream_reads).
	`ALTER TABLE records ADD COLUMN root TEXT NOT NULL DEFAULT '';
	CREATE INDEX reads_shard ON reads (shard);
	CREATE INDEX reads_reader ON reads (reader, publisher);
	CREATE TABLE held (
		edge      TEXT NOT NULL,
		epoch     BIGINT NOT NULL, -- the records' epoch
		publisher TEXT NOT NULL,
		root      TEXT NOT NULL,
		records   BIGINT NOT NULL,
		bytes     BIGINT NOT NULL,
		since     BIGINT NOT NULL, -- Unix ns of the settlement that held them
		PRIMARY KEY (edge, epoch, publisher, root)
	);`,
	// 3: evidence-bounded edge payments. admissions are the edges the
	// operator admits to be paid; edge_keys sums each edge's accepted
	// bytes per (epoch, site key, publisher, root) as batches are stored;
	// edge_epochs and demand keep what the DNS router said of each edge
	// and epoch (its heartbeats' epoch byte counter, the bytes of the
	// router's own probes, the client units it handed the edge to per
	// site); probe_reads the bytes billing's own prober fetched.
	`CREATE TABLE admissions (
		edge        TEXT PRIMARY KEY,
		admitted_at BIGINT NOT NULL,          -- Unix ns
		revoked_at  BIGINT NOT NULL DEFAULT 0 -- Unix ns; 0 while admitted
	);
	CREATE TABLE admission_nonces (
		nonce  TEXT PRIMARY KEY,
		edge   TEXT NOT NULL,
		revoke BIGINT NOT NULL,
		at     BIGINT NOT NULL
	);
	CREATE TABLE edge_keys (
		edge      TEXT NOT NULL,
		epoch     BIGINT NOT NULL,
		dkey      TEXT NOT NULL, -- name:NAME or cid:CID, as the router counts demand
		publisher TEXT NOT NULL,
		root      TEXT NOT NULL,
		bytes     BIGINT NOT NULL,
		records   BIGINT NOT NULL,
		PRIMARY KEY (edge, epoch, dkey, publisher, root)
	);
	CREATE INDEX edge_keys_epoch ON edge_keys (epoch);
	CREATE TABLE edge_epochs (
		edge        TEXT NOT NULL,
		epoch       BIGINT NOT NULL,
		counter     BIGINT NOT NULL, -- highest epoch byte count the edge's heartbeats reported
		closed      BIGINT NOT NULL, -- 1 once a heartbeat reported the epoch closed
		probe_bytes BIGINT NOT NULL, -- body bytes of the router's content probes of the edge
		PRIMARY KEY (edge, epoch)
	);
	CREATE TABLE demand (
		edge  TEXT NOT NULL,
		epoch BIGINT NOT NULL,
		dkey  TEXT NOT NULL,
		first BIGINT NOT NULL, -- client units handed the edge first
		other BIGINT NOT NULL, -- client units handed the edge in a later place
		PRIMARY KEY (edge, epoch, dkey)
	);
	CREATE TABLE probe_reads (
		edge  TEXT NOT NULL,
		epoch BIGINT NOT NULL,
		bytes BIGINT NOT NULL,
		PRIMARY KEY (edge, epoch)
	);`,
	// 4: storage reads bounded at settlement. read_offset, expires (Unix
	// ns) and kind (edge, origin) come from the order; shard_size from
	// the origin's log (0: not known, no byte bound); paid is what
	// settlement paid of the read (its other bytes refused).
	`ALTER TABLE reads ADD COLUMN read_offset BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE reads ADD COLUMN expires BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE reads ADD COLUMN kind TEXT NOT NULL DEFAULT 'edge';
	ALTER TABLE reads ADD COLUMN shard_size BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE reads ADD COLUMN paid BIGINT NOT NULL DEFAULT 0;
	CREATE INDEX reads_upkeep ON reads (peer, shard, kind, epoch);`,
	// 5: records deferred at ingest (no poison): an edge's records whose
	// content could not be resolved then (the origin answered 5xx, timed
	// out or served a CAR cut short), the client checks passed; every
	// settlement resolves them again and pays or refuses them. A refused
	// row is kept (refused = 1) so that its serial stays taken.
	`CREATE TABLE pending (
		edge    TEXT NOT NULL,
		serial  BIGINT NOT NULL,
		epoch   BIGINT NOT NULL,
		name    TEXT NOT NULL,
		root    TEXT NOT NULL,   -- as the record says
		cid     TEXT NOT NULL,
		bytes   BIGINT NOT NULL,
		time_ms BIGINT NOT NULL, -- when it was served, Unix ms
		client  TEXT NOT NULL,   -- the record's client hash, hex
		since   BIGINT NOT NULL, -- Unix ns it was deferred
		refused BIGINT NOT NULL DEFAULT 0,
		PRIMARY KEY (edge, serial)
	);
	CREATE INDEX pending_open ON pending (refused, epoch);`,
	// 6: the demand reference (edgepay.go) sums a site key's bytes and
	// client units over a window of epochs, across edges.
	`CREATE INDEX edge_keys_dkey ON edge_keys (dkey, epoch);
	CREATE INDEX demand_dkey ON demand (dkey, epoch);`,
	// 7: one account paying for several publisher keys (keylinks.go).
	// account pays for what key is charged in the epochs [from_epoch,
	// until_epoch); until_epoch is 0 while the link is open, and a key
	// has at most one open link. linked_at and unlinked_at are the signed
	// times (Unix ns) of the link and of its end, so that neither can be
	// replayed against a later link.
	`CREATE TABLE key_links (
		id          {{id}},
		key         TEXT NOT NULL,
		account     TEXT NOT NULL,
		from_epoch  BIGINT NOT NULL,
		until_epoch BIGINT NOT NULL DEFAULT 0,
		linked_at   BIGINT NOT NULL,
		unlinked_at BIGINT NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX key_links_open ON key_links (key) WHERE until_epoch = 0;
	CREATE INDEX key_links_key ON key_links (key, from_epoch);
	CREATE INDEX key_links_account ON key_links (account, id);`,
	// 8: the URL path of a served record (billingapi.Record.Path; ''
	// when the edge sent none), kept for a site's top paths and never
	// paid by; a pending record keeps its path until it is stored.
	// records_publisher serves the per-publisher windows of sites.go.
	`ALTER TABLE records ADD COLUMN path TEXT NOT NULL DEFAULT '';
	ALTER TABLE pending ADD COLUMN path TEXT NOT NULL DEFAULT '';
	CREATE INDEX records_publisher ON records (publisher, epoch);`,
}

// OpenDB opens the ledger database named by dsn and brings its schema up
// to date: "postgres://…" or "postgresql://…" is PostgreSQL (pgx); a file
// path or "sqlite:PATH" is SQLite (see sqldb.Open).
func OpenDB(ctx context.Context, dsn string) (*DB, error) {
	db, err := sqldb.Open(ctx, dsn, sqldb.Schema{Shared: schema}, sqldb.WithMaxOpenConns(4))
	if err != nil {
		return nil, fmt.Errorf("billing: %w", err)
	}
	return &DB{DB: db.SQL(), Postgres: db.Postgres()}, nil
}

// q rewrites a query written with ? placeholders for the database's
// dialect ($1, $2, … for PostgreSQL; sqldb.Rebind).
func (d *DB) q(query string) string {
	if !d.Postgres {
		return query
	}
	return sqldb.Rebind(query)
}
