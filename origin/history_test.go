package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// TestNameHistory: GET /api/v1/names/{name}/history lists every root the
// name pointed at, a rollback too, oldest first, and nothing of an
// unbound key's records; the check's answer names the domain and the
// billing service.
func TestNameHistory(t *testing.T) { pgtest.Dialects(t, testNameHistory) }

func testNameHistory(t *testing.T, dsn string) {
	ctx := context.Background()
	o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn, Domain: "example.net", Billing: "http://billing.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(srv.Close)
	v1, v2 := newTestDAG(t, "one", 2), newTestDAG(t, "two", 2)
	for _, d := range []testDAG{v1, v2} {
		if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
			t.Fatal(err)
		}
	}
	alice, mallory := testkit.Key(t, 1), testkit.Key(t, 2)
	future := time.Now().Add(time.Hour)
	for i, root := range []cid.Cid{v1.root, v2.root, v1.root} {
		if _, err := o.ClaimName(ctx, "blog", ipns.NameFromPeer(alice.ID), record(t, alice, root, uint64(i+1), future, "blog")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.PutRecord(ctx, ipns.NameFromPeer(mallory.ID), record(t, mallory, v2.root, 1, future, "")); err != nil {
		t.Fatal(err)
	}
	aliceIPNS := ipns.NameFromPeer(alice.ID).String()

	tests := []struct {
		name, path string
		code       int
		check      func(t *testing.T, body []byte)
	}{
		{"a name's moves, the rollback too", "/api/v1/names/blog/history", 200, func(t *testing.T, body []byte) {
			var h originapi.NameHistory
			if err := json.Unmarshal(body, &h); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range h.Moves {
				if m.IPNS != aliceIPNS || m.At.IsZero() {
					t.Fatalf("move %+v: want alice's IPNS name and a time", m)
				}
				got = append(got, fmt.Sprintf("%s@%d", m.Root, m.Sequence))
			}
			want := []string{v1.root.String() + "@1", v2.root.String() + "@2", v1.root.String() + "@3"}
			if h.Name != "blog" || !slices.Equal(got, want) {
				t.Fatalf("history %s %v, want blog %v", h.Name, got, want)
			}
		}},
		{"a name never published", "/api/v1/names/docs/history", 404, nil},
		{"not a name", "/api/v1/names/Blog!/history", 400, nil},
		{"the check names domain and billing", "/api/v1/publishers/" + alice.ID.String() + "/check?name=blog", 200, func(t *testing.T, body []byte) {
			var u originapi.PublisherUsage
			if err := json.Unmarshal(body, &u); err != nil {
				t.Fatal(err)
			}
			if u.Domain != "example.net" || u.Billing != "http://billing.example.net" {
				t.Fatalf("check answered %+v", u)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := testkit.Get(t, srv.URL+tc.path, "")
			if code != tc.code {
				t.Fatalf("GET %s: %d %s, want %d", tc.path, code, body, tc.code)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}

	// By default the domain is cdn.test and no billing is named.
	def := newTestOrigin(t)
	u, err := def.CheckPublish(ctx, alice.ID, "")
	if err != nil || u.Domain != DefaultDomain || u.Billing != "" {
		t.Fatalf("default check: %+v, %v", u, err)
	}
}
