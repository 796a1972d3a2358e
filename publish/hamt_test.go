package publish

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
)

// writeShardedDir writes n tiny distinct files, entry-NNNNN.txt, into a
// new directory under parent and returns its path.
func writeShardedDir(t testing.TB, parent string, n int) string {
	t.Helper()
	dir := filepath.Join(parent, "big")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("entry-%05d.txt", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shardedDirEntries is enough entries for boxo to shard a directory: its
// links (a 15-byte name and a 36-byte CIDv1 each) must add up to more than
// uio.HAMTShardingSize (256 KiB), i.e. more than 5140 of them.
func shardedDirEntries() int { return uio.HAMTShardingSize/(len("entry-00000.txt")+36) + 200 }

// TestImportShardedDirectory: a directory big enough to become a HAMT is
// imported for upload (not only hashed) to the same root as a hash-only
// import, every block of it reads back verified, and it uploads to an
// origin. Importing it used to panic: the HAMT adds each child to the DAG
// service, and the service called RawData on a file's linkTarget.
func TestImportShardedDirectory(t *testing.T) {
	ctx := context.Background()
	dir := writeShardedDir(t, t.TempDir(), shardedDirEntries())
	hashed, err := ImportDir(ctx, dir, WithOnlyHash())
	if err != nil {
		t.Fatal(err)
	}
	d, err := ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Root != hashed.Root {
		t.Fatalf("import root %s, hash-only root %s", d.Root, hashed.Root)
	}
	rootData, err := d.Get(d.Root)
	if err != nil {
		t.Fatal(err)
	}
	pn, err := mdag.DecodeProtobuf(rootData)
	if err != nil {
		t.Fatal(err)
	}
	fsn, err := unixfs.FSNodeFromBytes(pn.Data())
	if err != nil {
		t.Fatal(err)
	}
	if fsn.Type() != unixfs.THAMTShard {
		t.Fatalf("root is a UnixFS %s, want a HAMT shard: the test directory is too small", fsn.Type())
	}
	all, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		data, err := d.Get(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := dag.Verify(c, data); err != nil {
			t.Fatal(err)
		}
	}
	if len(all) <= d.Files {
		t.Fatalf("%d blocks for %d files: want every file and the shards", len(all), d.Files)
	}

	key, _ := identity.Generate(nil)
	c := newTestOrigin(t)
	res, err := c.Push(ctx, key, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != len(all) {
		t.Fatalf("pushed %d of %d blocks", res.Sent, len(all))
	}
	if missing, err := c.Missing(ctx, []cid.Cid{d.Root}); err != nil || len(missing) != 0 {
		t.Fatalf("origin lacks the root after the push: %v %v", missing, err)
	}
}
