package edge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/ipfs/go-cid"

	"github.com/topcdn/topcdn/dag"
)

// diskMarker names the file that marks a directory as a DiskCache. A
// directory that holds files but no marker is refused, so that a mistyped
// path never has its files removed as strays.
const diskMarker = "TOPCDN-DISKCACHE"

const diskMarkerText = "topcdn edge disk cache v1: <dir>/<next-to-last 2 characters>/<CIDv1 base32>\n"

// diskTouchEvery is how stale a block file's modification time may get
// before a hit refreshes it. The time orders blocks for eviction after a
// restart; refreshing it at most once a minute keeps most hits free of the
// extra write.
const diskTouchEvery = time.Minute

// diskTempPrefix starts the names of files being written. No block file
// name starts with it.
const diskTempPrefix = ".put-"

// diskAnswersDir is the subdirectory that keeps the origin's last answers
// (Keep); no shard directory has a name this long.
const diskAnswersDir = "answers"

// diskAnswerMaxAge is how long a kept answer survives unwritten on disk:
// an edge that served a site in the last month can still serve it, from
// its disk and the storage peers, while the origin is down.
const diskAnswerMaxAge = 30 * 24 * time.Hour

// diskAnswerTouchEvery is how stale a kept answer's modification time may
// get before keeping the same answer again refreshes it.
const diskAnswerTouchEvery = time.Hour

// errDiskForeignDir is returned by OpenDiskCache for a directory that
// holds files but was not made by a DiskCache.
var errDiskForeignDir = errors.New("directory is not empty and is not a disk cache")

// errDiskClosed is returned by Put after Close.
var errDiskClosed = errors.New("disk cache closed")

// DiskCache keeps verified blocks on disk for an edge: bounded by bytes,
// evicting the least recently used, surviving restarts, and checking every
// block against its CID when it is read back.
//
// A block lives in dir/<shard>/<name>, where name is its CID as CIDv1 in
// base32 (a CIDv0 is stored under its CIDv1) and shard is the next-to-last
// two characters of name, as in flatfs next-to-last/2. The index is kept in
// memory and rebuilt from the file names on open. The byte bound counts
// block data only, not file system overhead. A DiskCache is safe for
// concurrent use; one directory must not be opened by two at once.
type DiskCache struct {
	dir string
	max int64

	mu     sync.Mutex
	lru    *simplelru.LRU[cid.Cid, *diskEntry] // CIDv1 -> entry
	bytes  int64
	closed bool

	// Testing.
	now func() time.Time
}

// diskEntry is what the index knows of a block file. Its fields are
// guarded by DiskCache.mu.
type diskEntry struct {
	size    int64
	touched time.Time // the file's modification time, as last set or seen
}

// OpenDiskCache opens (creating) the cache in dir, holding at most maxBytes
// of block data. If maxBytes <= 0, it is DefaultDiskCacheBytes (1 GiB). On
// open it indexes the block files already there, by their modification
// time (which a read refreshes; oldest evicted first), removes temp files
// and anything else that is not a block file in its right place, and trims
// to maxBytes.
// A directory that is not empty and was not made by OpenDiskCache is
// refused with an error, and nothing in it is touched.
func OpenDiskCache(dir string, maxBytes int64) (*DiskCache, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultDiskCacheBytes
	}
	d := &DiskCache{dir: dir, max: maxBytes, now: time.Now}
	d.lru, _ = simplelru.NewLRU[cid.Cid, *diskEntry](math.MaxInt, d.evicted)
	if err := d.claim(); err != nil {
		return nil, err
	}
	if err := d.scan(); err != nil {
		return nil, err
	}
	return d, nil
}

// claim makes dir if needed and checks that it is a disk cache, marking it
// as one if it is empty.
func (d *DiskCache) claim() error {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return fmt.Errorf("edge: open disk cache: %w", err)
	}
	marker := filepath.Join(d.dir, diskMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("edge: open disk cache: %w", err)
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("edge: open disk cache: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("edge: open disk cache %s: %w", d.dir, errDiskForeignDir)
	}
	if err := os.WriteFile(marker, []byte(diskMarkerText), 0o600); err != nil {
		return fmt.Errorf("edge: open disk cache: %w", err)
	}
	return nil
}

