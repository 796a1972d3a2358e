package edge

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/topcdn/topcdn/identity"
)

// TestErrorsNamePackageOnce: errors that leave the package through the
// interfaces boxo and erasure call carry "edge:" once, however deep the
// failure; the origin's own answers keep their meaning for errors.Is.
func TestErrorsNamePackageOnce(t *testing.T) {
	ctx := context.Background()
	down := httptest.NewServer(nil)
	down.Close() // an origin that does not answer
	gone := httptest.NewServer(nil)
	defer gone.Close() // an origin that answers 404 to everything
	key, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	name := ipns.NameFromPeer(key.ID)
	blk := mdag.NewRawNode([]byte("nowhere"))
	for _, origin := range []string{down.URL, gone.URL} {
		e, err := New(ctx, Config{Origin: origin})
		if err != nil {
			t.Fatal(err)
		}
		vs := newNameRecords(e.cfg.Origin, e.cfg.HTTPClient, e.log, e.metrics.fallbacks, e.cfg.State.names, nil)
		_, blockErr := (&blockstore{e: e}).Get(ctx, blk.Cid())
		_, nameErr := vs.GetValue(ctx, string(name.RoutingKey()))
		_, _, linkErr := e.src.lookupDNSLink(e.cfg.Domain)(ctx, "_dnslink.blog.cdn.test.")
		_, shardErr := e.src.GetShard(ctx, key.ID, "shard", 0, 1)
		for what, err := range map[string]error{"block": blockErr, "IPNS record": nameErr, "DNSLink": linkErr, "shard": shardErr} {
			if origin == gone.URL && what == "block" {
				continue // a missing block is the Blockstore contract's ipld.ErrNotFound, as is
			}
			if err == nil || strings.Count(err.Error(), "edge:") != 1 || !strings.HasPrefix(err.Error(), "edge: ") {
				t.Errorf("origin %s, %s: %v; want one edge: prefix", origin, what, err)
			}
		}
		// Inside the package (here a manifest, which only reaches the
		// logs) an error names no package; the logger does.
		if _, err := e.src.manifest(ctx, blk.Cid()); err == nil || strings.Contains(err.Error(), "edge:") {
			t.Errorf("origin %s, manifest: %v; want an error without the package name", origin, err)
		}
		if origin == gone.URL && !errors.Is(nameErr, routing.ErrNotFound) {
			t.Errorf("a record the origin does not have: %v, want routing.ErrNotFound", nameErr)
		}
	}
}
