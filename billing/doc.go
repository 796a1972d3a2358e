// Package billing verifies what edges and storage peers say they served and
// keeps the token ledger that pays them.
//
// Edges report with a Reporter: one signed Batch per epoch holding a Record
// per response served. Storage peers report with a Claim: the read orders,
// signed by their readers, that they served. The Ledger checks every batch
// and claim (signature, epoch window, replays, published content, byte
// bounds, self-dealing, cross-checks with the DNS router and a sampling
// prober), records what it rejects with a reason, and settles each closed
// epoch in one database transaction: the publisher is debited and the
// operators are credited, entries of every transaction summing to zero.
//
// The ledger lives in SQLite (modernc.org/sqlite) or PostgreSQL
// (github.com/jackc/pgx/v5), with one schema and its migrations in this
// package. See README.md for the wire formats, reason codes and the ledger
// model.
package billing
