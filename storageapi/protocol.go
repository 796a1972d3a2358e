package storageapi

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"lukechampine.com/blake3"
)

// Envelope types of the storage protocol.
const (
	TypeWriteOrder  = "topcdn/storage/write-order/v1"
	TypeReadOrder   = "topcdn/storage/read-order/v1"
	TypeDeleteOrder = "topcdn/storage/delete-order/v1"
	TypeAudit       = "topcdn/storage/audit/v1"
	TypeHeartbeat   = "topcdn/storage/heartbeat/v1"
)

// OrderHeader is the HTTP header carrying an encoded order envelope.
const OrderHeader = "X-Topcdn-Order"

// MaxOrderLifetime is the longest an order may be valid for.
const MaxOrderLifetime = 24 * time.Hour

// WriteOrder authorizes one peer to store one shard. Signed by the origin.
type WriteOrder struct {
	// Peer is the storage peer the order is for.
	Peer string `json:"peer"`
	// Shard is the shard's ID (see ShardID).
	Shard string `json:"shard"`
	// Size is the shard's exact size in bytes.
	Size int64 `json:"size"`
	// Expires bounds when the order may be used.
	Expires time.Time `json:"expires"`
}

// ReadOrder asks a peer for bytes [Offset, Offset+Length) of a shard.
// Signed by the reader, who vouches with it for the bytes it was served.
type ReadOrder struct {
	Peer    string    `json:"peer"`
	Shard   string    `json:"shard"`
	Offset  int64     `json:"offset"`
	Length  int64     `json:"length"`
	Expires time.Time `json:"expires"`
	// Serial makes each order unique; a peer serves an order once.
	Serial string `json:"serial"`
}

// DeleteOrder authorizes a peer to drop a shard. Signed by the origin.
type DeleteOrder struct {
	Peer    string    `json:"peer"`
	Shard   string    `json:"shard"`
	Expires time.Time `json:"expires"`
}

// Audit challenges a peer to prove it holds bytes [Offset, Offset+Length)
// of a shard: it must answer with those bytes and AuditProof(Nonce, bytes).
// Signed by the origin.
type Audit struct {
	Peer    string    `json:"peer"`
	Shard   string    `json:"shard"`
	Offset  int64     `json:"offset"`
	Length  int64     `json:"length"`
	Nonce   []byte    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// AuditAnswer is a peer's answer to an Audit.
type AuditAnswer struct {
	Data  []byte `json:"data"`
	Proof []byte `json:"proof"`
}

// AuditProof binds an audit answer to its challenge's nonce.
func AuditProof(nonce, data []byte) []byte {
	h := sha256.New()
	h.Write(nonce)
	h.Write(data)
	return h.Sum(nil)
}

// Location is where a peer says it is.
type Location struct {
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	Region string  `json:"region,omitempty"` // failure domain, e.g. "eu-fra"
}

// DefaultHeartbeatInterval is the time between two heartbeats of a peer,
// and what the origin expects, when neither is configured otherwise
// (storage.Config and origin.Config HeartbeatInterval).
const DefaultHeartbeatInterval = 10 * time.Second

// Heartbeat is a peer's periodic, signed announcement of itself.
type Heartbeat struct {
	Peer     string    `json:"peer"`
	Addr     string    `json:"addr"` // base URL, e.g. http://127.0.0.1:9001
	Capacity int64     `json:"capacity"`
	Free     int64     `json:"free"`
	Shards   int       `json:"shards"`
	Location *Location `json:"location,omitempty"`
	Time     time.Time `json:"time"`
}

// ShardID names a shard by its content: a CIDv1 (raw) of its bytes with a
// 32-byte BLAKE3 multihash. Shards are larger than IPFS blocks and are
// never served as such. BLAKE3 hashes a whole shard several times faster
// than sha2-256, and every shard is hashed at least twice (by the origin
// and by the peer storing it).
func ShardID(data []byte) string {
	sum := blake3.Sum256(data)
	h, _ := mh.Encode(sum[:], mh.BLAKE3)
	return cid.NewCidV1(cid.Raw, h).String()
}

// NewShardHash returns the hash function of shard IDs.
func NewShardHash() hash.Hash { return blake3.New(32, nil) }

// ParseShardID checks that s is a shard ID and returns it normalized.
func ParseShardID(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("shard ID %q: %w", s, err)
	}
	if c.Version() != 1 || c.Type() != cid.Raw || c.Prefix().MhType != mh.BLAKE3 || c.Prefix().MhLength != 32 {
		return cid.Undef, fmt.Errorf("shard ID %q: want a CIDv1 raw with a 32-byte blake3 multihash", s)
	}
	return c, nil
}

// ErrExpired is returned for orders past (or too far before) their expiry.
var ErrExpired = errors.New("order expired")

// CheckExpiry accepts an expiry in (now, now+MaxOrderLifetime].
func CheckExpiry(expires, now time.Time) error {
	if !expires.After(now) {
		return fmt.Errorf("%w at %s", ErrExpired, expires.Format(time.RFC3339))
	}
	if expires.Sub(now) > MaxOrderLifetime {
		return fmt.Errorf("order valid until %s: more than %s ahead", expires.Format(time.RFC3339), MaxOrderLifetime)
	}
	return nil
}

// MaxReadLength bounds the bytes one ReadOrder may ask for.
const MaxReadLength = 16 << 20

// MaxAuditLength bounds the bytes one Audit may ask for.
const MaxAuditLength = 1 << 20

// MaxNonceSize bounds an Audit's nonce.
const MaxNonceSize = 64

// MaxSerialSize bounds a ReadOrder's serial.
const MaxSerialSize = 128

// ShardInfo describes one shard a peer holds, as listed by GET /shards.
type ShardInfo struct {
	// ID is the shard's ID (see ShardID).
	ID string `json:"id"`
	// Size is the shard's size in bytes.
	Size int64 `json:"size"`
}

// Status is a peer's answer to GET /status.
type Status struct {
	// PeerID is the peer's identity.
	PeerID string `json:"peer_id"`
	// Capacity is how many bytes the peer lends.
	Capacity int64 `json:"capacity"`
	// Used is how many bytes its shards take.
	Used int64 `json:"used"`
	// Free is how many more bytes of shards it accepts now.
	Free int64 `json:"free"`
	// Shards is how many shards it holds.
	Shards int `json:"shards"`
}

// ErrorResponse is the JSON body of every error answer of a peer.
type ErrorResponse struct {
	Error string `json:"error"`
}