// diskFound is a block file met by scan.
type diskFound struct {
	key   cid.Cid
	size  int64
	mtime time.Time
}

// scan fills the index from the files in dir, oldest first, removes every
// file that is not a block in its right place, and trims to the bound.
func (d *DiskCache) scan() error {
	subs, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("edge: scan disk cache: %w", err)
	}
	var found []diskFound
	for _, sub := range subs {
		if sub.Name() == diskMarker {
			continue
		}
		if sub.Name() == diskAnswersDir && sub.IsDir() {
			if err := d.pruneAnswers(); err != nil {
				return fmt.Errorf("edge: scan disk cache: %w", err)
			}
			continue
		}
		subPath := filepath.Join(d.dir, sub.Name())
		if !sub.IsDir() || !isDiskShard(sub.Name()) {
			if err := os.RemoveAll(subPath); err != nil {
				return fmt.Errorf("edge: scan disk cache: remove stray: %w", err)
			}
			continue
		}
		entries, err := os.ReadDir(subPath)
		if err != nil {
			return fmt.Errorf("edge: scan disk cache: %w", err)
		}
		for _, e := range entries {
			f, ok := d.blockFile(sub.Name(), e)
			if !ok {
				if err := os.RemoveAll(filepath.Join(subPath, e.Name())); err != nil {
					return fmt.Errorf("edge: scan disk cache: remove stray: %w", err)
				}
				continue
			}
			found = append(found, f)
		}
	}
	slices.SortFunc(found, func(a, b diskFound) int {
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.key.KeyString(), b.key.KeyString())
	})

	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range found {
		d.lru.Add(f.key, &diskEntry{size: f.size, touched: f.mtime})
		d.bytes += f.size
	}
	d.trimLocked()
	return nil
}

// blockFile reports whether e, in shard directory shard, is a block file
// in its right place, and if so what it holds.
func (d *DiskCache) blockFile(shard string, e fs.DirEntry) (diskFound, bool) {
	if !e.Type().IsRegular() {
		return diskFound{}, false
	}
	name := e.Name()
	c, err := cid.Decode(name)
	if err != nil || c.Version() != 1 || dag.IsIdentity(c) || c.String() != name || diskShard(name) != shard {
		return diskFound{}, false
	}
	info, err := e.Info()
	if err != nil || info.Size() > dag.MaxBlockSize {
		return diskFound{}, false
	}
	return diskFound{key: c, size: info.Size(), mtime: info.ModTime()}, true
}

// Get returns block c if cached. The bytes are verified against c
// (dag.Verify); a corrupt or unreadable file is deleted and reported as a
// miss. Identity CIDs are never cached.
func (d *DiskCache) Get(c cid.Cid) ([]byte, bool) {
	if !c.Defined() || dag.IsIdentity(c) {
		return nil, false
	}
	k := diskKey(c)
	d.mu.Lock()
	e, ok := d.lru.Get(k)
	if d.closed || !ok {
		d.mu.Unlock()
		return nil, false
	}
	size := e.size
	touch := d.touchLocked(e)
	d.mu.Unlock()

	path := d.path(k)
	data, err := readDiskBlock(path, size)
	if err == nil {
		err = dag.Verify(c, data)
	}
	if err != nil {
		d.drop(k)
		return nil, false
	}
	if !touch.IsZero() {
		// The file may have been evicted since: then there is nothing
		// to refresh.
		_ = os.Chtimes(path, time.Time{}, touch)
	}
	return data, true
}

// readDiskBlock reads the file at path, which must hold exactly size bytes.
func readDiskBlock(path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, err
	}
	// A file that grew is as corrupt as one that shrank.
	var more [1]byte
	if n, err := f.Read(more[:]); n > 0 || !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, size)
	}
	return buf, nil
}

