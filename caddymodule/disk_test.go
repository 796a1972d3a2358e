package caddymodule

import (
	"path/filepath"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
)

// TestDiskSharedAcrossReloads: on a reload the new config's handler opens
// the disk cache while the old one still has it. Both get the same cache,
// which stays open until the last lets go of it.
func TestDiskSharedAcrossReloads(t *testing.T) {
	dir := t.TempDir()
	old, oldKey, err := openDisk(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// The same directory, spelt another way, with a new bound.
	cur, curKey, err := openDisk(filepath.Join(dir, "."), 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	if cur != old || curKey != oldKey {
		t.Fatal("the reloaded handler opened the directory a second time")
	}
	blk := mdag.NewRawNode([]byte("kept across reloads"))
	if err := releaseDisk(oldKey); err != nil { // the old config is cleaned up
		t.Fatal(err)
	}
	if err := cur.Put(blk.Cid(), blk.RawData()); err != nil {
		t.Fatalf("the new config's cache was closed with the old config: %v", err)
	}
	if err := releaseDisk(curKey); err != nil {
		t.Fatal(err)
	}
	if err := cur.Put(mdag.NewRawNode([]byte("after")).Cid(), []byte("after")); err == nil {
		t.Fatal("the cache is still open after the last handler let go of it")
	}
	// A later config opens it anew, with what was kept.
	again, key, err := openDisk(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseDisk(key)
	if again == cur {
		t.Fatal("a closed cache was handed out again")
	}
	if _, ok := again.Get(blk.Cid()); !ok {
		t.Fatal("the block put before the last release is gone")
	}
}
