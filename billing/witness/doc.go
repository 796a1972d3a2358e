// Package witness holds the parties billing asks for evidence, none of
// whom profits from a payment: the origin (published content, site
// indexes, manifests, shard placement, its own key), the DNS router (the
// edges it hands out and their heartbeats) and the edges' own answers to
// probes.
//
// OriginContent learns published content from the origin: names, each
// site's blocks as a CAR (every block verified against its CID), shard
// placement from origin-signed manifests. DNSDirectory reads the router's
// edge list and keeps, per edge, the highest byte counter its heartbeats
// reported and the highest rate it grew at. HTTPProber fetches a block
// from an edge and verifies it against its CID.
//
// A witness that finds a claim false says so with a
// *billingapi.RejectError carrying the reason; any other error means it
// could not tell. A site OriginContent cannot index (the origin refuses
// its CAR with a 4xx, or the DAG is beyond the origin's limits) is refused
// as billingapi.ReasonUnindexable and remembered with a backoff; a CAR the
// origin cannot serve whole now (5xx, a timeout, cut short) is an error of
// the other kind, remembered for 30 s (siteindex.go). The ledger (package billing) declares the interfaces it
// asks through (Content, ShardIndex, OriginKey, EdgeDirectory, Prober)
// and imports this package for the data they return (Object, Holding,
// EdgeInfo); this package imports neither the ledger nor a SQL driver.
package witness
