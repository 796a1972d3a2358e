package originapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"

	"github.com/topcdn/topcdn/identity"
)

// TypeNameChanges is the envelope type of a page of the origin's stream of
// name changes, signed with the origin's key. The origin's signature
// vouches only for the order and completeness of the stream: every record
// and purge in it carries its own signature, by the name's key, which
// every reader checks.
const TypeNameChanges = "topcdn/origin/name-changes/v1"

// TypePurge is the envelope type of a Purge, signed with the key the name
// is bound to.
const TypePurge = "topcdn/purge/v1"

// Bounds of the name-change stream and of purges.
const (
	// MaxNameChangesPage is the most changes one page holds
	// (GET /api/v1/names/changes?limit=…); it is also the default.
	MaxNameChangesPage = 64
	// MaxNameChangesBytes bounds the record and purge bytes of one page,
	// so its envelope stays well under identity.MaxEnvelopeSize after the
	// JSON and base64 encodings (a page always holds at least one change).
	MaxNameChangesBytes = 256 << 10
	// MaxNameChangesWait is the longest a long-poll waits for a change
	// before it answers an empty page.
	MaxNameChangesWait = 30 * time.Second
	// PurgeSkew is how far a purge's time may be from the origin's clock.
	PurgeSkew = 5 * time.Minute
	// MaxPurgePaths is the most paths one purge names.
	MaxPurgePaths = 32
	// MaxPurgePathSize bounds one purge path.
	MaxPurgePathSize = 1024
	// MaxPurgeSize bounds an encoded purge envelope.
	MaxPurgeSize = 64 << 10
)

// Kinds of NameChange.
const (
	// ChangeRecord: the name's IPNS record changed (Record).
	ChangeRecord = "record"
	// ChangePurge: the name's publisher asked edges to drop cached answers
	// (Purge).
	ChangePurge = "purge"
)

// NameChanges is one page of the name-change stream, the body of the
// envelope GET /api/v1/names/changes?since=ID&wait=S answers
// (TypeNameChanges): the changes with IDs above Since, oldest first.
type NameChanges struct {
	// Since is the ID the page starts after.
	Since int64 `json:"since"`
	// To is the ID of the page's last change; Since if it has none (and
	// Last when Reset).
	To int64 `json:"to"`
	// Last is the ID of the stream's last change when the page was read: a
	// reader is up to date once To reaches it.
	Last int64 `json:"last"`
	// Reset says the origin no longer keeps the changes after Since: the
	// reader missed some, so it must drop every cached answer for a name
	// and go on from To.
	Reset bool `json:"reset,omitempty"`
	// Changes are the page's changes, by increasing ID.
	Changes []NameChange `json:"changes"`
}

// NameChange is one change of a human name: a new IPNS record, or a purge.
type NameChange struct {
	// ID is the change's position in the stream, from 1.
	ID int64 `json:"id"`
	// Kind is ChangeRecord or ChangePurge.
	Kind string `json:"kind"`
	// Name is the human name.
	Name string `json:"name"`
	// IPNS is the IPNS name (k51…) the human name is bound to.
	IPNS string `json:"ipns"`
	// Record is the IPNS record exactly as the origin stored it (record).
	Record []byte `json:"record,omitempty"`
	// Purge is the purge, signed by IPNS's key (purge).
	Purge *identity.Envelope `json:"purge,omitempty"`
	// At is when the origin took the change.
	At time.Time `json:"at"`
}

// Purge asks every edge to drop its cached answers for a name: all of
// them, or those of Paths. It is signed by the key the name is bound to
// (TypePurge) and posted to POST /api/v1/names/{name}/purge.
type Purge struct {
	// Name is the human name.
	Name string `json:"name"`
	// IPNS is the IPNS name of the signing key.
	IPNS string `json:"ipns"`
	// Paths are absolute URL paths under the site; one ending in "/"
	// covers everything under it. None means the whole site.
	Paths []string `json:"paths,omitempty"`
	// Time is when the purge was signed.
	Time time.Time `json:"time"`
	// Nonce makes the purge unique; the origin takes each once.
	Nonce string `json:"nonce"`
}

// SignPurge signs a purge of name (all of it when paths is empty) with
// key, the key the name is bound to.
func SignPurge(key *identity.Key, name string, paths []string) (*identity.Envelope, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("purge nonce: %w", err)
	}
	p := Purge{
		Name:  name,
		IPNS:  ipns.NameFromPeer(key.ID).String(),
		Paths: paths,
		Time:  time.Now().UTC().Truncate(time.Millisecond),
		Nonce: hex.EncodeToString(nonce),
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return key.Sign(TypePurge, p)
}

// ErrInvalidPurge is what Purge.Validate returns, wrapped.
var ErrInvalidPurge = errors.New("invalid purge")

// Validate checks the purge's fields against their bounds: a valid name, at
// most MaxPurgePaths absolute paths of at most MaxPurgePathSize bytes, none
// under /ipfs/ or /ipns/, and a nonce of 16 to 64 characters. It does not
// check the signature or the time.
func (p *Purge) Validate() error {
	if err := ValidateName(p.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPurge, err)
	}
	if len(p.Paths) > MaxPurgePaths {
		return fmt.Errorf("%w: %d paths, at most %d", ErrInvalidPurge, len(p.Paths), MaxPurgePaths)
	}
	for _, path := range p.Paths {
		switch {
		case len(path) > MaxPurgePathSize:
			return fmt.Errorf("%w: a path of %d bytes, at most %d", ErrInvalidPurge, len(path), MaxPurgePathSize)
		case !strings.HasPrefix(path, "/"):
			return fmt.Errorf("%w: path %q is not absolute", ErrInvalidPurge, path)
		case strings.HasPrefix(path, "/ipfs/"):
			return fmt.Errorf("%w: path %q: content under /ipfs/ never changes and needs no purge", ErrInvalidPurge, path)
		case strings.HasPrefix(path, "/ipns/"):
			return fmt.Errorf("%w: path %q: give the site's own path, without /ipns/NAME", ErrInvalidPurge, path)
		}
	}
	if n := len(p.Nonce); n < 16 || n > 64 {
		return fmt.Errorf("%w: nonce of %d characters, want 16 to 64", ErrInvalidPurge, n)
	}
	return nil
}

// OpenPurge opens a purge envelope: its signature, its fields
// (Purge.Validate), and that its signer's IPNS name is the one it names.
// It does not check the time, nor that the name is bound to the signer:
// the origin checks both when it takes the purge, and a reader of the
// stream checks the binding against the change.
func OpenPurge(env *identity.Envelope) (*Purge, error) {
	var p Purge
	signer, err := env.Open(TypePurge, &p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPurge, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if got := ipns.NameFromPeer(signer).String(); got != p.IPNS {
		return nil, fmt.Errorf("%w: signed by %s, whose IPNS name is %s, not %s", ErrInvalidPurge, signer, got, p.IPNS)
	}
	return &p, nil
}
