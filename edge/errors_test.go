package edge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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
		vs := newNameRecords(e.pool, e.cfg.HTTPClient, e.log, e.metrics.fallbacks, e.cfg.State.names, nil)
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

// TestErrorStatuses: what is the client's fault or the upstream's is
// never a 500 nor a wrong 404: an unknown name is 404, an origin that
// cannot answer is 502 (504 when it is too slow), logged, and no answer
// names the origin's address, for programs and browsers (HTML error
// pages) alike.
func TestErrorStatuses(t *testing.T) {
	key, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	name := ipns.NameFromPeer(key.ID).String()
	blk := mdag.NewRawNode([]byte("nowhere")).Cid().String()
	origins := map[string]http.HandlerFunc{
		"gone":    http.NotFound, // has nothing: every answer is 404
		"failing": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
		"hanging": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
		"lying":   func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("not the block asked for")) },
	}
	tests := []struct {
		name, origin, host, path string
		code                     int
	}{
		{"unknown IPNS name", "gone", "127.0.0.1", "/ipns/" + name + "/", http.StatusNotFound},
		{"unknown DNSLink name", "gone", "127.0.0.1", "/ipns/nosuch.example/", http.StatusNotFound},
		{"unknown site", "gone", "nosuch.cdn.test", "/", http.StatusNotFound},
		{"missing block", "gone", "127.0.0.1", "/ipfs/" + blk, http.StatusNotFound},
		{"IPNS name, origin down", "down", "127.0.0.1", "/ipns/" + name + "/", http.StatusBadGateway},
		{"IPNS name, origin failing", "failing", "127.0.0.1", "/ipns/" + name + "/", http.StatusBadGateway},
		{"IPNS name, origin hanging", "hanging", "127.0.0.1", "/ipns/" + name + "/", http.StatusGatewayTimeout},
		{"site, origin down", "down", "blog.cdn.test", "/", http.StatusBadGateway},
		{"site, origin failing", "failing", "blog.cdn.test", "/", http.StatusBadGateway},
		{"site, origin hanging", "hanging", "blog.cdn.test", "/", http.StatusGatewayTimeout},
		{"block, origin down", "down", "127.0.0.1", "/ipfs/" + blk, http.StatusBadGateway},
		{"path under a block, origin down", "down", "127.0.0.1", "/ipfs/" + blk + "/x", http.StatusBadGateway},
		{"subdomain, origin down", "down", blk + ".ipfs.cdn.test", "/", http.StatusBadGateway},
		{"block, origin failing", "failing", "127.0.0.1", "/ipfs/" + blk, http.StatusBadGateway},
		{"block, origin hanging", "hanging", "127.0.0.1", "/ipfs/" + blk, http.StatusGatewayTimeout},
		{"block, origin sends other bytes", "lying", "127.0.0.1", "/ipfs/" + blk, http.StatusBadGateway},
	}
	for _, tc := range tests {
		for _, accept := range []string{"", "text/html"} {
			label := tc.name + ", plain"
			if accept != "" {
				label = tc.name + ", HTML"
			}
			t.Run(label, func(t *testing.T) {
				o := httptest.NewServer(origins[tc.origin])
				if tc.origin == "down" {
					o.Close()
				} else {
					defer o.Close()
				}
				core, logs := observer.New(zap.WarnLevel)
				e, err := New(context.Background(), Config{Origin: o.URL, Logger: zap.New(core),
					HTTPClient: &http.Client{Timeout: 200 * time.Millisecond}})
				if err != nil {
					t.Fatal(err)
				}
				resp := get(t, e, tc.host, tc.path, "Accept", accept)
				got := body(t, resp)
				if resp.StatusCode != tc.code {
					t.Fatalf("HTTP %d, want %d: %.300q", resp.StatusCode, tc.code, got)
				}
				// The HTML page's own links (the SVG namespace) are no address
				// of ours; a plain answer has no URL at all.
				if addr := strings.TrimPrefix(o.URL, "http://"); strings.Contains(got, addr) ||
					(accept == "" && strings.Contains(got, "http://")) {
					t.Fatalf("the answer names an internal address: %.300q", got)
				}
				if logged := logs.FilterMessage("upstream failed").Len() > 0; logged != (tc.code >= 500) {
					t.Fatalf("upstream failure logged: %v, want %v", logged, tc.code >= 500)
				}
			})
		}
	}
}
