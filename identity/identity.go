package identity

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxKeyFileSize bounds what LoadKey reads: a marshalled ed25519 key is 68
// bytes, so anything much larger is not a key file.
const maxKeyFileSize = 4 << 10

// ErrInsecurePermissions is returned by LoadKey when a key file can be read
// or written by users other than its owner.
var ErrInsecurePermissions = errors.New("key file is accessible by other users")

// ErrNotEd25519 is returned when a key file holds a libp2p key of another type.
var ErrNotEd25519 = errors.New("key is not ed25519")

// Key is a party's private key together with its peer ID.
type Key struct {
	// Private is the ed25519 private key.
	Private crypto.PrivKey
	// ID is the peer ID derived from the public key.
	ID peer.ID
}

// Generate returns a new random ed25519 key read from rand, or from
// crypto/rand when rand is nil.
func Generate(rand io.Reader) (*Key, error) {
	var (
		sk  crypto.PrivKey
		err error
	)
	if rand == nil {
		sk, _, err = crypto.GenerateEd25519Key(nil)
	} else {
		sk, _, err = crypto.GenerateEd25519Key(rand)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return FromPrivate(sk)
}

// FromPrivate wraps an ed25519 private key and derives its peer ID.
func FromPrivate(sk crypto.PrivKey) (*Key, error) {
	k, err := fromPrivate(sk)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return k, nil
}

// fromPrivate is FromPrivate with errors its callers prefix.
func fromPrivate(sk crypto.PrivKey) (*Key, error) {
	if sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w (got %s)", ErrNotEd25519, sk.Type())
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("derive peer ID: %w", err)
	}
	return &Key{Private: sk, ID: id}, nil
}

// Marshal returns the key in the libp2p key format.
func (k *Key) Marshal() ([]byte, error) {
	b, err := crypto.MarshalPrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal key: %w", err)
	}
	return b, nil
}

// Unmarshal parses a key in the libp2p key format. Only ed25519 keys are
// accepted.
func Unmarshal(b []byte) (*Key, error) {
	k, err := unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return k, nil
}

// unmarshal is Unmarshal with errors its callers prefix.
func unmarshal(b []byte) (*Key, error) {
	sk, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("malformed libp2p key: %w", err)
	}
	return fromPrivate(sk)
}

// Save writes the key to path with permissions 0600. It refuses to replace
// an existing file, so a key is never lost by accident. The file is written
// to a temporary name, synced and then renamed, so a crash leaves either no
// key or the whole key.
func (k *Key) Save(path string) error {
	b, err := k.Marshal()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("identity: save key: %s: %w", path, fs.ErrExist)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return fmt.Errorf("identity: save key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("identity: save key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("identity: save key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("identity: save key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("identity: save key: %w", err)
	}
	// Link, not rename: link fails if path appeared meanwhile.
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("identity: save key: %w", err)
	}
	return nil
}

// Load reads a key file written by Save (or by kubo's keystore). It fails if
// the file is readable or writable by group or others, is not a regular
// file, is too large, or does not hold an ed25519 libp2p key.
func Load(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: load key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity: load key %s: %w: mode %#o, want 0600 (run chmod 600 %s)",
			path, ErrInsecurePermissions, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("identity: load key %s: file larger than %d bytes is not a key", path, maxKeyFileSize)
	}
	k, err := unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("identity: load key %s: %w", path, err)
	}
	return k, nil
}

// LoadOrGenerate loads the key at path, or generates and saves a new one
// when no file exists there. Services use it for their own key.
func LoadOrGenerate(path string) (*Key, error) {
	k, err := Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = Generate(nil)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := k.Save(path); err != nil {
		return nil, err
	}
	return k, nil
}
