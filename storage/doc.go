// Package storage is the topcdn storage peer and its protocol.
//
// A storage peer lends disk: it keeps erasure-coded shards (see package
// erasure) for an origin and serves byte ranges of them to readers. Peers
// are untrusted, so every request is authorized by a signed order
// (identity.Envelope): the origin signs the orders that write, delete and
// audit shards; a reader signs each read order, which the peer keeps as its
// proof of bytes served. Shards are named by their content (a raw CID of
// the whole shard), checked on write.
//
// This package holds the wire formats (orders, heartbeats, audits), the
// peer's HTTP server (Server), and a client (Client) used by origins and
// readers.
package storage
