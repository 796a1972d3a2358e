// Package origindb opens the origin's SQLite database, DATA/origin.db, and
// holds its schema: one migration history (PRAGMA user_version) for the
// tables of both the origin's jobs.
//
//   - The content side (package origin): published roots, IPNS records,
//     human names, publishers' usage, who uploaded each root, the nonces
//     of recent upload authorizations and purges, the billing log
//     (billinglog.go) and the name-change stream (namechanges.go).
//   - The storage side (package origin/durability): storage peers and
//     their heartbeats, striped segments, their shards and blocks, signed
//     manifests, stripe jobs, audits and flags.
//
// Invariant: a migration, once released, is never edited, only followed
// by another, so every data directory an older origin created opens, and
// one a newer origin migrated is refused rather than misread.
package origindb
