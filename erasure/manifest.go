package erasure

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
)

// TypeManifest is the envelope type of a signed Manifest.
const TypeManifest = "topcdn/erasure/manifest/v1"

// Limits a Manifest must respect to validate.
const (
	MinChunkSize = 512
	MaxChunkSize = 16 << 20
	MaxSegment   = 1 << 30
)

// Manifest says where a publish's blocks live: the segments they are
// packed in, each segment's shards (peer, content ID, chunk hashes), and a
// block index. The origin signs it; readers verify it before use.
type Manifest struct {
	// Root is the CID of the published DAG.
	Root string `json:"root"`
	// Version increases whenever the origin re-signs the manifest (after a
	// repair moves shards).
	Version uint64 `json:"version"`
	// Created is when this version was signed.
	Created time.Time `json:"created"`
	// DataShards (k) and ParityShards (m) shape every segment.
	DataShards   int `json:"data_shards"`
	ParityShards int `json:"parity_shards"`
	// ChunkSize is the size of the chunks whose hashes each Shard lists.
	ChunkSize int `json:"chunk_size"`
	// Segments are the segments holding the publish's blocks.
	Segments []Segment `json:"segments"`
	// Blocks locates every block of the DAG.
	Blocks []BlockRef `json:"blocks"`
}

// Segment is one Reed-Solomon codeword: k data shards of ShardSize bytes
// (the segment, zero padded) and m parity shards.
type Segment struct {
	// Length is the segment's size before padding.
	Length int64 `json:"length"`
	// ShardSize is ceil(Length / k).
	ShardSize int64 `json:"shard_size"`
	// Shards are the k+m shards in code order: data first, then parity.
	Shards []Shard `json:"shards"`
}

// Shard is one shard of a segment and where it lives.
type Shard struct {
	// ID is the shard's content ID (storageapi.ShardID).
	ID string `json:"id"`
	// Peer is the peer ID of the storage peer holding it.
	Peer string `json:"peer"`
	// Chunks are the sha2-256 hashes of the shard's ChunkSize pieces,
	// concatenated.
	Chunks []byte `json:"chunks"`
}

// BlockRef locates a block: Length bytes at Offset in segment Segment.
type BlockRef struct {
	CID     string `json:"cid"`
	Segment int    `json:"segment"`
	Offset  int64  `json:"offset"`
	Length  int64  `json:"length"`
}

// Sign signs the manifest with the origin's key.
func (m *Manifest) Sign(k *identity.Key) (*identity.Envelope, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return k.Sign(TypeManifest, m)
}

// Size is the bytes of the publish's blocks as striped: the sum of its
// segments' lengths, before padding and parity.
func (m *Manifest) Size() int64 {
	var n int64
	for _, s := range m.Segments {
		n += s.Length
	}
	return n
}

// OpenManifest verifies that env is a manifest signed by origin and that it
// is well formed, and returns it.
func OpenManifest(env *identity.Envelope, origin peer.ID) (*Manifest, error) {
	var m Manifest
	signer, err := env.Open(TypeManifest, &m)
	if err != nil {
		return nil, fmt.Errorf("erasure: manifest: %w", err)
	}
	if signer != origin {
		return nil, fmt.Errorf("erasure: manifest signed by %s, not the origin %s", signer, origin)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest's internal consistency: shapes, sizes,
// IDs, chunk hash counts and that every block lies inside its segment.
func (m *Manifest) Validate() error {
	if err := checkShape(m.DataShards, m.ParityShards); err != nil {
		return fmt.Errorf("erasure: manifest: %w", err)
	}
	if _, err := cid.Decode(m.Root); err != nil {
		return fmt.Errorf("erasure: manifest root %q: %w", m.Root, err)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		return fmt.Errorf("erasure: manifest chunk size %d outside [%d, %d]", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	k, n := int64(m.DataShards), m.DataShards+m.ParityShards
	for si, seg := range m.Segments {
		if seg.Length <= 0 || seg.Length > MaxSegment {
			return fmt.Errorf("erasure: manifest segment %d: length %d", si, seg.Length)
		}
		if want := (seg.Length + k - 1) / k; seg.ShardSize != want {
			return fmt.Errorf("erasure: manifest segment %d: shard size %d, want %d", si, seg.ShardSize, want)
		}
		if len(seg.Shards) != n {
			return fmt.Errorf("erasure: manifest segment %d: %d shards, want %d", si, len(seg.Shards), n)
		}
		chunks := (seg.ShardSize + int64(m.ChunkSize) - 1) / int64(m.ChunkSize)
		peers := map[string]bool{}
		for i, sh := range seg.Shards {
			if _, err := storageapi.ParseShardID(sh.ID); err != nil {
				return fmt.Errorf("erasure: manifest segment %d shard %d: %w", si, i, err)
			}
			if _, err := peer.Decode(sh.Peer); err != nil {
				return fmt.Errorf("erasure: manifest segment %d shard %d peer %q: %w", si, i, sh.Peer, err)
			}
			if peers[sh.Peer] {
				return fmt.Errorf("erasure: manifest segment %d: peer %s holds two shards", si, sh.Peer)
			}
			peers[sh.Peer] = true
			if int64(len(sh.Chunks)) != chunks*sha256.Size {
				return fmt.Errorf("erasure: manifest segment %d shard %d: %d bytes of chunk hashes, want %d", si, i, len(sh.Chunks), chunks*sha256.Size)
			}
		}
	}
	for i, b := range m.Blocks {
		if _, err := cid.Decode(b.CID); err != nil {
			return fmt.Errorf("erasure: manifest block %d: %w", i, err)
		}
		if b.Segment < 0 || b.Segment >= len(m.Segments) {
			return fmt.Errorf("erasure: manifest block %s: segment %d out of range", b.CID, b.Segment)
		}
		if b.Offset < 0 || b.Length < 0 || b.Length > dag.MaxBlockSize || b.Offset > m.Segments[b.Segment].Length-b.Length {
			return fmt.Errorf("erasure: manifest block %s: [%d, +%d) outside segment %d", b.CID, b.Offset, b.Length, b.Segment)
		}
	}
	return nil
}
