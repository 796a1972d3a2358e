// Package origin is topcdn's content-addressed origin.
//
// An origin takes published content as CAR uploads, verifies every block
// against its CID, and stores it durably in a flatfs blockstore; its
// metadata (IPNS records, human names, published roots) lives in an
// embedded SQLite database, or in PostgreSQL (Config.DB). It serves the IPFS Trustless Gateway API
// (raw blocks, CARs, IPNS records) through boxo's gateway package, plus a
// small JSON API for publishers: which blocks are missing, CAR upload, and
// human names. Uploads are signed by the publisher's key (UploadHeader,
// SignUpload, AuthorizeUpload) and charged to its quota
// (Config.PublisherQuota).
//
// With striping on (Config.Stripe), published content moves on to storage
// peers: the origin's storage side, package origin/durability
// (Origin.Storage), stripes it, reads it back for the origin's block view
// (local disk first), and audits, repairs and sweeps the peers; the origin
// wires it in and serves its routes. Both keep their state in the one
// database whose schema is package origin/origindb's.
//
// These invariants keep a publish atomic and the store consistent:
//
//   - The block store is closed under links: a block is written only after
//     every block it links to, so any stored block roots a complete DAG.
//     An upload is staged and checked whole before its first block is
//     written, then committed leaves first.
//   - Every stored DAG can be served whole as a CAR: uploads over
//     MaxLinksPerBlock, MaxDAGDepth or MaxDAGBlocks (stored blocks
//     counted) are refused before anything is stored, and a CAR whose
//     striped segments the origin knows to be below k healthy shards is
//     refused (503) before its first byte, never sent as a truncated 200.
//   - A name moves to a new root only by a signed IPNS record with a higher
//     sequence number, and only once that root is stored.
//   - With PostgreSQL (several origins) and striping, an upload is
//     acknowledged only once striped onto the storage peers: no
//     acknowledged publish lives on one origin's disk.
//   - The name-change stream (GET /api/v1/names/changes) says what the
//     tables say: each new record of a human name, and each purge, is
//     appended to it in the transaction that makes it, and its readers
//     are woken only after that transaction commits.
package origin
