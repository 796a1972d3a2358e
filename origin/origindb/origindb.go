package origindb

import (
	"context"
	"fmt"

	"github.com/topcdn/topcdn/sqldb"
)

// history is the SQLite databases' schema up to version 9, applied in
// order; PRAGMA user_version records how far. It is the data directories'
// history: released, it is never edited. Migrations after it are shared
// with PostgreSQL (shared), which starts from baseline instead.
var history = []string{
	`CREATE TABLE roots (
		cid        TEXT PRIMARY KEY,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE records (
		ipns       TEXT PRIMARY KEY,
		sequence   INTEGER NOT NULL,
		value      TEXT NOT NULL,
		validity   INTEGER NOT NULL,
		ttl_ns     INTEGER NOT NULL,
		record     BLOB NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE TABLE names (
		name       TEXT PRIMARY KEY,
		ipns       TEXT NOT NULL UNIQUE,
		created_at INTEGER NOT NULL
	);`,
	// Version 2: storage peers, striped segments, manifests, audits.
	`CREATE TABLE peers (
		peer_id    TEXT PRIMARY KEY,
		addr       TEXT NOT NULL,
		capacity   INTEGER NOT NULL,
		free       INTEGER NOT NULL,
		shards     INTEGER NOT NULL,
		lat        REAL,
		lon        REAL,
		region     TEXT NOT NULL DEFAULT '',
		hb_time    INTEGER NOT NULL, -- the heartbeat's own timestamp (ns)
		last_seen  INTEGER NOT NULL, -- when the origin accepted it (ns)
		first_seen INTEGER NOT NULL
	);
	CREATE TABLE segments (
		id            INTEGER PRIMARY KEY,
		length        INTEGER NOT NULL,
		shard_size    INTEGER NOT NULL,
		data_shards   INTEGER NOT NULL,
		parity_shards INTEGER NOT NULL,
		chunk_size    INTEGER NOT NULL,
		created_at    INTEGER NOT NULL
	);
	CREATE TABLE shards (
		segment_id INTEGER NOT NULL REFERENCES segments (id),
		idx        INTEGER NOT NULL,
		shard_id   TEXT NOT NULL,
		peer_id    TEXT NOT NULL,
		chunks     BLOB NOT NULL,
		bad        TEXT NOT NULL DEFAULT '', -- why the shard is not trusted, if it is not
		PRIMARY KEY (segment_id, idx)
	);
	CREATE INDEX shards_peer ON shards (peer_id);
	CREATE TABLE blocks (
		cid        TEXT PRIMARY KEY,
		segment_id INTEGER NOT NULL REFERENCES segments (id),
		offset     INTEGER NOT NULL,
		length     INTEGER NOT NULL
	);
	CREATE INDEX blocks_segment ON blocks (segment_id);
	CREATE TABLE manifests (
		root       TEXT PRIMARY KEY,
		version    INTEGER NOT NULL,
		envelope   BLOB NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE TABLE manifest_segments (
		root       TEXT NOT NULL,
		idx        INTEGER NOT NULL,
		segment_id INTEGER NOT NULL,
		PRIMARY KEY (root, idx)
	);
	CREATE INDEX manifest_segments_segment ON manifest_segments (segment_id);
	CREATE TABLE stripe_jobs (
		root       TEXT PRIMARY KEY,
		state      TEXT NOT NULL, -- pending, done
		error      TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE TABLE audits (
		id       INTEGER PRIMARY KEY,
		peer_id  TEXT NOT NULL,
		shard_id TEXT NOT NULL,
		ok       INTEGER NOT NULL,
		reason   TEXT NOT NULL,
		at       INTEGER NOT NULL
	);
	CREATE INDEX audits_peer ON audits (peer_id, at);
	CREATE TABLE flags (
		id       INTEGER PRIMARY KEY,
		peer_id  TEXT NOT NULL,
		shard_id TEXT NOT NULL,
		reason   TEXT NOT NULL,
		source   TEXT NOT NULL, -- read or audit
		at       INTEGER NOT NULL
	);`,
	// Version 3: manifests to re-sign, marked in the same transaction as
	// the shard moves that make them stale.
	`ALTER TABLE manifests ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;`,
	// Version 4: signed uploads. Who uploaded each root, what each
	// publisher stored (for its quota), and the nonces of recent upload
	// authorizations (against replays). Roots uploaded before have no
	// publisher.
	`CREATE TABLE publishers (
		peer_id     TEXT PRIMARY KEY,
		used_bytes  INTEGER NOT NULL, -- bytes of the blocks its uploads newly stored (and reservations in flight)
		uploads     INTEGER NOT NULL DEFAULT 0,
		last_upload INTEGER NOT NULL DEFAULT 0 -- ns; 0: none accepted yet
	);
	CREATE TABLE root_publishers (
		root       TEXT NOT NULL,
		publisher  TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (root, publisher)
	);
	CREATE INDEX root_publishers_publisher ON root_publishers (publisher);
	CREATE TABLE upload_nonces (
		signer    TEXT NOT NULL,
		nonce     TEXT NOT NULL,
		signed_at INTEGER NOT NULL, -- the authorization's own time (ns)
		PRIMARY KEY (signer, nonce)
	);
	CREATE INDEX upload_nonces_signed ON upload_nonces (signed_at);`,
	// Version 5: each audit's result (ok, failed, unreachable, refused),
	// so that refusals in a row can be told from a peer that was down.
	`ALTER TABLE audits ADD COLUMN result TEXT NOT NULL DEFAULT '';
	CREATE INDEX audits_shard ON audits (shard_id, peer_id, at);`,
	// Version 6: the shape of stored DAGs, so that an upload linking to
	// them is held to the DAG limits (origin.MaxDAGDepth, MaxDAGBlocks)
	// without walking them again; and the repair backoff of segments
	// that could not be repaired. Blocks stored before have no row.
	`CREATE TABLE dag_stats (
		cid    TEXT PRIMARY KEY, -- CIDv1 of a stored block with links (raw leaves have none)
		height INTEGER NOT NULL, -- longest chain of links below it
		blocks INTEGER NOT NULL  -- blocks under it, itself included: an upper bound (shared blocks counted per parent)
	);
	CREATE TABLE repair_backoff (
		segment_id   INTEGER PRIMARY KEY,
		failures     INTEGER NOT NULL, -- failed repairs in a row
		next_at      INTEGER NOT NULL, -- ns; no repair before
		last_error   TEXT NOT NULL,
		healthy_seen INTEGER NOT NULL, -- healthy shards at the last failure; a change resets the backoff
		peers_seen   INTEGER NOT NULL  -- peers that could take a shard at the last failure; more reset it
	);`,
	// Version 7: the billing log (billinglog.go): append-only facts for
	// billing, each written in the transaction of its change. Backfilled
	// from what the tables hold: uploads (root_publishers), the current
	// value of every human name, every shard where it is now (placed when
	// its segment was made), and the flags; in time order.
	`CREATE TABLE billing_log (
		id         INTEGER PRIMARY KEY,
		kind       TEXT NOT NULL, -- upload, name, place, move, flag
		root       TEXT NOT NULL DEFAULT '',
		publisher  TEXT NOT NULL DEFAULT '',
		name       TEXT NOT NULL DEFAULT '',
		ipns       TEXT NOT NULL DEFAULT '',
		seq        INTEGER NOT NULL DEFAULT 0,
		ttl_ns     INTEGER NOT NULL DEFAULT 0,
		shard      TEXT NOT NULL DEFAULT '',
		peer       TEXT NOT NULL DEFAULT '',
		segment_id INTEGER NOT NULL DEFAULT 0,
		size       INTEGER NOT NULL DEFAULT 0,
		reason     TEXT NOT NULL DEFAULT '',
		at         INTEGER NOT NULL -- ns
	);
	INSERT INTO billing_log (kind, root, publisher, name, ipns, seq, ttl_ns, shard, peer, segment_id, size, reason, at)
	SELECT kind, root, publisher, name, ipns, seq, ttl_ns, shard, peer, segment_id, size, reason, at FROM (
		SELECT 'upload' AS kind, root, publisher, '' AS name, '' AS ipns, 0 AS seq, 0 AS ttl_ns, '' AS shard,
			'' AS peer, 0 AS segment_id, 0 AS size, '' AS reason, created_at * 1000000000 AS at, 0 AS o1, rowid AS o2
		FROM root_publishers
		UNION ALL
		SELECT 'name', CASE WHEN instr(substr(r.value, 7), '/') > 0
				THEN substr(r.value, 7, instr(substr(r.value, 7), '/') - 1) ELSE substr(r.value, 7) END,
			'', n.name, n.ipns, r.sequence, r.ttl_ns, '', '', 0, 0, '', r.updated_at, 1, n.rowid
		FROM names n JOIN records r ON r.ipns = n.ipns WHERE r.value LIKE '/ipfs/%'
		UNION ALL
		SELECT 'place', COALESCE((SELECT ms.root FROM manifest_segments ms LEFT JOIN stripe_jobs j ON j.root = ms.root
				WHERE ms.segment_id = s.segment_id ORDER BY j.created_at, ms.root LIMIT 1), ''),
			'', '', '', 0, 0, s.shard_id, s.peer_id, s.segment_id, g.shard_size, '', g.created_at, 2, s.rowid
		FROM shards s JOIN segments g ON g.id = s.segment_id
		UNION ALL
		SELECT 'flag', '', '', '', '', 0, 0, shard_id, peer_id, 0, 0, reason, at, 3, id FROM flags
	) ORDER BY at, o1, o2;`,
	// Version 8: the name-change stream (namechanges.go): each new record
	// of a human name and each purge, written in the transaction of the
	// change, then trimmed (origin.Config.NameChangesRetention). IDs are
	// AUTOINCREMENT: never reused, even once the rows are trimmed away,
	// so a reader's cursor never points at another change.
	`CREATE TABLE name_changes (
		id     INTEGER PRIMARY KEY AUTOINCREMENT,
		kind   TEXT NOT NULL, -- record, purge
		name   TEXT NOT NULL, -- the human name
		ipns   TEXT NOT NULL, -- the IPNS name it is bound to
		record BLOB,          -- kind record: the IPNS record as stored
		purge  BLOB,          -- kind purge: the signed purge envelope, JSON
		at     INTEGER NOT NULL -- ns
	);`,
	// Version 9: the nonces of recent purges, against replays; a nonce is
	// kept while its purge's time is within originapi.PurgeSkew.
	`CREATE TABLE purge_nonces (
		signer TEXT NOT NULL,
		nonce  TEXT NOT NULL,
		at     INTEGER NOT NULL, -- the purge's own time (ns)
		PRIMARY KEY (signer, nonce)
	);
	CREATE INDEX purge_nonces_at ON purge_nonces (at);`,
}

