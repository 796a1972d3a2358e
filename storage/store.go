package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// store keeps shards as files, dir/<last two characters of the ID>/<ID>,
// and accounts for the capacity they take. A shard file appears under its
// name only whole, verified and synced: it is written to a temp file in
// tmpDir, hashed, fsynced, renamed into place, and the directory fsynced.
type store struct {
	dir      string // DataDir/shards
	tmpDir   string // DataDir/tmp, emptied at open
	capacity int64
	log      *zap.Logger

	mu       sync.Mutex
	shards   map[string]int64 // shard ID -> size
	used     int64            // sum of shards
	reserved int64            // sizes of the uploads in flight
}

// openStore opens the shard store under dataDir. Temp files of uploads cut
// short by a crash are removed, and the bytes used are recounted from the
// shard files.
func openStore(dataDir string, capacity int64, log *zap.Logger) (*store, error) {
	s := &store{
		dir:      filepath.Join(dataDir, "shards"),
		tmpDir:   filepath.Join(dataDir, "tmp"),
		capacity: capacity,
		log:      log,
		shards:   make(map[string]int64),
	}
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("storage: clear temp files: %w", err)
	}
	for _, d := range []string{s.dir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	return s, nil
}

// scan fills s.shards from the shard files on disk. Files that are not
// shards in their right place are left alone and not counted.
func (s *store) scan() error {
	subs, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("storage: scan shards: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			s.log.Warn("ignoring stray file in the shard directory", zap.String("name", sub.Name()))
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.dir, sub.Name()))
		if err != nil {
			return fmt.Errorf("storage: scan shards: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if !e.Type().IsRegular() || !s.isShardName(name) || shardSubdir(name) != sub.Name() {
				s.log.Warn("ignoring stray file in the shard directory", zap.String("name", filepath.Join(sub.Name(), name)))
				continue
			}
			info, err := e.Info()
			if err != nil {
				return fmt.Errorf("storage: scan shards: %w", err)
			}
			s.shards[name] = info.Size()
			s.used += info.Size()
		}
	}
	return nil
}

// isShardName reports whether name is a shard ID in canonical form.
func (s *store) isShardName(name string) bool {
	c, err := storageapi.ParseShardID(name)
	return err == nil && c.String() == name
}

// shardSubdir is the directory a shard lives in: the last two characters
// of its ID, which are evenly spread (base32 of a hash).
func shardSubdir(id string) string { return id[len(id)-2:] }

func (s *store) path(id string) string {
	return filepath.Join(s.dir, shardSubdir(id), id)
}

// size returns the size of shard id and whether the store holds it.
func (s *store) size(id string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.shards[id]
	return n, ok
}

// free is the capacity left for new shards; the caller holds s.mu.
func (s *store) freeLocked() int64 {
	return max(0, s.capacity-s.used-s.reserved)
}

// stats returns the capacity, the bytes used, the bytes free and the
// number of shards.
func (s *store) stats() (capacity, used, free int64, shards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacity, s.used, s.freeLocked(), len(s.shards)
}

