package billingapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
)

// Envelope types of the billing protocol.
const (
	// TypeBatch is an edge's signed Batch.
	TypeBatch = "topcdn/billing/batch/v1"
	// TypeRecord is one Record signed alone (RecordClaim): the
	// per-record-signature baseline the batch format is measured against.
	TypeRecord = "topcdn/billing/record/v1"
	// TypeClaim is a storage peer's signed Claim.
	TypeClaim = "topcdn/billing/claim/v1"
	// TypeDeposit is a Deposit signed by the billing operator's key.
	TypeDeposit = "topcdn/billing/deposit/v1"
	// TypeAdmission is an Admission signed by the billing operator's key.
	TypeAdmission = "topcdn/billing/admission/v1"
)

// Limits of the wire formats.
const (
	// MaxBatchSize bounds an encoded batch or claim envelope. A Reporter
	// splits an epoch into parts by size as well as by count, so that its
	// batches stay under it whatever the records' text fields hold.
	MaxBatchSize = 64 << 20
	// MaxRecords bounds the records of one batch; an epoch with more is
	// reported in several parts.
	MaxRecords = 100_000
	// MaxParts bounds the parts of one epoch's report.
	MaxParts = 64
	// MaxClaimOrders bounds the read orders of one claim.
	MaxClaimOrders = 10000
	// ClientHashSize is the length of a Record's hashed client prefix.
	ClientHashSize = 16
	// SaltSize is the length of a batch's per-epoch salt.
	SaltSize = 16
	// MaxField bounds a text field of a message: a name, CID, URL, path
	// or nonce.
	MaxField = 256
)