// baseline is the schema history reaches (version 9) for PostgreSQL, in
// SQL both dialects accept (sqldb.Schema): BIGINT for SQLite's INTEGER,
// {{id}} for INTEGER PRIMARY KEY, {{blob}} for BLOB, DOUBLE PRECISION for
// REAL, and blocks."offset" quoted (OFFSET is reserved in PostgreSQL; both
// accept the quoted name). The billing log's backfill (version 7) has no
// counterpart: a PostgreSQL database starts empty. TestSchemaDialects holds
// it to history.
const baseline = `CREATE TABLE roots (
		cid        TEXT PRIMARY KEY,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE records (
		ipns       TEXT PRIMARY KEY,
		sequence   BIGINT NOT NULL,
		value      TEXT NOT NULL,
		validity   BIGINT NOT NULL,
		ttl_ns     BIGINT NOT NULL,
		record     {{blob}} NOT NULL,
		updated_at BIGINT NOT NULL
	);
	CREATE TABLE names (
		name       TEXT PRIMARY KEY,
		ipns       TEXT NOT NULL UNIQUE,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE peers (
		peer_id    TEXT PRIMARY KEY,
		addr       TEXT NOT NULL,
		capacity   BIGINT NOT NULL,
		free       BIGINT NOT NULL,
		shards     BIGINT NOT NULL,
		lat        DOUBLE PRECISION,
		lon        DOUBLE PRECISION,
		region     TEXT NOT NULL DEFAULT '',
		hb_time    BIGINT NOT NULL, -- the heartbeat's own timestamp (ns)
		last_seen  BIGINT NOT NULL, -- when the origin accepted it (ns)
		first_seen BIGINT NOT NULL
	);
	CREATE TABLE segments (
		id            {{id}},
		length        BIGINT NOT NULL,
		shard_size    BIGINT NOT NULL,
		data_shards   BIGINT NOT NULL,
		parity_shards BIGINT NOT NULL,
		chunk_size    BIGINT NOT NULL,
		created_at    BIGINT NOT NULL
	);
	CREATE TABLE shards (
		segment_id BIGINT NOT NULL REFERENCES segments (id),
		idx        BIGINT NOT NULL,
		shard_id   TEXT NOT NULL,
		peer_id    TEXT NOT NULL,
		chunks     {{blob}} NOT NULL,
		bad        TEXT NOT NULL DEFAULT '', -- why the shard is not trusted, if it is not
		PRIMARY KEY (segment_id, idx)
	);
	CREATE INDEX shards_peer ON shards (peer_id);
	CREATE TABLE blocks (
		cid        TEXT PRIMARY KEY,
		segment_id BIGINT NOT NULL REFERENCES segments (id),
		"offset"   BIGINT NOT NULL,
		length     BIGINT NOT NULL
	);
	CREATE INDEX blocks_segment ON blocks (segment_id);
	CREATE TABLE manifests (
		root       TEXT PRIMARY KEY,
		version    BIGINT NOT NULL,
		envelope   {{blob}} NOT NULL,
		updated_at BIGINT NOT NULL,
		stale      BIGINT NOT NULL DEFAULT 0
	);
	CREATE TABLE manifest_segments (
		root       TEXT NOT NULL,
		idx        BIGINT NOT NULL,
		segment_id BIGINT NOT NULL,
		PRIMARY KEY (root, idx)
	);
	CREATE INDEX manifest_segments_segment ON manifest_segments (segment_id);
	CREATE TABLE stripe_jobs (
		root       TEXT PRIMARY KEY,
		state      TEXT NOT NULL, -- pending, done
		error      TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL
	);
	CREATE TABLE audits (
		id       {{id}},
		peer_id  TEXT NOT NULL,
		shard_id TEXT NOT NULL,
		ok       BIGINT NOT NULL,
		reason   TEXT NOT NULL,
		at       BIGINT NOT NULL,
		result   TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX audits_peer ON audits (peer_id, at);
	CREATE INDEX audits_shard ON audits (shard_id, peer_id, at);
	CREATE TABLE flags (
		id       {{id}},
		peer_id  TEXT NOT NULL,
		shard_id TEXT NOT NULL,
		reason   TEXT NOT NULL,
		source   TEXT NOT NULL, -- read or audit
		at       BIGINT NOT NULL
	);
	CREATE TABLE publishers (
		peer_id     TEXT PRIMARY KEY,
		used_bytes  BIGINT NOT NULL, -- bytes of the blocks its uploads newly stored (and reservations in flight)
		uploads     BIGINT NOT NULL DEFAULT 0,
		last_upload BIGINT NOT NULL DEFAULT 0 -- ns; 0: none accepted yet
	);
	CREATE TABLE root_publishers (
		root       TEXT NOT NULL,
		publisher  TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (root, publisher)
	);
	CREATE INDEX root_publishers_publisher ON root_publishers (publisher);
	CREATE TABLE upload_nonces (
		signer    TEXT NOT NULL,
		nonce     TEXT NOT NULL,
		signed_at BIGINT NOT NULL, -- the authorization's own time (ns)
		PRIMARY KEY (signer, nonce)
	);
	CREATE INDEX upload_nonces_signed ON upload_nonces (signed_at);
	CREATE TABLE dag_stats (
		cid    TEXT PRIMARY KEY,
		height BIGINT NOT NULL,
		blocks BIGINT NOT NULL
	);
	CREATE TABLE repair_backoff (
		segment_id   BIGINT PRIMARY KEY,
		failures     BIGINT NOT NULL,
		next_at      BIGINT NOT NULL,
		last_error   TEXT NOT NULL,
		healthy_seen BIGINT NOT NULL,
		peers_seen   BIGINT NOT NULL
	);
	CREATE TABLE billing_log (
		id         {{id}},
		kind       TEXT NOT NULL, -- upload, name, place, move, flag
		root       TEXT NOT NULL DEFAULT '',
		publisher  TEXT NOT NULL DEFAULT '',
		name       TEXT NOT NULL DEFAULT '',
		ipns       TEXT NOT NULL DEFAULT '',
		seq        BIGINT NOT NULL DEFAULT 0,
		ttl_ns     BIGINT NOT NULL DEFAULT 0,
		shard      TEXT NOT NULL DEFAULT '',
		peer       TEXT NOT NULL DEFAULT '',
		segment_id BIGINT NOT NULL DEFAULT 0,
		size       BIGINT NOT NULL DEFAULT 0,
		reason     TEXT NOT NULL DEFAULT '',
		at         BIGINT NOT NULL -- ns
	);
	CREATE TABLE name_changes (
		id     {{id}}, -- BIGSERIAL: never reused, as SQLite's AUTOINCREMENT
		kind   TEXT NOT NULL,
		name   TEXT NOT NULL,
		ipns   TEXT NOT NULL,
		record {{blob}},
		purge  {{blob}},
		at     BIGINT NOT NULL
	);
	CREATE TABLE purge_nonces (
		signer TEXT NOT NULL,
		nonce  TEXT NOT NULL,
		at     BIGINT NOT NULL,
		PRIMARY KEY (signer, nonce)
	);
	CREATE INDEX purge_nonces_at ON purge_nonces (at);`

