package edge

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/topcdn/topcdn/dag"
)

// diskTestBlock returns a raw block of n deterministic pseudo-random bytes
// and its CIDv1.
func diskTestBlock(t testing.TB, seed uint64, n int) (cid.Cid, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c, data
}

// diskTestEntry is a block and its CID.
type diskTestEntry struct {
	c    cid.Cid
	data []byte
}

func openTestDiskCache(t testing.TB, dir string, maxBytes int64) *DiskCache {
	t.Helper()
	d, err := OpenDiskCache(dir, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// diskFiles lists the files under dir other than the marker, as paths
// relative to dir.
func diskFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel != diskMarker {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// diskRel is where block c lives, relative to the cache directory.
func diskRel(c cid.Cid) string {
	name := diskKey(c).String()
	return filepath.Join(name[len(name)-3:len(name)-1], name)
}

func TestDiskCachePutGet(t *testing.T) {
	small, smallData := diskTestBlock(t, 1, 1000)
	empty, emptyData := diskTestBlock(t, 2, 0)
	largest, largestData := diskTestBlock(t, 3, dag.MaxBlockSize)
	tooLarge, tooLargeData := diskTestBlock(t, 4, dag.MaxBlockSize+1)
	v0Data := []byte("a dag-pb block named by a CIDv0")
	v0, err := cid.V0Builder{}.Sum(v0Data)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.IDENTITY}.Sum([]byte("inline"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		c       cid.Cid
		data    []byte
		wantErr error
		stored  bool
	}{
		{name: "raw block", c: small, data: smallData, stored: true},
		{name: "empty block", c: empty, data: emptyData, stored: true},
		{name: "2 MiB block", c: largest, data: largestData, stored: true},
		{name: "CIDv0 stored under CIDv1", c: v0, data: v0Data, stored: true},
		{name: "identity CID not stored", c: ident, data: []byte("inline")},
		{name: "block over 2 MiB refused", c: tooLarge, data: tooLargeData, wantErr: dag.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestDiskCache(t, dir, 4<<20)
			err := d.Put(tc.c, tc.data)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Put: %v, want %v", err, tc.wantErr)
			}
			got, ok := d.Get(tc.c)
			if ok != tc.stored || !bytes.Equal(got, tc.data) && tc.stored {
				t.Fatalf("Get: %d bytes, hit %v; want hit %v", len(got), ok, tc.stored)
			}
			wantLen, wantBytes, wantFiles := 0, int64(0), []string(nil)
			if tc.stored {
				wantLen, wantBytes, wantFiles = 1, int64(len(tc.data)), []string{diskRel(tc.c)}
			}
			if d.Len() != wantLen || d.Bytes() != wantBytes {
				t.Errorf("Len %d Bytes %d, want %d and %d", d.Len(), d.Bytes(), wantLen, wantBytes)
			}
			if files := diskFiles(t, dir); !slices.Equal(files, wantFiles) {
				t.Errorf("files %v, want %v", files, wantFiles)
			}
			// The CIDv1 with the same hash and codec names the same file.
			if tc.stored {
				if got, ok := d.Get(diskKey(tc.c)); !ok || !bytes.Equal(got, tc.data) {
					t.Errorf("Get of the CIDv1 missed")
				}
			}
		})
	}
}

func TestDiskCacheMiss(t *testing.T) {
	d := openTestDiskCache(t, t.TempDir(), 0)
	a, aData := diskTestBlock(t, 1, 100)
	b, _ := diskTestBlock(t, 2, 100)
	if _, ok := d.Get(a); ok {
		t.Fatal("hit in an empty cache")
	}
	if err := d.Put(a, aData); err != nil {
		t.Fatal(err)
	}
	for _, c := range []cid.Cid{b, cid.Undef} {
		if got, ok := d.Get(c); ok || got != nil {
			t.Errorf("Get(%v) = %d bytes, %v; want a miss", c, len(got), ok)
		}
	}
}

func TestDiskCacheEviction(t *testing.T) {
	const size, max = 1000, 3000
	blocks := map[string]diskTestEntry{}
	for i, name := range []string{"a", "b", "c", "d"} {
		c, data := diskTestBlock(t, uint64(i), size)
		blocks[name] = diskTestEntry{c, data}
	}
	big, bigData := diskTestBlock(t, 10, 2500)
	huge, hugeData := diskTestBlock(t, 11, max+1)
	blocks["big"] = diskTestEntry{big, bigData}
	blocks["huge"] = diskTestEntry{huge, hugeData}

	tests := []struct {
		name string
		ops  []string // "put x" or "get x"
		want []string // blocks cached at the end
	}{
		{name: "oldest evicted", ops: []string{"put a", "put b", "put c", "put d"}, want: []string{"b", "c", "d"}},
		{name: "get saves", ops: []string{"put a", "put b", "put c", "get a", "put d"}, want: []string{"a", "c", "d"}},
		{name: "put again saves", ops: []string{"put a", "put b", "put c", "put a", "put d"}, want: []string{"a", "c", "d"}},
		{name: "miss does not count", ops: []string{"put a", "put b", "get d", "put c", "put d"}, want: []string{"b", "c", "d"}},
		{name: "large block evicts several", ops: []string{"put a", "put b", "put c", "get b", "put big"}, want: []string{"big"}},
		{name: "block over the bound not kept", ops: []string{"put a", "put huge"}, want: []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestDiskCache(t, dir, max)
			for _, op := range tc.ops {
				verb, name, _ := bytes.Cut([]byte(op), []byte(" "))
				b := blocks[string(name)]
				switch string(verb) {
				case "put":
					if err := d.Put(b.c, b.data); err != nil {
						t.Fatalf("%s: %v", op, err)
					}
				case "get":
					d.Get(b.c)
				}
				if d.Bytes() > max {
					t.Fatalf("after %s: %d bytes cached, bound %d", op, d.Bytes(), max)
				}
			}
			var wantBytes int64
			var wantFiles []string
			for _, name := range tc.want {
				wantBytes += int64(len(blocks[name].data))
				wantFiles = append(wantFiles, diskRel(blocks[name].c))
			}
			slices.Sort(wantFiles)
			if d.Len() != len(tc.want) || d.Bytes() != wantBytes {
				t.Errorf("Len %d Bytes %d, want %d and %d", d.Len(), d.Bytes(), len(tc.want), wantBytes)
			}
			if files := diskFiles(t, dir); !slices.Equal(files, wantFiles) {
				t.Errorf("files %v, want %v", files, wantFiles)
			}
			for name, b := range blocks {
				_, ok := d.Get(b.c)
				if want := slices.Contains(tc.want, name); ok != want {
					t.Errorf("block %s cached %v, want %v", name, ok, want)
				}
			}
		})
	}
}

