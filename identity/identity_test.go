package identity

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	k, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "publisher.key")
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %#o, want 0600", st.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID {
		t.Fatalf("loaded peer ID %s, want %s", got.ID, k.ID)
	}
	if !got.Private.Equals(k.Private) {
		t.Fatal("loaded key differs from saved key")
	}
	if err := k.Save(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Save over existing key: err = %v, want ErrExist", err)
	}
}

func TestLoadRejects(t *testing.T) {
	good, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	goodBytes, _ := good.Marshal()
	secp, _, err := crypto.GenerateSecp256k1Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	secpBytes, _ := crypto.MarshalPrivateKey(secp)

	tests := []struct {
		name    string
		data    []byte
		mode    os.FileMode
		wantErr error
	}{
		{name: "group readable", data: goodBytes, mode: 0o640, wantErr: ErrInsecurePermissions},
		{name: "world readable", data: goodBytes, mode: 0o644, wantErr: ErrInsecurePermissions},
		{name: "garbage", data: []byte("not a key at all"), mode: 0o600},
		{name: "empty", data: nil, mode: 0o600},
		{name: "truncated", data: goodBytes[:len(goodBytes)/2], mode: 0o600},
		{name: "too large", data: bytes.Repeat([]byte{1}, maxKeyFileSize+1), mode: 0o600},
		{name: "secp256k1", data: secpBytes, mode: 0o600, wantErr: ErrNotEd25519},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			k, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded with key %v, want error", k.ID)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if n := strings.Count(err.Error(), "identity:"); n != 1 {
				t.Fatalf("err = %q names the package %d times, want once", err, n)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("loading a directory succeeded")
	}
}

func TestLoadOrGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "origin.key")
	a, err := LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Fatalf("second LoadOrGenerate gave %s, want the saved %s", b.ID, a.ID)
	}
}
