package storage_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storage"
	"github.com/topcdn/topcdn/storageapi"
)

// A storage peer takes a shard on the origin's order and serves a range of
// it on a reader's.
func ExampleClient_GetRange() {
	ctx := context.Background()
	originKey, _ := identity.Generate(nil)
	readerKey, _ := identity.Generate(nil)

	dir, err := os.MkdirTemp("", "storage-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	peer, err := storage.New(ctx, storage.Config{DataDir: dir, OriginID: originKey.ID})
	if err != nil {
		log.Fatal(err)
	}
	defer peer.Close()
	srv := httptest.NewServer(peer.Handler())
	defer srv.Close()

	shard := []byte("an erasure-coded shard, named by its hash")
	id := storageapi.ShardID(shard)
	origin := storageapi.NewClient(originKey, nil)
	if err := origin.Put(ctx, peer.ID(), srv.URL, id, shard); err != nil {
		log.Fatal(err)
	}

	reader := storageapi.NewClient(readerKey, nil)
	b, err := reader.GetRange(ctx, peer.ID(), srv.URL, id, 3, 13)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", b)

	// Only the origin may write.
	err = reader.Put(ctx, peer.ID(), srv.URL, id, shard)
	fmt.Println(err != nil)
	// Output:
	// erasure-coded
	// true
}

// An origin checks that a peer still holds a shard.
func ExampleClient_Audit() {
	ctx := context.Background()
	originKey, _ := identity.Generate(nil)
	dir, err := os.MkdirTemp("", "storage-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	peer, err := storage.New(ctx, storage.Config{DataDir: dir, OriginID: originKey.ID})
	if err != nil {
		log.Fatal(err)
	}
	defer peer.Close()
	srv := httptest.NewServer(peer.Handler())
	defer srv.Close()

	shard := []byte("0123456789")
	id := storageapi.ShardID(shard)
	origin := storageapi.NewClient(originKey, nil)
	if err := origin.Put(ctx, peer.ID(), srv.URL, id, shard); err != nil {
		log.Fatal(err)
	}
	data, err := origin.Audit(ctx, peer.ID(), srv.URL, id, 4, 3)
	fmt.Printf("%s %v\n", data, err)
	// Output: 456 <nil>
}