// drop removes block k, whose file failed to read back, from the index
// and from disk.
func (d *DiskCache) drop(k cid.Cid) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.lru.Remove(k) {
		// Already evicted; a file left under the name is not indexed
		// and so cannot be a block being written (those are renamed
		// into place under d.mu).
		_ = os.Remove(d.path(k))
	}
}

// Put stores block c, which the caller has verified. It writes a temp
// file and renames it into place (no fsync: a cache may lose entries in a
// crash, but never holds a torn file under a block's name), then evicts
// the least recently used blocks beyond maxBytes. Putting a block already
// cached only marks it used. Blocks larger than dag.MaxBlockSize are
// refused with an error wrapping dag.ErrTooLarge; blocks larger than
// maxBytes and identity CIDs are not kept.
func (d *DiskCache) Put(c cid.Cid, data []byte) error {
	if !c.Defined() {
		return errors.New("edge: disk cache put: undefined CID")
	}
	if len(data) > dag.MaxBlockSize {
		return fmt.Errorf("edge: disk cache put %s: %w (%d bytes)", c, dag.ErrTooLarge, len(data))
	}
	if dag.IsIdentity(c) || int64(len(data)) > d.max {
		return nil
	}
	k := diskKey(c)
	if done, err := d.markUsed(k); done || err != nil {
		return err
	}

	name := k.String()
	tmp, err := d.writeTemp(diskShard(name), data)
	if err != nil {
		return fmt.Errorf("edge: disk cache put %s: %w", c, err)
	}
	defer os.Remove(tmp) // a no-op after the rename

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("edge: disk cache put %s: %w", c, errDiskClosed)
	}
	if _, ok := d.lru.Get(k); ok { // a concurrent Put of the same block won
		return nil
	}
	if err := os.Rename(tmp, d.path(k)); err != nil {
		return fmt.Errorf("edge: disk cache put %s: %w", c, err)
	}
	d.lru.Add(k, &diskEntry{size: int64(len(data)), touched: d.now()})
	d.bytes += int64(len(data))
	d.trimLocked()
	return nil
}

// markUsed marks block k used if it is cached, and reports whether it is.
func (d *DiskCache) markUsed(k cid.Cid) (cached bool, err error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false, fmt.Errorf("edge: disk cache put %s: %w", k, errDiskClosed)
	}
	e, ok := d.lru.Get(k)
	var touch time.Time
	if ok {
		touch = d.touchLocked(e)
	}
	d.mu.Unlock()
	if !touch.IsZero() {
		_ = os.Chtimes(d.path(k), time.Time{}, touch)
	}
	return ok, nil
}

