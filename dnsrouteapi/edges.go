package dnsrouteapi

import "time"

// EdgeInfo describes an edge as GET /api/v1/edges lists it.
type EdgeInfo struct {
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
	// Verified are the addresses among Addrs at which the router's last
	// probe reached the edge with its own key: the ones it hands out.
	Verified []string `json:"verified,omitempty"`
	URL      string   `json:"url"`
	City     string   `json:"city,omitempty"`
	// HTTPSURL is the heartbeat's https_url, if it had one.
	HTTPSURL string   `json:"https_url,omitempty"`
	Country  string   `json:"country,omitempty"`
	Lat      *float64 `json:"lat,omitempty"`
	Lon      *float64 `json:"lon,omitempty"`
	Healthy  bool     `json:"healthy"`
	Load     float64  `json:"load"`
	Capacity float64  `json:"capacity"`
	// IntervalMS is the edge's heartbeat interval in milliseconds.
	IntervalMS int64 `json:"interval_ms"`
	// LastHeartbeat is when the router accepted the edge's last heartbeat.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// ProbeError says why the last probe failed, if it did.
	ProbeError string `json:"probe_error,omitempty"`
	// HTTPSError says why the last HTTPS probe (of HTTPSURL) failed, if
	// it did; the edge is then not handed out, and not Healthy.
	HTTPSError string `json:"https_error,omitempty"`
	// ContentError says why the edge's content is not vouched for: the
	// last content probe (a published root's raw block fetched through the
	// edge and checked against its CID) failed or caught it lying, or
	// billing did, or it was not probed yet. Empty after a good probe.
	ContentError string `json:"content_error,omitempty"`
	// Quarantine says why the edge is kept out of answers whatever its
	// health: it served bytes that do not match their CID, to the router's
	// content probe or to billing's prober. Empty when it is not.
	Quarantine string `json:"quarantine,omitempty"`
	// QuarantinedUntil is when the quarantine ends, if there is one.
	QuarantinedUntil *time.Time `json:"quarantined_until,omitempty"`
	// Answers is how many times this router handed the edge out.
	Answers uint64 `json:"answers"`
	// Requests, Bytes, CacheHits and CacheMisses are the edge's totals as
	// its last heartbeat reported them.
	Requests    uint64 `json:"requests"`
	Bytes       uint64 `json:"bytes"`
	CacheHits   uint64 `json:"cache_hits"`
	CacheMisses uint64 `json:"cache_misses"`
	// Epochs are the billing epochs the edge's heartbeats reported bytes
	// for, oldest first, the last MaxEpochs of them: per epoch the most
	// bytes any heartbeat said, and whether a heartbeat reported it closed
	// (PrevEpoch), after which the figure is the exact total of its
	// batches.
	Epochs []EpochBytes `json:"epochs,omitempty"`
	// Demand is what this router's answers could have brought the edge,
	// per billing epoch (the last MaxEpochs, oldest first) and site: the
	// distinct client units it handed the edge to (see the router's
	// README). Billing bounds what it pays the edge by it.
	Demand []EpochDemand `json:"demand,omitempty"`
}

// EpochDemand is the demand a router sent an edge in one billing epoch.
type EpochDemand struct {
	// Epoch is the epoch's start, Unix seconds.
	Epoch int64 `json:"epoch"`
	// Sites are the sites asked for, by key.
	Sites []SiteDemand `json:"sites"`
	// ProbeBytes is the body bytes of the router's own content probes of
	// the edge in the epoch: bytes the edge served (and bills) that no
	// client asked for.
	ProbeBytes uint64 `json:"probe_bytes,omitempty"`
}

// SiteDemand counts the client units a router handed an edge to for one
// site in one epoch.
type SiteDemand struct {
	// Site is "name:NAME" for NAME.ZONE, "cid:CID" for CID.ipfs.ZONE.
	Site string `json:"site"`
	// First counts the units the edge was handed to first in its address
	// family; Other those it was handed to in a later place.
	First uint32 `json:"first"`
	Other uint32 `json:"other"`
}

// MaxEpochs is how many billing epochs the router keeps per edge.
const MaxEpochs = 16

// EpochBytes is what an edge's heartbeats said it served in one billing
// epoch.
type EpochBytes struct {
	// Epoch is the epoch's start, Unix seconds.
	Epoch int64 `json:"epoch"`
	// Bytes is the highest byte count reported for it.
	Bytes uint64 `json:"bytes"`
	// Closed is true once a heartbeat reported the epoch closed.
	Closed bool `json:"closed"`
}
