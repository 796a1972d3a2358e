// Package sqldb is a service's SQL database behind one API: an embedded
// SQLite file (package sqlitedb, modernc.org/sqlite) or a PostgreSQL
// database (pgx), chosen by the DSN, with one schema and one migration
// path for both.
//
// Queries are written once, in the SQL both dialects accept, with ?
// placeholders: DB and Tx rewrite them for PostgreSQL ($1, $2, …) in every
// method, so no call site can forget to. What differs between the dialects
// is kept to a few points: an auto-increment key is {{id}} and a byte
// string {{blob}} in migrations (Schema); a new row's key is read with
// INSERT … RETURNING, not LastInsertId; a read-check-write runs through
// InTx, which makes it serializable on PostgreSQL (SQLite's single
// connection already serialises writers); and the database's clock is Now.
//
// Invariant: a migration, once released, is never edited, only followed
// by another. A SQLite database counts its migrations in PRAGMA
// user_version, a PostgreSQL one in table schema_version, and both count
// the same steps: version n is the same schema in either dialect.
package sqldb
