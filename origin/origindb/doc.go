// Package origindb opens the origin's database and holds its schema: one
// migration history for the tables of both the origin's jobs. The
// database is an embedded SQLite file, DATA/origin.db, by default, or a
// PostgreSQL database that several origins share (package sqldb).
//
//   - The content side (package origin): published roots, IPNS records,
//     human names, publishers' usage, who uploaded each root, the nonces
//     of recent upload authorizations and purges, the billing log
//     (billinglog.go) and the name-change stream (namechanges.go).
//   - The storage side (package origin/durability): storage peers and
//     their heartbeats, striped segments, their shards and blocks, signed
//     manifests, stripe jobs, audits and flags.
//   - What origins sharing a database coordinate through: leases on the
//     background jobs, shards being placed or deleted, quota reservations,
//     and the counters the billing log and the name-change stream take
//     their IDs from, gapless and committed in order.
//
// Invariant: an entry of the billing log or the name-change stream never
// becomes visible after one with a higher ID, so readers paging by ID skip
// none.
//
// SQLite databases keep the history they were created with (versions 1
// to 9, PRAGMA user_version); a PostgreSQL database starts from the
// baseline those reach, and from version 10 on both take the same
// migrations (TestSchemaDialects holds all three ways to the same
// tables).
//
// Invariant: a migration, once released, is never edited, only followed
// by another, so every data directory an older origin created opens, and
// one a newer origin migrated is refused rather than misread.
package origindb
