// Package storageapi is the storage peers' protocol: the wire formats that
// origins, readers and peers exchange, and the Client that speaks it.
//
// Every request to a peer is authorized by a signed order
// (identity.Envelope): the origin signs WriteOrder, DeleteOrder and Audit;
// a reader signs each ReadOrder, which the peer keeps as its proof of
// bytes served (ServedRead) and later claims from billing. Shards are named
// by their content (ShardID: a raw CIDv1 with a BLAKE3 multihash).
//
// The peer itself (its HTTP server, shard store and database) is package
// storage; this package imports neither, so an edge or an origin that only
// reads or writes shards links no storage server.
package storageapi