// Record is one response an edge served.
type Record struct {
	// Serial is unique among all records of the edge, across epochs.
	Serial uint64 `json:"serial"`
	// Name is the human site name the request was for, or "".
	Name string `json:"name,omitempty"`
	// CID is the object served.
	CID string `json:"cid"`
	// Root is the root CID of the site the object belongs to, if known.
	Root string `json:"root,omitempty"`
	// Path is the request's URL path (no query), at most MaxField bytes
	// of valid UTF-8 (CutPath), or "". It is informational: billing
	// shows a site's top paths by it and pays nobody by it.
	Path string `json:"path,omitempty"`
	// Bytes is the body bytes sent.
	Bytes int64 `json:"bytes"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Time is when the response was served, in Unix milliseconds.
	Time int64 `json:"time"`
	// Client is ClientHash(salt, the client's /24 or /48 prefix).
	Client []byte `json:"client"`
}

// Batch is what an edge served in one epoch, signed by the edge key
// (envelope type TypeBatch).
type Batch struct {
	// Edge is the edge's peer ID; it must be the envelope's signer.
	Edge string `json:"edge"`
	// URL is the edge's public base URL, where the prober may fetch
	// /ipfs/{cid}; optional.
	URL string `json:"url,omitempty"`
	// Epoch is the epoch's start in Unix seconds, a multiple of
	// EpochSeconds.
	Epoch int64 `json:"epoch"`
	// EpochSeconds is the epoch length; it must be billing's.
	EpochSeconds int64 `json:"epoch_seconds"`
	// Part numbers the batches of one epoch, from 0: an epoch with more
	// than MaxRecords records is reported in several.
	Part int `json:"part"`
	// Seq is the edge's batch sequence number; never reused.
	Seq uint64 `json:"seq"`
	// Salt hashes the client prefixes of this epoch's records.
	Salt []byte `json:"salt"`
	// MerkleRoot is MerkleRoot(Records).
	MerkleRoot []byte `json:"merkle_root"`
	// Records are the responses served in the epoch, by serial.
	Records []Record `json:"records"`
}

// RecordClaim is one record signed alone (TypeRecord), the baseline format
// with one signature per record.
type RecordClaim struct {
	Edge         string `json:"edge"`
	Epoch        int64  `json:"epoch"`
	EpochSeconds int64  `json:"epoch_seconds"`
	Salt         []byte `json:"salt"`
	Record       Record `json:"record"`
}

// ClaimedOrder is one served read order as a storage peer keeps it: the
// row ID of its served_reads table and the order envelope exactly as the
// reader sent it (storageapi.OrderHeader encoding).
type ClaimedOrder struct {
	ID    int64  `json:"id"`
	Order string `json:"order"`
}

// Claim is a storage peer's claim for read orders it served, signed by the
// peer (envelope type TypeClaim).
type Claim struct {
	// Peer is the storage peer's ID; it must be the signer and the peer
	// every order names.
	Peer string `json:"peer"`
	// Nonce makes each claim unique (logging only).
	Nonce string `json:"nonce"`
	// Orders are the served orders.
	Orders []ClaimedOrder `json:"orders"`
}

// ClaimResult is billing's answer to a claim.
type ClaimResult struct {
	// Accepted counts the orders credited.
	Accepted int `json:"accepted"`
	// Rejected lists the orders refused for good, with their reasons.
	Rejected []OrderRejection `json:"rejected"`
	// Deferred lists the IDs of orders that cannot be judged yet (their
	// reader is not known yet); send them again later.
	Deferred []int64 `json:"deferred"`
	// Duplicates counts the orders this peer had claimed already: a claim
	// sent again after its answer was lost. Nothing more is credited, and
	// nothing is refused.
	Duplicates int `json:"duplicates,omitempty"`
}

// OrderRejection is one refused read order.
type OrderRejection struct {
	ID     int64  `json:"id"`
	Reason Reason `json:"reason"`
	Detail string `json:"detail"`
}

// Deposit credits a publisher's account; signed by the billing operator's
// key (TypeDeposit).
type Deposit struct {
	// Account is the publisher's peer ID.
	Account string `json:"account"`
	// Amount is in the token's smallest unit, above zero.
	Amount int64 `json:"amount"`
	// Nonce makes the deposit unique: a deposit resent with the same nonce
	// is applied once.
	Nonce string `json:"nonce"`
}

// Admission admits an edge to be paid, or revokes it; signed by the
// billing operator's key (TypeAdmission). Billing pays an edge only for
// epochs from the one it was admitted in until it is revoked, and reads
// of storage peers only for orders signed by admitted edges (or the
// origin).
type Admission struct {
	// Edge is the edge's peer ID.
	Edge string `json:"edge"`
	// Revoke revokes the edge's admission instead of granting it.
	Revoke bool `json:"revoke,omitempty"`
	// Nonce makes the admission unique: one resent with the same nonce is
	// applied once.
	Nonce string `json:"nonce"`
}

// ErrMalformed is returned by the decoders for input that is not a
// well-formed message.
var ErrMalformed = errors.New("malformed message")

// DecodeBatch parses an encoded batch envelope (JSON of an
// identity.Envelope), checks its signature and its structure, and returns
// the batch and its signer. Errors wrap ErrMalformed or
// identity.ErrBadSignature.
func DecodeBatch(b []byte) (*identity.Envelope, *Batch, peer.ID, error) {
	env, err := DecodeEnvelope(b)
	if err != nil {
		return nil, nil, "", err
	}
	batch, signer, err := OpenBatch(env)
	return env, batch, signer, err
}

// OpenBatch checks env's signature and the batch's structure.
func OpenBatch(env *identity.Envelope) (*Batch, peer.ID, error) {
	var batch Batch
	signer, err := env.Open(TypeBatch, &batch)
	if err != nil {
		if errors.Is(err, identity.ErrBadSignature) {
			return nil, "", fmt.Errorf("billing: batch: %w", err)
		}
		return nil, "", fmt.Errorf("billing: batch: %w: %w", ErrMalformed, err)
	}
	if err := batch.validate(signer); err != nil {
		return nil, signer, err
	}
	return &batch, signer, nil
}

// DecodeEnvelope decodes a billing message: a JSON identity.Envelope of at
// most MaxBatchSize bytes with no unknown fields. It does not verify the
// signature.
func DecodeEnvelope(b []byte) (*identity.Envelope, error) {
	if len(b) > MaxBatchSize {
		return nil, fmt.Errorf("billing: %w: envelope over %d bytes", ErrMalformed, MaxBatchSize)
	}
	var env identity.Envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("billing: %w: envelope: %w", ErrMalformed, err)
	}
	return &env, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("billing: %w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// validate checks what a batch must satisfy whatever the ledger's state.
func (b *Batch) validate(signer peer.ID) error {
	switch {
	case b.Edge != signer.String():
		return malformed("batch for edge %q signed by %s", b.Edge, signer)
	case b.EpochSeconds <= 0 || b.Epoch <= 0 || b.Epoch%b.EpochSeconds != 0:
		return malformed("epoch %d of %d s: want a positive multiple of the epoch length", b.Epoch, b.EpochSeconds)
	case b.Seq >= 1<<63:
		return malformed("sequence %d out of range", b.Seq)
	case b.Part < 0 || b.Part >= MaxParts:
		return malformed("part %d: want 0 to %d", b.Part, MaxParts-1)
	case len(b.Salt) != SaltSize:
		return malformed("salt of %d bytes, want %d", len(b.Salt), SaltSize)
	case len(b.URL) > MaxField:
		return malformed("url over %d bytes", MaxField)
	case len(b.Records) > MaxRecords:
		return malformed("%d records, at most %d", len(b.Records), MaxRecords)
	}
	for i := range b.Records {
		if err := b.Records[i].Validate(); err != nil {
			return fmt.Errorf("%w (record %d)", err, i)
		}
	}
	if !bytes.Equal(b.MerkleRoot, MerkleRoot(b.Records)) {
		return malformed("merkle root does not match the records")
	}
	return nil
}

// Validate checks a record's fields against their bounds.
func (r *Record) Validate() error {
	switch {
	case r.Serial >= 1<<63:
		return malformed("serial %d out of range", r.Serial)
	case r.Bytes < 0:
		return malformed("negative bytes %d", r.Bytes)
	case r.CID == "" || len(r.CID) > MaxField || len(r.Root) > MaxField || len(r.Name) > MaxField:
		return malformed("cid, root or name empty or over %d bytes", MaxField)
	case len(r.Path) > MaxField:
		return malformed("path over %d bytes", MaxField)
	case len(r.Client) != ClientHashSize:
		return malformed("client hash of %d bytes, want %d", len(r.Client), ClientHashSize)
	case r.Status < 100 || r.Status > 599:
		return malformed("status %d", r.Status)
	}
	return nil
}

// MerkleRoot returns the root of a binary SHA-256 Merkle tree over the
// records: leaves are H(0x00 || LeafBytes(record)), inner nodes H(0x01 ||
// left || right), an odd node is carried up unchanged. Zero records give
// H(0x00).
func MerkleRoot(recs []Record) []byte {
	if len(recs) == 0 {
		s := sha256.Sum256([]byte{0})
		return s[:]
	}
	level := make([][32]byte, len(recs))
	buf := make([]byte, 0, 256)
	for i := range recs {
		buf = append(buf[:0], 0)
		buf = recs[i].AppendLeaf(buf)
		level[i] = sha256.Sum256(buf)
	}
	var node [65]byte
	node[0] = 1
	for len(level) > 1 {
		next := level[:0:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 == len(level) {
				next = append(next, level[i])
				continue
			}
			copy(node[1:], level[i][:])
			copy(node[33:], level[i+1][:])
			next = append(next, sha256.Sum256(node[:]))
		}
		level = next
	}
	return level[0][:]
}

// AppendLeaf appends the record's Merkle leaf encoding to b: Serial,
// Bytes, Time (8 bytes each, big-endian), Status (2 bytes), then Client,
// Name, CID and Root, each as a 2-byte big-endian length and its bytes,
// then Path the same way when it is not empty: a record without a path
// has the leaf it had before paths were reported, so edges that send
// none and billing agree on the root whatever their versions.
func (r *Record) AppendLeaf(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, r.Serial)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Bytes))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Status))
	for _, f := range [][]byte{r.Client, []byte(r.Name), []byte(r.CID), []byte(r.Root)} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	if r.Path != "" {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Path)))
		b = append(b, r.Path...)
	}
	return b
}

// CutPath returns p as a Record carries it: invalid UTF-8 replaced by
// U+FFFD (a signed body must read back as it was written, and JSON
// cannot carry invalid UTF-8), then cut to at most MaxField bytes at a
// character boundary.
func CutPath(p string) string {
	p = strings.ToValidUTF8(p, "\uFFFD")
	if len(p) <= MaxField {
		return p
	}
	n := MaxField
	for n > 0 && !utf8.RuneStart(p[n]) {
		n--
	}
	return p[:n]
}