func TestDiskCacheRestart(t *testing.T) {
	const size = 1000
	tests := []struct {
		name      string
		readA     bool  // read a, an hour after it was written, before the restart
		reopenMax int64 // bound after the restart
		want      []string
	}{
		{name: "same bound keeps all", reopenMax: 10_000, want: []string{"a", "b", "c", "d"}},
		{name: "default bound keeps all", reopenMax: 0, want: []string{"a", "b", "c", "d"}},
		{name: "smaller bound trims oldest", reopenMax: 2500, want: []string{"c", "d"}},
		{name: "read refreshes age", readA: true, reopenMax: 2500, want: []string{"a", "d"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestDiskCache(t, dir, 10_000)
			blocks := map[string]cid.Cid{}
			data := map[string][]byte{}
			base := time.Now().Add(-time.Hour)
			for i, name := range []string{"a", "b", "c", "d"} {
				c, b := diskTestBlock(t, uint64(i), size)
				if err := d.Put(c, b); err != nil {
					t.Fatal(err)
				}
				// Written a second apart, a first.
				mtime := base.Add(time.Duration(i) * time.Second)
				if err := os.Chtimes(filepath.Join(dir, diskRel(c)), time.Time{}, mtime); err != nil {
					t.Fatal(err)
				}
				blocks[name], data[name] = c, b
			}
			if tc.readA {
				d.now = func() time.Time { return base.Add(2 * time.Hour) }
				if _, ok := d.Get(blocks["a"]); !ok {
					t.Fatal("a missed before the restart")
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			d = openTestDiskCache(t, dir, tc.reopenMax)
			if d.Len() != len(tc.want) || d.Bytes() != int64(len(tc.want)*size) {
				t.Errorf("after restart: Len %d Bytes %d, want %d and %d", d.Len(), d.Bytes(), len(tc.want), len(tc.want)*size)
			}
			var wantFiles []string
			for _, name := range tc.want {
				wantFiles = append(wantFiles, diskRel(blocks[name]))
			}
			slices.Sort(wantFiles)
			if files := diskFiles(t, dir); !slices.Equal(files, wantFiles) {
				t.Errorf("files %v, want %v", files, wantFiles)
			}
			for name, c := range blocks {
				got, ok := d.Get(c)
				if want := slices.Contains(tc.want, name); ok != want || ok && !bytes.Equal(got, data[name]) {
					t.Errorf("block %s: hit %v (%d bytes), want hit %v", name, ok, len(got), want)
				}
			}
		})
	}
}

func TestDiskCacheCorruptFile(t *testing.T) {
	tests := []struct {
		name   string
		damage func(path string, data []byte) error
	}{
		{name: "overwritten", damage: func(path string, data []byte) error {
			bad := bytes.Clone(data)
			bad[len(bad)/2] ^= 0xff
			return os.WriteFile(path, bad, 0o600)
		}},
		{name: "truncated", damage: func(path string, data []byte) error {
			return os.Truncate(path, int64(len(data)-1))
		}},
		{name: "grown", damage: func(path string, data []byte) error {
			return os.WriteFile(path, append(bytes.Clone(data), 0), 0o600)
		}},
		{name: "emptied", damage: func(path string, _ []byte) error {
			return os.WriteFile(path, nil, 0o600)
		}},
		{name: "removed", damage: func(path string, _ []byte) error {
			return os.Remove(path)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestDiskCache(t, dir, 0)
			c, data := diskTestBlock(t, 1, 4096)
			other, otherData := diskTestBlock(t, 2, 4096)
			for _, b := range []diskTestEntry{{c, data}, {other, otherData}} {
				if err := d.Put(b.c, b.data); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.damage(filepath.Join(dir, diskRel(c)), data); err != nil {
				t.Fatal(err)
			}
			if got, ok := d.Get(c); ok {
				t.Fatalf("damaged block served (%d bytes)", len(got))
			}
			if files := diskFiles(t, dir); !slices.Equal(files, []string{diskRel(other)}) {
				t.Errorf("files %v, want only the undamaged block", files)
			}
			if d.Len() != 1 || d.Bytes() != int64(len(otherData)) {
				t.Errorf("Len %d Bytes %d, want 1 and %d", d.Len(), d.Bytes(), len(otherData))
			}
			// The block can be cached again.
			if err := d.Put(c, data); err != nil {
				t.Fatal(err)
			}
			if got, ok := d.Get(c); !ok || !bytes.Equal(got, data) {
				t.Errorf("block put again: hit %v", ok)
			}
		})
	}
}

func TestDiskCacheOpenRemovesStrays(t *testing.T) {
	dir := t.TempDir()
	d := openTestDiskCache(t, dir, 0)
	a, aData := diskTestBlock(t, 1, 1000)
	b, bData := diskTestBlock(t, 2, 2000)
	for _, blk := range []diskTestEntry{{a, aData}, {b, bData}} {
		if err := d.Put(blk.c, blk.data); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	c, cData := diskTestBlock(t, 3, 3000)
	v0, err := cid.V0Builder{}.Sum(cData)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.IDENTITY}.Sum([]byte("inline"))
	if err != nil {
		t.Fatal(err)
	}
	_, tooLargeData := diskTestBlock(t, 4, dag.MaxBlockSize+1)
	cRel := diskRel(c)
	cName := filepath.Base(cRel)
	shard := filepath.Dir(cRel)
	wrongShard := "zz"
	if shard == wrongShard {
		wrongShard = "yy"
	}
	identName := ident.String()

	strays := []struct {
		name string
		path string // relative to dir; a trailing / makes a directory
		data []byte
	}{
		{name: "garbage at the top", path: "junk.txt", data: []byte("x")},
		{name: "directory not a shard", path: "tmp/", data: nil},
		{name: "file in a non-shard directory", path: "Upper/" + cName, data: cData},
		{name: "temp file", path: filepath.Join(shard, diskTempPrefix+"123"), data: cData[:100]},
		{name: "garbage in a shard", path: filepath.Join(shard, "not-a-cid"), data: []byte("x")},
		{name: "directory in a shard", path: filepath.Join(shard, "sub") + "/", data: nil},
		{name: "block in the wrong shard", path: filepath.Join(wrongShard, cName), data: cData},
		{name: "CIDv0 name", path: filepath.Join(shard, v0.String()), data: cData},
		{name: "upper-case name", path: filepath.Join(shard, "B"+cName[1:]), data: cData},
		{name: "identity CID name", path: filepath.Join(identName[len(identName)-3:len(identName)-1], identName), data: []byte("inline")},
		{name: "file over 2 MiB", path: cRel, data: tooLargeData},
	}
	for _, s := range strays {
		p := filepath.Join(dir, s.path)
		if s.path[len(s.path)-1] == '/' {
			if err := os.MkdirAll(filepath.Join(p, "inner"), 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, s.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	d = openTestDiskCache(t, dir, 0)
	for _, s := range strays {
		if _, err := os.Lstat(filepath.Join(dir, s.path)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s not removed (%v)", s.name, s.path, err)
		}
	}
	want := []string{diskRel(a), diskRel(b)}
	slices.Sort(want)
	if files := diskFiles(t, dir); !slices.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	if d.Len() != 2 || d.Bytes() != 3000 {
		t.Errorf("Len %d Bytes %d, want 2 and 3000", d.Len(), d.Bytes())
	}
}

func TestDiskCacheRefusesForeignDir(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		wantErr error
	}{
		{name: "missing directory is made"},
		{name: "empty directory is claimed", files: []string{}},
		{name: "directory with files is refused", files: []string{"notes.txt", "ab/cd"}, wantErr: errDiskForeignDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			if tc.files != nil {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range tc.files {
				p := filepath.Join(dir, f)
				os.MkdirAll(filepath.Dir(p), 0o700)
				if err := os.WriteFile(p, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d, err := OpenDiskCache(dir, 0)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("OpenDiskCache: %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				d.Close()
				return
			}
			for _, f := range tc.files {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s touched: %v", f, err)
				}
			}
		})
	}
}

func TestDiskCacheClose(t *testing.T) {
	dir := t.TempDir()
	d := openTestDiskCache(t, dir, 0)
	a, aData := diskTestBlock(t, 1, 100)
	b, bData := diskTestBlock(t, 2, 100)
	if err := d.Put(a, aData); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Get(a); ok {
		t.Error("hit after Close")
	}
	if err := d.Put(b, bData); !errors.Is(err, errDiskClosed) {
		t.Errorf("Put after Close: %v, want %v", err, errDiskClosed)
	}
	d = openTestDiskCache(t, dir, 0)
	if got, ok := d.Get(a); !ok || !bytes.Equal(got, aData) {
		t.Error("block lost by Close")
	}
}

func TestDiskCacheConcurrent(t *testing.T) {
	const (
		n       = 32
		size    = 4096
		max     = 10 * size
		workers = 8
		ops     = 400
	)
	dir := t.TempDir()
	d := openTestDiskCache(t, dir, max)
	cids := make([]cid.Cid, n)
	data := make([][]byte, n)
	for i := range n {
		cids[i], data[i] = diskTestBlock(t, uint64(i), size)
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 0))
			for range ops {
				i := r.IntN(n)
				if r.IntN(2) == 0 {
					if err := d.Put(cids[i], data[i]); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if got, ok := d.Get(cids[i]); ok && !bytes.Equal(got, data[i]) {
					t.Errorf("block %d: wrong bytes", i)
					return
				}
				if b := d.Bytes(); b > max {
					t.Errorf("%d bytes cached, bound %d", b, max)
					return
				}
			}
		})
	}
	wg.Wait()

	// The index and the disk agree, and no temp file is left.
	files := diskFiles(t, dir)
	if len(files) != d.Len() || int64(len(files)*size) != d.Bytes() {
		t.Errorf("%d files on disk; index has %d blocks, %d bytes", len(files), d.Len(), d.Bytes())
	}
	for _, f := range files {
		c, err := cid.Decode(filepath.Base(f))
		if err != nil {
			t.Errorf("file %s: %v", f, err)
			continue
		}
		if _, ok := d.Get(c); !ok {
			t.Errorf("file %s not indexed", f)
		}
	}
}

func BenchmarkDiskCacheGet(b *testing.B) {
	const size = 256 << 10
	const n = 64
	d := openTestDiskCache(b, b.TempDir(), 0)
	cids := make([]cid.Cid, n)
	for i := range n {
		c, data := diskTestBlock(b, uint64(i), size)
		if err := d.Put(c, data); err != nil {
			b.Fatal(err)
		}
		cids[i] = c
	}
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := d.Get(cids[i%n]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// TestDiskCacheSetMaxBytes: a smaller bound evicts the least recently used
// blocks at once; a larger one keeps more.
func TestDiskCacheSetMaxBytes(t *testing.T) {
	d := openTestDiskCache(t, t.TempDir(), 3000)
	var cs []cid.Cid
	for i := range 3 {
		c, data := diskTestBlock(t, uint64(i), 1000)
		if err := d.Put(c, data); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	d.SetMaxBytes(2000)
	if d.Len() != 2 || d.Bytes() != 2000 {
		t.Fatalf("after SetMaxBytes(2000): %d blocks, %d bytes; want 2, 2000", d.Len(), d.Bytes())
	}
	if _, ok := d.Get(cs[0]); ok {
		t.Fatal("the least recently used block survived the smaller bound")
	}
	d.SetMaxBytes(4000)
	for i := range 2 {
		c, data := diskTestBlock(t, uint64(10+i), 1000)
		if err := d.Put(c, data); err != nil {
			t.Fatal(err)
		}
	}
	if d.Len() != 4 {
		t.Fatalf("after SetMaxBytes(4000) and two more puts: %d blocks, want 4", d.Len())
	}
}

// TestDiskCacheAnswers: the origin's last answers survive a reopen;
// answers not written for 30 days, and strays in their directory, do not.
func TestDiskCacheAnswers(t *testing.T) {
	dir := t.TempDir()
	d := openTestDiskCache(t, dir, 1<<20)
	if err := d.Keep("ipns /ipns/\x00\x01binary/../key", []byte("record")); err != nil {
		t.Fatal(err)
	}
	if err := d.Keep("dnslink old.cdn.test", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := d.Keep("dnslink old.cdn.test", []byte("newer")); err != nil {
		t.Fatal(err)
	}
	if b, ok := d.Kept("dnslink old.cdn.test"); !ok || string(b) != "newer" {
		t.Fatalf("Kept after a second Keep: %q, %v", b, ok)
	}
	if _, ok := d.Kept("never kept"); ok {
		t.Fatal("an answer never kept was found")
	}
	// The same answer again is not rewritten; its age is refreshed once
	// it is over an hour old, so an answer in use is never pruned.
	file := filepath.Join(dir, diskAnswersDir, diskAnswerFile("dnslink old.cdn.test"))
	for _, tc := range []struct {
		age     time.Duration
		touched bool
	}{{10 * time.Minute, false}, {2 * time.Hour, true}} {
		then := time.Now().Add(-tc.age).Truncate(time.Second)
		if err := os.Chtimes(file, then, then); err != nil {
			t.Fatal(err)
		}
		if err := d.Keep("dnslink old.cdn.test", []byte("newer")); err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if touched := !info.ModTime().Equal(then); touched != tc.touched {
			t.Fatalf("the same answer kept again %s after the last: touched %v, want %v", tc.age, touched, tc.touched)
		}
	}
	d.Close()
	old := time.Now().Add(-diskAnswerMaxAge - time.Hour)
	if err := os.Chtimes(filepath.Join(dir, diskAnswersDir, diskAnswerFile("dnslink old.cdn.test")), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, diskAnswersDir, "stray"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = openTestDiskCache(t, dir, 1<<20)
	if b, ok := d.Kept("ipns /ipns/\x00\x01binary/../key"); !ok || string(b) != "record" {
		t.Fatalf("after a reopen: %q, %v", b, ok)
	}
	if _, ok := d.Kept("dnslink old.cdn.test"); ok {
		t.Fatal("an answer not written for over 30 days survived the reopen")
	}
	if _, err := os.Stat(filepath.Join(dir, diskAnswersDir, "stray")); err == nil {
		t.Fatal("a stray file in the answers directory survived the reopen")
	}
	if d.Len() != 0 || d.Bytes() != 0 {
		t.Fatalf("answers counted as blocks: %d blocks, %d bytes", d.Len(), d.Bytes())
	}
}
