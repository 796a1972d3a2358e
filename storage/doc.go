// Package storage is the topcdn storage peer.
//
// A storage peer lends disk: it keeps erasure-coded shards (see package
// erasure) for an origin and serves byte ranges of them to readers. Peers
// are untrusted, so every request is authorized by a signed order
// (identity.Envelope): the origin signs the orders that write, delete and
// audit shards; a reader signs each read order, which the peer keeps as its
// proof of bytes served. Shards are named by their content (a raw CID of
// the whole shard), checked on write.
//
// This package holds the peer's HTTP server (Server), its shard store and
// its database of served reads. The wire formats (orders, heartbeats,
// audits) and the Client that origins and readers use are package
// storageapi, which links no server.
package storage
