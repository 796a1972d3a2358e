package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
)

// keystore is a publisher's directory of keys, as kubo's keystore holds
// one key per name: DIR/account.key is the account that pays (deposits go
// to it), DIR/sites/NAME.key publishes the site NAME (one key publishes one
// name) and is linked to the account at billing. The directory is 0700;
// keys are written by identity.Save (0600, never overwritten).
type keystore struct{ dir string }

// keystoreHelp says where the keystore is by default, for flag help.
const keystoreHelp = "publisher keystore: DIR/account.key, DIR/sites/NAME.key (default $TOPCDN_KEYSTORE, else $XDG_CONFIG_HOME/topcdn/keys, else ~/.config/topcdn/keys)"

// openKeystore returns the keystore at dir, or where the environment puts
// it when dir is "": $TOPCDN_KEYSTORE, else $XDG_CONFIG_HOME/topcdn/keys,
// else ~/.config/topcdn/keys. Nothing is created until a key is.
func openKeystore(dir string) (keystore, error) {
	if dir == "" {
		dir = os.Getenv("TOPCDN_KEYSTORE")
	}
	if dir == "" {
		if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
			dir = filepath.Join(x, "topcdn", "keys")
		}
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return keystore{}, fmt.Errorf("keystore: no --keystore, $TOPCDN_KEYSTORE or $XDG_CONFIG_HOME, and %w", err)
		}
		dir = filepath.Join(home, ".config", "topcdn", "keys")
	}
	return keystore{dir: dir}, nil
}

// accountPath is the account key's file.
func (ks keystore) accountPath() string { return filepath.Join(ks.dir, "account.key") }

// sitePath is the file of the key that publishes name.
func (ks keystore) sitePath(name string) string {
	return filepath.Join(ks.dir, "sites", name+".key")
}

// account loads the account key, creating it if there is none; created
// says it was.
func (ks keystore) account() (k *identity.Key, created bool, err error) {
	return ks.loadOrCreate(ks.accountPath())
}

// site loads the key of the site name, creating it if there is none. The
// name must be a valid human name (originapi.ValidateName), which makes it
// safe as a file name.
func (ks keystore) site(name string) (k *identity.Key, created bool, err error) {
	if err := originapi.ValidateName(name); err != nil {
		return nil, false, err
	}
	return ks.loadOrCreate(ks.sitePath(name))
}

// existingSite loads the key of the site name, which must exist.
func (ks keystore) existingSite(name string) (*identity.Key, error) {
	if err := originapi.ValidateName(name); err != nil {
		return nil, err
	}
	k, err := identity.Load(ks.sitePath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keystore %s holds no key for %s (%s): give --keystore DIR or --key FILE", ks.dir, name, ks.sitePath(name))
	}
	return k, err
}

// loadOrCreate loads the key at path, or generates and saves one there,
// making its directories 0700. A key saved meanwhile by another process
// is loaded, not replaced.
func (ks keystore) loadOrCreate(path string) (*identity.Key, bool, error) {
	k, err := identity.Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	for _, d := range []string{ks.dir, filepath.Dir(path)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, false, fmt.Errorf("keystore: %w", err)
		}
	}
	if k, err = identity.Generate(nil); err != nil {
		return nil, false, err
	}
	if err := k.Save(path); errors.Is(err, fs.ErrExist) {
		k, err := identity.Load(path)
		return k, false, err
	} else if err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// siteKey is one site key of a keystore.
type siteKey struct {
	name string
	key  *identity.Key
}

// sites loads every site key of the keystore (DIR/sites/NAME.key), by
// name; none if there is no sites directory. A file whose name is not a
// valid site name is skipped.
func (ks keystore) sites() ([]siteKey, error) {
	entries, err := os.ReadDir(filepath.Join(ks.dir, "sites"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	var out []siteKey // ReadDir sorts by file name
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || e.IsDir() || originapi.ValidateName(name) != nil {
			continue
		}
		k, err := identity.Load(ks.sitePath(name))
		if err != nil {
			return nil, err
		}
		out = append(out, siteKey{name: name, key: k})
	}
	return out, nil
}

// existingAccount loads the account key, nil if the keystore has none.
func (ks keystore) existingAccount() (*identity.Key, error) {
	k, err := identity.Load(ks.accountPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return k, err
}
