// Package durability is the origin's storage side: it keeps published
// content on storage peers, Reed-Solomon coded, and checks that it stays
// there.
//
// A Keeper registers storage peers from their signed heartbeats; runs
// stripe jobs that pack a published root's blocks into segments, place
// each segment's k+m shards on healthy peers and sign the root's manifest;
// reads striped blocks back through an erasure.Reader; audits peers with
// random chunk challenges; repairs segments that lost shards; and sweeps
// shards no segment places. The origin (package origin) wires a Keeper in
// and serves its HTTP routes; the Keeper reaches the origin only through
// Config: the origin's database (origindb), key, local block store, and
// its view of all its blocks.
//
// Invariants the code keeps:
//
//   - Everything is in the database, so a restart resumes: stripe jobs,
//     segments with their shards and blocks (one transaction each, saved
//     after the shards are on their peers), manifests, audits and flags.
//   - A root's manifest is signed only once every block of its DAG is in a
//     segment, and the origin's local copy is dropped only after that.
//     Manifest versions only go up; moving a shard marks every manifest of
//     its segment stale in the same transaction, and stale manifests are
//     re-signed.
//   - A heartbeat counts only if it is signed by the peer it names, within
//     two minutes of the origin's clock, and newer than the last accepted.
//   - Peers are checked, not trusted: wrong bytes, from a read, an audit or
//     a repair, flag the peer and mark the shard bad; AuditRefusals audits
//     of a shard refused in a row by a peer that heartbeats count as lost.
//     A flagged peer gets no new shards.
//   - Repair never reads a segment with fewer than k healthy shards (each
//     read is an origin-signed read order, paid by the publisher), and a
//     segment whose repair failed is not tried again before its backoff
//     (repair_backoff: 1, 2, 4, … repair intervals, at most an hour)
//     unless its healthy shards changed or more peers can take shards.
//   - A shard is deleted from a peer only when no saved row places it there
//     and no stripe job or repair, of any origin, is putting it there
//     (table placements), checked in one transaction; a put of it there
//     waits for such a delete to end.
//   - Origins sharing a database run each background job once: the audit,
//     repair and sweep passes under a lease (lease.go), each stripe job
//     under a claim (stripejobs.go), renewed on the database's clock; a
//     holder that dies loses them within LeaseTTL. Every job write is a
//     compare-and-set (shard moves, manifest versions, placements), so a
//     job run twice wastes work and never corrupts.
//
// The database is SQLite with one connection, or PostgreSQL: the Keeper
// never queries it from inside a transaction, and a transaction's body
// (sqldb.InTx) may run more than once, so it has no other side effects.
package durability
