package originapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// MaxMissingQuery is the most CIDs one MissingRequest may ask about.
const MaxMissingQuery = 10000

// MissingRequest asks an origin which of the listed blocks it lacks.
// It is the body of POST /api/v1/blocks/missing.
type MissingRequest struct {
	// CIDs are the blocks to ask about, as strings; at most MaxMissingQuery.
	CIDs []string `json:"cids"`
}

// MissingResponse lists the blocks of a MissingRequest the origin lacks, in
// request order.
type MissingResponse struct {
	Missing []string `json:"missing"`
}

// UploadResult is the answer to a CAR upload (POST /api/v1/car).
type UploadResult struct {
	// Roots are the CAR's roots, now complete DAGs at the origin.
	Roots []string `json:"roots"`
	// Blocks is the number of blocks the CAR held.
	Blocks int `json:"blocks"`
	// NewBlocks is how many of them the origin did not have before.
	NewBlocks int `json:"new_blocks"`
	// Bytes is the total size of the CAR's blocks.
	Bytes int64 `json:"bytes"`
	// Publisher is the key that signed the upload.
	Publisher string `json:"publisher"`
	// NewBytes is the size of the new blocks: what the upload was charged.
	NewBytes int64 `json:"new_bytes"`
	// UsedBytes is the publisher's usage after the upload.
	UsedBytes int64 `json:"used_bytes"`
	// QuotaBytes is the publisher's quota; 0: unlimited.
	QuotaBytes int64 `json:"quota_bytes"`
	// Striped says every root is striped onto the storage peers: the
	// upload no longer lives on the origin alone. False when the origin
	// does not stripe, or striping did not finish within the origin's
	// wait (it goes on in the background; StripeError says why if an
	// attempt failed).
	Striped     bool   `json:"striped"`
	StripeError string `json:"stripe_error,omitempty"`
}

// PublisherUsage is what a publisher has stored at the origin, the answer
// to GET /api/v1/publishers/{peer}.
type PublisherUsage struct {
	// Publisher is the publisher's key (peer ID).
	Publisher string `json:"publisher"`
	// UsedBytes is the size of the blocks its uploads newly stored; blocks
	// the origin already held are not counted.
	UsedBytes int64 `json:"used_bytes"`
	// QuotaBytes is how many bytes it may store; 0: unlimited.
	QuotaBytes int64 `json:"quota_bytes"`
	// Uploads counts its accepted uploads.
	Uploads int64 `json:"uploads"`
	// Roots counts the distinct roots it uploaded.
	Roots int64 `json:"roots"`
	// LastUpload is when its last upload was accepted; absent if none was.
	LastUpload *time.Time `json:"last_upload,omitempty"`
	// Domain is the domain the origin's sites are served under (NAME.DOMAIN,
	// ROOT.ipfs.DOMAIN), so a publisher can print their URLs; in the
	// answer to the check (GET /api/v1/publishers/{peer}/check) only.
	Domain string `json:"domain,omitempty"`
	// Billing is the URL of the billing service whose funds the origin
	// checks, where a publisher links its keys to its account; absent
	// when the origin checks none. In the answer to the check only.
	Billing string `json:"billing,omitempty"`
}

// NameClaim is the body of PUT /api/v1/names/{name}: an IPNS record that
// moves (or first claims) a human name. The record must carry the human
// name in its signed metadata under RecordNameKey.
type NameClaim struct {
	// IPNS is the IPNS name (k51…) the record is for.
	IPNS string `json:"ipns"`
	// Record is the marshalled IPNS record (base64 in JSON).
	Record []byte `json:"record"`
}

// RecordNameKey is the IPNS record metadata key that holds the human name a
// record publishes. Being inside the signed data, it proves that the key
// holder meant this record for this name.
const RecordNameKey = "topcdn-name"

// NameInfo describes a human name and the record it currently points by.
type NameInfo struct {
	// Name is the human name, e.g. "blog".
	Name string `json:"name"`
	// IPNS is the IPNS name (k51…) the human name is bound to.
	IPNS string `json:"ipns"`
	// Value is the record's value, e.g. /ipfs/bafy….
	Value string `json:"value"`
	// CID is the root CID the value names.
	CID string `json:"cid"`
	// Sequence is the record's sequence number.
	Sequence uint64 `json:"sequence"`
	// Validity is when the record expires (its EOL).
	Validity time.Time `json:"validity"`
	// TTLSeconds is how long readers may cache the record.
	TTLSeconds int64 `json:"ttl_seconds"`
	// Updated is when the origin accepted the record.
	Updated time.Time `json:"updated"`
}

// ErrorResponse is the JSON body of every API error.
type ErrorResponse struct {
	Error string `json:"error"`
}

// OriginIDsTTL is how long a client keeps the origin IDs it learned from
// the origins' /healthz before asking again: an origin key added to the
// set (a rotation, see origin/README.md) reaches every client within it.
// While no origin answers, the IDs learned last stay in use.
const OriginIDsTTL = 5 * time.Minute

// Health is what a client reads of an origin's answer to GET /healthz.
type Health struct {
	// Status is "ok".
	Status string `json:"status"`
	// PeerID is the answering origin's.
	PeerID string `json:"peer_id"`
	// OriginIDs are the peer IDs of the network's origins, each of which
	// signs with its own key: the set verifiers pin. An origin that
	// predates several origins lists none.
	OriginIDs []string `json:"origin_ids,omitempty"`
}

// IDs returns the origins' peer IDs: OriginIDs, or PeerID alone when
// that is empty. It refuses an ID that does not decode.
func (h *Health) IDs() ([]peer.ID, error) {
	strs := h.OriginIDs
	if len(strs) == 0 {
		strs = []string{h.PeerID}
	}
	ids := make([]peer.ID, 0, len(strs))
	for _, s := range strs {
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("origin ID %q: %w", s, err)
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// FetchOriginIDs asks the origins of pool for the network's origin IDs
// (GET /healthz; see Health.IDs), failing over as pool does.
func FetchOriginIDs(ctx context.Context, pool *Pool, client *http.Client) ([]peer.ID, error) {
	var ids []peer.ID
	err := pool.Do(ctx, func(ctx context.Context, base string) error {
		var h Health
		if err := httpkit.GetJSON(ctx, client, base+"/healthz", 64<<10, &h); err != nil {
			return err
		}
		var err error
		ids, err = h.IDs()
		if err != nil {
			return fmt.Errorf("GET %s/healthz: %w", base, err)
		}
		return nil
	})
	return ids, err
}
