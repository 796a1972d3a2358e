package originapi

import "time"

// TypeBillingLog is the envelope type of a page of the origin's billing
// log, signed with the origin's key.
const TypeBillingLog = "topcdn/origin/billing-log/v1"

// MaxBillingLogPage is the most events one page of the billing log holds
// (GET /api/v1/billing/log?limit=…); it is also the default.
const MaxBillingLogPage = 10000

// Kinds of BillingEvent.
const (
	// EventUpload: a publisher uploaded a root (Root, Publisher). Written
	// for every new (root, publisher) pair, also when another publisher
	// uploaded the root first.
	EventUpload = "upload"
	// EventName: a human name moved to a root (Name, IPNS, Publisher =
	// the IPNS key's peer ID, Root, Seq, TTLSeconds).
	EventName = "name"
	// EventPlace: a shard of a new segment was put on a storage peer
	// (Shard, Peer, Segment, Size = the shard's bytes, Root = the root
	// whose striping made the segment).
	EventPlace = "place"
	// EventMove: a repair moved a shard to another storage peer (Shard,
	// Peer = the new peer, Segment, Size).
	EventMove = "move"
	// EventFlag: a storage peer was caught misbehaving for a shard
	// (Peer, Shard, Reason).
	EventFlag = "flag"
)

// BillingEvent is one fact of the origin's billing log: what billing needs
// to know about content (who uploaded it, where names pointed) and about
// the storage peers holding it (placements, moves, flags). Events are
// appended in the transaction that makes the change, never edited; IDs
// increase.
type BillingEvent struct {
	// ID is the event's position in the log, from 1.
	ID int64 `json:"id"`
	// Kind is one of EventUpload, EventName, EventPlace, EventMove,
	// EventFlag.
	Kind string `json:"kind"`
	// Root is a root CID (upload, name, place).
	Root string `json:"root,omitempty"`
	// Publisher is a publisher's peer ID (upload: the uploader; name: the
	// IPNS key's peer).
	Publisher string `json:"publisher,omitempty"`
	// Name is the human name (name).
	Name string `json:"name,omitempty"`
	// IPNS is the IPNS name (k51…) the human name is bound to (name).
	IPNS string `json:"ipns,omitempty"`
	// Seq is the IPNS record's sequence number (name).
	Seq uint64 `json:"seq,omitempty"`
	// TTLSeconds is how long readers may cache the IPNS record (name).
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	// Shard is a shard ID (place, move, flag).
	Shard string `json:"shard,omitempty"`
	// Peer is a storage peer's ID (place, move: where the shard is now;
	// flag: the peer caught).
	Peer string `json:"peer,omitempty"`
	// Segment is the shard's segment (place, move).
	Segment int64 `json:"segment,omitempty"`
	// Size is the shard's size in bytes (place, move).
	Size int64 `json:"size,omitempty"`
	// Reason says why a peer was flagged (flag): bad-bytes,
	// refused-audits, ….
	Reason string `json:"reason,omitempty"`
	// At is when the origin made the change.
	At time.Time `json:"at"`
}

// BillingLog is one page of the billing log, the body of the envelope
// GET /api/v1/billing/log?since=ID&limit=N answers (TypeBillingLog):
// the events with IDs above Since, oldest first, at most the limit.
type BillingLog struct {
	// Since is the ID the page starts after.
	Since int64 `json:"since"`
	// To is the ID of the page's last event; Since if it has none.
	To int64 `json:"to"`
	// Last is the ID of the log's last event when the page was read: a
	// reader is up to date once To reaches it.
	Last int64 `json:"last"`
	// Events are the page's events, by increasing ID.
	Events []BillingEvent `json:"events"`
}