// shared are the migrations after history and baseline, one text for
// SQLite and PostgreSQL (sqldb.Schema): version 10 on.
var shared = []string{
	// Version 10: what several origins over one database coordinate
	// through (docs/design/origins.md §2, §4): leases on the background
	// jobs, the billing log's counter (gapless IDs, committed in order),
	// shards being placed or deleted, quota reservations in flight, the
	// origins themselves; stripe jobs claimed by an origin, and which
	// origin signed each manifest; used from #18's slice 2 on. The
	// design's table placing is placements here: PLACING is reserved in
	// PostgreSQL.
	`CREATE TABLE leases (
		name    TEXT PRIMARY KEY,
		holder  TEXT NOT NULL,
		token   BIGINT NOT NULL, -- goes up with each new holder
		expires BIGINT NOT NULL  -- ns, the database's clock
	);
	CREATE TABLE counters (
		name TEXT PRIMARY KEY,
		n    BIGINT NOT NULL
	);
	INSERT INTO counters (name, n) SELECT 'billing_log', COALESCE(max(id), 0) FROM billing_log;
	CREATE TABLE placements ( -- a shard being put on, or deleted from, a peer
		shard   TEXT NOT NULL,
		peer    TEXT NOT NULL,
		kind    TEXT NOT NULL, -- put, delete
		n       BIGINT NOT NULL,
		holder  TEXT NOT NULL,
		expires BIGINT NOT NULL,
		PRIMARY KEY (shard, peer)
	);
	CREATE TABLE reservations (
		id        TEXT PRIMARY KEY,
		publisher TEXT NOT NULL,
		bytes     BIGINT NOT NULL,
		holder    TEXT NOT NULL,
		expires   BIGINT NOT NULL
	);
	CREATE TABLE origins (
		peer_id    TEXT PRIMARY KEY,
		url        TEXT NOT NULL,
		config     TEXT NOT NULL, -- JSON of the settings that must match across origins
		started_at BIGINT NOT NULL,
		last_seen  BIGINT NOT NULL
	);
	ALTER TABLE stripe_jobs ADD COLUMN holder TEXT NOT NULL DEFAULT '';
	ALTER TABLE stripe_jobs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE manifests ADD COLUMN signer TEXT NOT NULL DEFAULT '';`,
	// Version 11: the name-change stream's IDs come from a counter too
	// (gapless, committed in order, as the billing log's), seeded with the
	// last change kept: trimming always keeps the last ones, so that is
	// the last ever appended. Reservations are summed per publisher.
	`INSERT INTO counters (name, n) SELECT 'name_changes', COALESCE(max(id), 0) FROM name_changes;
	CREATE INDEX reservations_publisher ON reservations (publisher, expires);`,
}

// schema is the origin's schema in both dialects.
var schema = sqldb.Schema{SQLite: history, Baseline: baseline, BaselineVersion: len(history), Shared: shared}

// Open opens the origin's database, dsn: a SQLite file (DATA/origin.db)
// or a PostgreSQL URL (postgres://…), creating it if needed and bringing
// its schema up to date. opts are sqldb's.
func Open(ctx context.Context, dsn string, opts ...sqldb.Option) (*sqldb.DB, error) {
	db, err := sqldb.Open(ctx, dsn, schema, opts...)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	return db, nil
}
