package originapi

import (
	"time"

	"github.com/topcdn/topcdn/storageapi"
)

// PeerInfo is what the origin knows of a storage peer.
type PeerInfo struct {
	ID       string               `json:"id"`
	Addr     string               `json:"addr"`
	Capacity int64                `json:"capacity"`
	Free     int64                `json:"free"`
	Shards   int                  `json:"shards"`
	Location *storageapi.Location `json:"location,omitempty"`
	LastSeen time.Time            `json:"last_seen"`
	// Healthy is true while heartbeats arrive (within 3 intervals).
	Healthy bool `json:"healthy"`
	// Placed is how many shards the origin has placed on the peer.
	Placed int `json:"placed"`
	// AuditsOK and AuditsFailed count the peer's audit results.
	AuditsOK     int `json:"audits_ok"`
	AuditsFailed int `json:"audits_failed"`
	// Flags counts reads and audits that caught the peer misbehaving.
	Flags int `json:"flags"`
}

// SegmentHealth describes one segment's redundancy.
type SegmentHealth struct {
	Segment int64 `json:"segment"`
	Healthy int   `json:"healthy"`
	Shards  int   `json:"shards"`
	// Bad counts shards proven to hold wrong bytes (by reads or audits).
	Bad int `json:"bad"`
	// Lost counts shards on peers silent for longer than LostAfter.
	Lost int `json:"lost"`
	// Needed is the repair threshold.
	Needed int `json:"needed"`
}

// StorageStatus is the answer of GET /api/v1/storage/status.
type StorageStatus struct {
	Peers       []PeerInfo      `json:"peers"`
	Segments    int             `json:"segments"`
	AtRisk      []SegmentHealth `json:"at_risk"`
	PendingJobs int             `json:"pending_stripe_jobs"`
}
