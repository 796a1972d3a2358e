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

// TestStateSharedAcrossReloads: handlers configured alike share one edge
// State (a reload keeps the caches warm); a handler configured otherwise
// gets its own, and a State outlives the old config while the new one
// uses it.
func TestStateSharedAcrossReloads(t *testing.T) {
	k := stateKey{Origin: "http://127.0.0.1:7070", Domain: "cdn.test", MemoryBytes: 1 << 20,
		DNSLinks: map[string]string{"b.example": "/ipns/b", "a.example": "/ipns/a"}}
	old, oldKey, err := loadState(k)
	if err != nil {
		t.Fatal(err)
	}
	cur, curKey, err := loadState(k)
	if err != nil {
		t.Fatal(err)
	}
	if cur != old {
		t.Fatal("a reload with the same configuration got a new State")
	}
	other := k
	other.Domain = "cdn.example"
	diff, diffKey, err := loadState(other)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseState(diffKey)
	if diff == old {
		t.Fatal("a handler for another domain shares the State")
	}
	releaseState(oldKey)
	if again, againKey, _ := loadState(k); again != cur {
		t.Fatal("the State was dropped while the new config still used it")
	} else {
		releaseState(againKey)
	}
	releaseState(curKey)
	if fresh, freshKey, _ := loadState(k); fresh == cur {
		t.Fatal("the State outlived every handler that used it")
	} else {
		releaseState(freshKey)
	}
}
