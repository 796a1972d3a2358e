package caddymodule

import (
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/topcdn/topcdn/edge"
)

// disks shares one edge.DiskCache per directory among the handlers of
// every loaded config. On a reload Caddy provisions the new config's
// handlers before it cleans up the old ones, and a directory must not be
// opened twice: a second open would index it apart from the first, remove
// the first's files in flight as strays, and let the two bounds drift.
var disks = caddy.NewUsagePool()

// sharedDisk is a pooled DiskCache, closed when its last handler is
// cleaned up.
type sharedDisk struct{ *edge.DiskCache }

// Destruct closes the cache.
func (d sharedDisk) Destruct() error { return d.Close() }

// openDisk returns the disk cache in dir, opening it unless a loaded
// config has it open already, in which case its bound becomes maxBytes.
// The returned key is what releaseDisk takes.
func openDisk(dir string, maxBytes int64) (*edge.DiskCache, string, error) {
	key, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fmt.Errorf("topcdn: disk cache %q: %w", dir, err)
	}
	v, loaded, err := disks.LoadOrNew(key, func() (caddy.Destructor, error) {
		d, err := edge.OpenDiskCache(key, maxBytes)
		if err != nil {
			return nil, err
		}
		return sharedDisk{d}, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("topcdn: %w", err)
	}
	d := v.(sharedDisk).DiskCache
	if loaded {
		d.SetMaxBytes(maxBytes)
	}
	return d, key, nil
}

// releaseDisk lets go of a handler's use of the disk cache at key, closing
// it if no other handler uses it.
func releaseDisk(key string) error {
	_, err := disks.Delete(key)
	return err
}
