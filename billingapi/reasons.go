package billingapi

import "fmt"

// Reason says why billing refused a batch, a record, a read order or a
// claim. Reasons are stable strings: they label metrics and appear in
// statements.
type Reason string

// Reasons of rejection. README.md explains each.
const (
	ReasonMalformed     Reason = "malformed"      // not a well-formed message
	ReasonSignature     Reason = "bad_signature"  // the signature does not verify
	ReasonEpochLength   Reason = "epoch_length"   // the batch's epoch length is not billing's
	ReasonEpochFuture   Reason = "epoch_future"   // the epoch has not started yet
	ReasonEpochStale    Reason = "epoch_stale"    // the epoch is older than the accepted window
	ReasonEpochSettled  Reason = "epoch_settled"  // the epoch is settled already
	ReasonReplayBatch   Reason = "replay_batch"   // another batch holds this (edge, epoch) or sequence
	ReasonReplayRecord  Reason = "replay_record"  // the record serial was reported before
	ReasonRecordTime    Reason = "record_time"    // the record's time lies outside its epoch
	ReasonStatus        Reason = "status"         // bytes claimed for a non-2xx response
	ReasonUnpublished   Reason = "unpublished"    // the name or CID is not published content
	ReasonInflated      Reason = "inflated"       // more bytes than the object has
	ReasonSelfDealing   Reason = "self_dealing"   // the publisher's own edge, or its own requests
	ReasonWrongContent  Reason = "wrong_content"  // the prober caught the edge serving wrong bytes
	ReasonOrderPeer     Reason = "order_peer"     // the read order is for another storage peer
	ReasonUnknownReader Reason = "unknown_reader" // the read order's signer is no known edge
	ReasonReplayOrder   Reason = "replay_order"   // the read order was claimed before
	ReasonUnknownShard  Reason = "unknown_shard"  // the shard is in no published manifest
	ReasonOrderStale    Reason = "order_stale"    // the read order expired before the accepted window

	// ReasonNoUpstreamReads: an edge's records of striped content that no
	// read order it signed for the content's shards backs, while storage
	// peers claim other edges' reads of it.
	ReasonNoUpstreamReads Reason = "no_upstream_reads"

	// ReasonEdgeClient: the request came from an address of another edge
	// (a proxy fetching through this one): the client bytes are the other
	// edge's to claim, within its own demand.
	ReasonEdgeClient Reason = "edge_client"
	// ReasonNotAdmitted: the edge is not admitted by the billing operator
	// (or was revoked before the epoch).
	ReasonNotAdmitted Reason = "not_admitted"
	// ReasonNoCounter: the DNS router holds no byte counter of the edge's
	// heartbeats for the epoch (none sent, or zero): nothing bounds the
	// edge's claim, so nothing is paid.
	ReasonNoCounter Reason = "no_counter"
	// ReasonOverCounter: the edge claims more bytes for the epoch than
	// its own heartbeats' epoch counter said it served.
	ReasonOverCounter Reason = "over_counter"
	// ReasonOverDemand: the edge claims more bytes of a site in the epoch
	// than the clients the DNS router sent it (and the probes it served)
	// could have fetched.
	ReasonOverDemand Reason = "over_demand"
	// ReasonNoDemandEvidence: the DNS router could not be read for the
	// epoch within the demand wait: nothing bounds the edge's claim.
	ReasonNoDemandEvidence Reason = "no_demand_evidence"
	// ReasonUnindexable: billing cannot index the content the record
	// names: the origin refuses its root's CAR (404, 410, 413, 422) or
	// the DAG exceeds the limits the origin stores DAGs within (depth,
	// links per block, blocks); at settlement, also a record whose
	// content could not be resolved for BackingWait (see
	// BatchResult.Deferred).
	ReasonUnindexable Reason = "unindexable"
)

// Reasons a storage peer's read order is refused: at ingest (placement,
// range, expiry) or at settlement (flags and byte bounds).
const (
	ReasonOrderPlacement Reason = "order_placement" // the origin never placed the shard on the claimer while the order was valid
	ReasonOrderRange     Reason = "order_range"     // the order reads beyond the shard's end
	ReasonOrderExpiry    Reason = "order_expiry"    // the order is valid for longer than a peer accepts (MaxOrderLifetime)
	ReasonPeerFlagged    Reason = "peer_flagged"    // the origin flagged the peer for that shard (bad bytes, refused audits)
	ReasonOverRead       Reason = "over_read"       // a reader's orders for a shard in an epoch beyond twice its size
	ReasonUpkeepRepeat   Reason = "upkeep_repeat"   // the origin's reads of a shard on a peer beyond its size in 24 h
)

// RejectError is a refusal with its reason: what billing's checks, and the
// witnesses billing asks for evidence, return for a claim that is false.
// Other errors mean billing could not tell.
type RejectError struct {
	Reason Reason
	Err    error
}

// Error returns the reason and what was refused.
func (e *RejectError) Error() string { return fmt.Sprintf("billing: %s: %v", e.Reason, e.Err) }

// Unwrap returns the underlying error.
func (e *RejectError) Unwrap() error { return e.Err }
