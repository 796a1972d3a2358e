// Package edge is a topcdn edge: it serves published sites to browsers
// from blocks it fetches from storage peers (through the origin's signed
// manifests and an erasure.Reader) or, for content not striped yet, from
// the origin's Trustless Gateway, verifying every block against its CID
// before it is cached or served.
//
// Sites are served by host name (NAME.DOMAIN resolves like a DNSLink name
// to the name's IPNS record, fetched from the origin and checked), as a
// path gateway (/ipfs/{cid}/…, /ipns/{name}/…) and as a subdomain gateway
// ({cid}.ipfs.DOMAIN), all through boxo's gateway package. Blocks are
// cached in memory (an LRU bounded by bytes) and on disk (DiskCache).
//
// The package has no Caddy dependency; caddymodule adapts it.
package edge
