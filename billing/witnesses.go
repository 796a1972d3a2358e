package billing

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// Content answers what billing needs to know about published content.
// Refusals are *RejectError (ReasonUnpublished, ReasonUnknownShard); other
// errors are transient and make billing answer 503.
type Content interface {
	// Object resolves an object an edge served: by name (the site's human
	// name) or else by root, and the CID inside it.
	Object(ctx context.Context, name, root, c string) (witness.Object, error)
	// ShardPublisher returns who published the content a shard holds.
	ShardPublisher(ctx context.Context, shard string) (peer.ID, error)
	// Holdings returns the shard bytes each storage peer holds per
	// publisher.
	Holdings(ctx context.Context) ([]witness.Holding, error)
}

// ContentAt is implemented by a Content that knows when each name
// pointed to each root (witness.OriginContent, from the origin's billing
// log): billing then resolves a record at the time it was served, so a
// superseded root stays billable while edges may still serve it, and no
// longer. Without it, billing calls Object.
type ContentAt interface {
	// ObjectAt is Object for an object served at at.
	ObjectAt(ctx context.Context, name, root, c string, at time.Time) (witness.Object, error)
}

// SiteNames is implemented by a Content that knows which human name each
// publisher key published (witness.OriginContent, from the name events of
// the origin's billing log). Without it, billing names a key's site from
// the names in the edges' records (GET /api/v1/accounts/{id}/sites).
type SiteNames interface {
	// SiteNames returns the name each of keys last published, for the
	// keys that published one.
	SiteNames(ctx context.Context, keys []string) map[string]string
}

// ShardPlacements is implemented by a Content that knows where the origin
// placed each shard, when, and which peers it flagged
// (witness.OriginContent, from the origin's billing log). Billing then
// pays a storage peer's read order only if the shard was on that peer
// while the order was valid and the order reads within the shard, refuses
// the reads of a flagged (peer, shard), and pays rent from the placement
// intervals. Without it, billing pays by ShardPublisher and Holdings.
type ShardPlacements interface {
	// ShardInfo returns the size and payer of shard, and whether it was
	// placed on p at some time in [from, to]. A shard never placed is a
	// *RejectError with ReasonUnknownShard.
	ShardInfo(ctx context.Context, shard string, p peer.ID, from, to time.Time) (witness.ShardInfo, error)
	// Flags returns, read up to now, when each flagged (peer, shard) was
	// first flagged.
	Flags(ctx context.Context) (map[witness.PeerShard]time.Time, error)
	// Placements returns the placement intervals overlapping [from, to),
	// each with its payer.
	Placements(ctx context.Context, from, to time.Time) ([]witness.Placement, error)
}

// ShardIndex is implemented by a Content that knows which shards hold
// which roots' blocks (from the signed manifests). Without it, billing
// cannot tell striped content and skips the upstream-read check.
type ShardIndex interface {
	// RootShards returns the shard IDs of every striped root (one with a
	// manifest). Roots without a manifest are absent.
	RootShards(ctx context.Context) (map[string][]string, error)
}

// OriginKey is implemented by a Content that knows the origin's peer ID.
// Read orders the origin signs (repair, audit reads, and the reads behind
// billing's own index of each site) are upkeep of the content they read:
// billing pays the storage peer for them and charges the shard's
// publisher, as for an edge's reads. Without it, those orders are refused
// as unknown_reader and the peers serve them unpaid.
type OriginKey interface {
	// OriginID returns the origin's peer ID.
	OriginID(ctx context.Context) (peer.ID, error)
}

// Sizer is implemented by a Content that can tell the bytes of a DAG:
// billing bounds what an edge is paid for a site by them (see
// boundedGroups). Without it, edges are paid only from the probe pool.
type Sizer interface {
	// SiteBytes returns the bytes of every block of the DAG under root,
	// each counted once. A root that is not published content is a
	// *RejectError.
	SiteBytes(ctx context.Context, root string) (int64, error)
}

// EdgeDirectory is the DNS router's view of the edges: their addresses,
// the epoch byte counters their heartbeats report, the bytes of the
// router's probes of them, and the demand its answers sent them.
type EdgeDirectory interface {
	Edges(ctx context.Context) ([]dnsrouteapi.EdgeInfo, error)
}

// Prober fetches an object from an edge and checks its bytes. It returns
// the body bytes it read (the edge bills them), and a *RejectError with
// ReasonWrongContent when the edge served bytes that do not match the
// CID, another error when it could not tell.
type Prober interface {
	Probe(ctx context.Context, edgeURL, c string) (int64, error)
}

// The witnesses billing runs with (package witness) implement these.
var (
	_ Content         = (*witness.OriginContent)(nil)
	_ ContentAt       = (*witness.OriginContent)(nil)
	_ ShardPlacements = (*witness.OriginContent)(nil)
	_ ShardIndex      = (*witness.OriginContent)(nil)
	_ OriginKey       = (*witness.OriginContent)(nil)
	_ Sizer           = (*witness.OriginContent)(nil)
	_ SiteNames       = (*witness.OriginContent)(nil)
	_ EdgeDirectory   = (*witness.DNSDirectory)(nil)
	_ Prober          = witness.HTTPProber{}
)