// writeTemp writes data to a new temp file in shard directory shard,
// making the directory if needed, and returns the file's path.
func (d *DiskCache) writeTemp(shard string, data []byte) (string, error) {
	sub := filepath.Join(d.dir, shard)
	f, err := os.CreateTemp(sub, diskTempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(sub, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
		f, err = os.CreateTemp(sub, diskTempPrefix+"*")
	}
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// touchLocked returns the time to set as e's file modification time, or
// the zero time if it is fresh enough. The caller holds d.mu.
func (d *DiskCache) touchLocked(e *diskEntry) time.Time {
	now := d.now()
	if now.Sub(e.touched) < diskTouchEvery {
		return time.Time{}
	}
	e.touched = now
	return now
}

// trimLocked evicts the least recently used blocks until the bound holds.
// The caller holds d.mu.
func (d *DiskCache) trimLocked() {
	for d.bytes > d.max && d.lru.Len() > 0 {
		d.lru.RemoveOldest()
	}
}

// evicted is the index's eviction callback: it deletes the block's file.
// It runs under d.mu, so a file is never removed while a Put renames a new
// one into its place. A file that cannot be removed is not counted, and is
// indexed again on the next open.
func (d *DiskCache) evicted(k cid.Cid, e *diskEntry) {
	d.bytes -= e.size
	_ = os.Remove(d.path(k))
}

// Keep keeps value as the origin's last answer for key (any string: a
// name, a manifest's root), for Kept after a restart. Values are small
// next to the blocks (IPNS records, DNSLink answers, signed manifests, the
// storage peers' addresses); they do not count towards the bound, and one
// not kept again for 30 days is removed at the next open. Keeping the same
// answer again does not rewrite it.
func (d *DiskCache) Keep(key string, value []byte) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return errDiskClosed
	}
	dir := filepath.Join(d.dir, diskAnswersDir)
	file := filepath.Join(dir, diskAnswerFile(key))
	if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, value) {
		// The same answer again: only its age is news (pruneAnswers).
		if info, err := os.Stat(file); err == nil && d.now().Sub(info.ModTime()) > diskAnswerTouchEvery {
			now := d.now()
			if err := os.Chtimes(file, now, now); err != nil {
				return fmt.Errorf("edge: disk cache: keep answer: %w", err)
			}
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("edge: disk cache: %w", err)
	}
	f, err := os.CreateTemp(dir, diskTempPrefix)
	if err != nil {
		return fmt.Errorf("edge: disk cache: %w", err)
	}
	_, err = f.Write(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), file)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("edge: disk cache: keep answer: %w", err)
	}
	return nil
}

// Kept returns the value Keep kept for key, if any. The caller
// checks it: a file on disk is no more trusted than what the origin says.
func (d *DiskCache) Kept(key string) ([]byte, bool) {
	b, err := os.ReadFile(filepath.Join(d.dir, diskAnswersDir, diskAnswerFile(key)))
	return b, err == nil
}

// diskAnswerFile is the file name of a name's kept answer: the key's
// SHA-256, so that any key is a safe file name.
func diskAnswerFile(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// pruneAnswers removes temp files and answers not written for
// diskAnswerMaxAge from the answers directory.
func (d *DiskCache) pruneAnswers() error {
	dir := filepath.Join(d.dir, diskAnswersDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	cutoff := d.now().Add(-diskAnswerMaxAge)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), diskTempPrefix) || len(e.Name()) != 2*sha256.Size ||
			info.ModTime().Before(cutoff) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetMaxBytes changes the bound to maxBytes (DefaultDiskCacheBytes if
// maxBytes <= 0), evicting the least recently used blocks if the cache
// holds more.
func (d *DiskCache) SetMaxBytes(maxBytes int64) {
	if maxBytes <= 0 {
		maxBytes = DefaultDiskCacheBytes
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.max = maxBytes
	d.trimLocked()
}

// Len returns the number of blocks cached.
func (d *DiskCache) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}

// Bytes returns the total size of the blocks cached.
func (d *DiskCache) Bytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bytes
}

// Close releases the cache. The blocks stay on disk for the next open;
// after Close, Get misses and Put fails.
func (d *DiskCache) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *DiskCache) path(k cid.Cid) string {
	name := k.String()
	return filepath.Join(d.dir, diskShard(name), name)
}

// diskKey is the CID block c is indexed and named under: c as CIDv1, so
// every name is lower-case base32 and a CIDv0 shares its CIDv1's file.
func diskKey(c cid.Cid) cid.Cid {
	if c.Version() == 1 {
		return c
	}
	return cid.NewCidV1(c.Type(), c.Hash())
}

// diskShard is the directory a block file lives in: the next-to-last two
// characters of its name, which are evenly spread (the last character of
// base32 carries fewer bits).
func diskShard(name string) string { return name[len(name)-3 : len(name)-1] }

// isDiskShard reports whether name could be a shard directory: two
// characters of the lower-case base32 alphabet.
func isDiskShard(name string) bool {
	return len(name) == 2 && isBase32Lower(name[0]) && isBase32Lower(name[1])
}

func isBase32Lower(b byte) bool { return 'a' <= b && b <= 'z' || '2' <= b && b <= '7' }