// list returns the shards held, sorted by ID.
func (s *store) list() []storageapi.ShardInfo {
	s.mu.Lock()
	out := make([]storageapi.ShardInfo, 0, len(s.shards))
	for id, n := range s.shards {
		out = append(out, storageapi.ShardInfo{ID: id, Size: n})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b storageapi.ShardInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// reserve sets size bytes of capacity aside for an upload.
func (s *store) reserve(id string, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if free := s.freeLocked(); size > free {
		return errorf(storageapi.ErrInsufficientStorage, "shard %s has %d bytes but only %d of this peer's %d bytes are free",
			id, size, free, s.capacity)
	}
	s.reserved += size
	return nil
}

func (s *store) unreserve(size int64) {
	s.mu.Lock()
	s.reserved -= size
	s.mu.Unlock()
}

// put stores shard id, size bytes read from r whose BLAKE3 hash
// (storageapi.NewShardHash) must be digest. It returns whether the shard is new; a shard already held is
// not written again. When put returns nil the shard is durable; on any
// error nothing of it is kept.
func (s *store) put(id string, digest []byte, size int64, r io.Reader) (created bool, err error) {
	if _, ok := s.size(id); ok {
		return false, s.syncShardDir(id)
	}
	if err := s.reserve(id, size); err != nil {
		return false, err
	}
	committed := false
	defer func() {
		if !committed {
			s.unreserve(size)
		}
	}()

	tmp, err := s.writeTemp(id, digest, size, r)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp) // a no-op after the rename
	sub := filepath.Join(s.dir, shardSubdir(id))
	if err := os.Mkdir(sub, 0o700); err == nil {
		if err := syncDir(s.dir); err != nil {
			return false, err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("storage: put %s: %w", id, err)
	}

	s.mu.Lock()
	if _, ok := s.shards[id]; ok { // a concurrent upload of the same shard won
		s.mu.Unlock()
		return false, s.syncShardDir(id)
	}
	if err := os.Rename(tmp, s.path(id)); err != nil {
		s.mu.Unlock()
		return false, fmt.Errorf("storage: put %s: %w", id, err)
	}
	s.shards[id] = size
	s.used += size
	s.reserved -= size
	committed = true
	s.mu.Unlock()
	return true, s.syncShardDir(id)
}

// writeTemp copies the shard from r to a synced temp file while hashing
// it, and returns the file's path once the bytes proved to be the shard.
func (s *store) writeTemp(id string, digest []byte, size int64, r io.Reader) (path string, err error) {
	f, err := os.CreateTemp(s.tmpDir, "shard-*")
	if err != nil {
		return "", fmt.Errorf("storage: put %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := storageapi.NewShardHash()
	// Large writes: fewer syscalls, and BLAKE3 hashes big writes in
	// parallel SIMD lanes (several times faster than 32 KiB at a time).
	n, err := io.CopyBuffer(io.MultiWriter(f, h), r, make([]byte, 1<<20))
	if err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return "", errorf(storageapi.ErrTooLarge, "shard %s: body longer than the order's %d bytes", id, size)
		}
		var pe *fs.PathError
		if errors.As(err, &pe) { // the temp file, not the body
			return "", fmt.Errorf("storage: put %s: %w", id, err)
		}
		return "", errorf(storageapi.ErrBadRequest, "shard %s: reading body after %d of %d bytes: %w", id, n, size, err)
	}
	if n != size {
		return "", errorf(storageapi.ErrBadRequest, "shard %s: body has %d bytes, the order says %d", id, n, size)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, digest) {
		return "", errorf(storageapi.ErrBadRequest, "shard %s: the bytes sent do not hash to the shard ID (blake3 %x)", id, sum)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("storage: put %s: %w", id, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("storage: put %s: %w", id, err)
	}
	return f.Name(), nil
}

func (s *store) syncShardDir(id string) error {
	if err := syncDir(filepath.Join(s.dir, shardSubdir(id))); err != nil {
		return fmt.Errorf("storage: put %s: %w", id, err)
	}
	return nil
}

// remove deletes shard id.
func (s *store) remove(id string) error {
	s.mu.Lock()
	size, ok := s.shards[id]
	if !ok {
		s.mu.Unlock()
		return errorf(storageapi.ErrNotFound, "shard %s is not held by this peer", id)
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.mu.Unlock()
		return fmt.Errorf("storage: delete %s: %w", id, err)
	}
	delete(s.shards, id)
	s.used -= size
	s.mu.Unlock()
	if err := syncDir(filepath.Join(s.dir, shardSubdir(id))); err != nil {
		return fmt.Errorf("storage: delete %s: %w", id, err)
	}
	return nil
}

// open opens shard id for reading and returns it with its size on disk,
// which bounds what may be read from it.
func (s *store) open(id string) (*os.File, int64, error) {
	if _, ok := s.size(id); !ok {
		return nil, 0, errorf(storageapi.ErrNotFound, "shard %s is not held by this peer", id)
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, errorf(storageapi.ErrNotFound, "shard %s is not held by this peer", id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("storage: open %s: %w", id, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("storage: open %s: %w", id, err)
	}
	return f, st.Size(), nil
}

// syncDir fsyncs a directory, making the renames and removals in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
