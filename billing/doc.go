// Package billing verifies what edges and storage peers say they served and
// keeps the token ledger that pays them.
//
// Edges report with a billingapi.Reporter: one signed Batch per epoch
// holding a Record per response served. Storage peers report with a Claim:
// the read orders, signed by their readers, that they served. The Ledger
// checks every batch and claim (signature, epoch window, replays, published
// content, byte bounds, self-dealing, cross-checks with the DNS router and
// the edges' heartbeats, reads from the storage peers, a sampling prober),
// records what it rejects with a reason, and settles each closed epoch in
// one database transaction: the publisher is debited and the operators are
// credited, entries of every transaction summing to zero.
//
// The evidence comes from parties that profit from no payment: the origin,
// the DNS router and the edges' own answers to probes. The Ledger asks them
// through small interfaces declared here (Content, ShardIndex, OriginKey,
// EdgeDirectory, Prober); package billing/witness implements them over
// HTTP. The wire formats, the clients and the reason codes are package
// billingapi.
//
// The ledger lives in SQLite (modernc.org/sqlite) or PostgreSQL
// (github.com/jackc/pgx/v5), with one schema and its migrations in this
// package. See README.md for the layout, the wire formats, the reason
// codes and the ledger model.
package billing
