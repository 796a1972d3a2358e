package edge

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
)

type recorded struct {
	mu  sync.Mutex
	got []Served
}

func (r *recorded) Record(s Served) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorded) last(t *testing.T) Served {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		t.Fatal("nothing recorded")
	}
	return r.got[len(r.got)-1]
}

// TestEdgeRecordsResponses: every response, from the gateway or from the
// response cache, is recorded with what billing needs: the site or root,
// the object's CID, the body bytes actually sent, the status, the client.
func TestEdgeRecordsResponses(t *testing.T) {
	n := newNetwork(t)
	rec := &recorded{}
	e, err := New(context.Background(), Config{Origin: n.originURL, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	index, _ := os.ReadFile("../examples/site/index.html")
	manual, _ := os.ReadFile("../examples/site/docs/manual.txt")
	root := n.root.String()
	sub, _ := cid.Decode(root)
	client := netip.MustParseAddr("192.0.2.1") // httptest.NewRequest's RemoteAddr
	tests := []struct {
		name, host, path string
		hdr              []string
		status           int
		bytes            int
		site, root       string
		wantCID          bool
		wantPath         string
	}{
		{"site miss", "blog.cdn.test", "/", nil, 200, len(index), "blog", root, true, "/"},
		{"site hit", "blog.cdn.test", "/", nil, 200, len(index), "blog", root, true, "/"},
		{"range", "blog.cdn.test", "/docs/manual.txt", []string{"Range", "bytes=0-99"}, 206, 100, "blog", root, true, "/docs/manual.txt"},
		{"whole file", "blog.cdn.test:8080", "/docs/manual.txt", nil, 200, len(manual), "blog", root, true, "/docs/manual.txt"},
		{"the query is not recorded", "blog.cdn.test", "/docs/manual.txt?utm_source=x", nil, 200, len(manual), "blog", root, true,
			"/docs/manual.txt"},
		{"path gateway", "127.0.0.1", "/ipfs/" + root + "/", nil, 200, len(index), "", root, true, "/ipfs/" + root + "/"},
		{"subdomain gateway", sub.String() + ".ipfs.cdn.test", "/", nil, 200, len(index), "", root, true, "/"},
		{"unknown site", "nosuch.cdn.test", "/", nil, 404, -1, "nosuch", "", false, "/"},
		// A long path is cut to MaxPathBytes, before the character ("é",
		// 2 bytes) that would cross it.
		{"long path", "blog.cdn.test", "/" + strings.Repeat("a", MaxPathBytes-2) + "%C3%A9", nil, 404, -1, "blog", "", false,
			"/" + strings.Repeat("a", MaxPathBytes-2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, e, tc.host, tc.path, tc.hdr...)
			b := body(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			s := rec.last(t)
			if s.Status != tc.status || s.Bytes != int64(len(b)) || (tc.bytes >= 0 && s.Bytes != int64(tc.bytes)) {
				t.Fatalf("recorded status %d bytes %d, sent %d with %d bytes", s.Status, s.Bytes, resp.StatusCode, len(b))
			}
			if s.Name != tc.site || (tc.root != "" && s.Root != tc.root) {
				t.Fatalf("recorded name %q root %q, want %q %q", s.Name, s.Root, tc.site, tc.root)
			}
			if tc.wantCID {
				if _, err := cid.Decode(s.CID); err != nil {
					t.Fatalf("recorded CID %q: %v", s.CID, err)
				}
			}
			if s.Path != tc.wantPath {
				t.Fatalf("recorded path %q, want %q", s.Path, tc.wantPath)
			}
			if s.Client != client || s.Time.IsZero() {
				t.Fatalf("recorded client %v time %v", s.Client, s.Time)
			}
		})
	}
	st := e.Stats()
	if st.Requests != uint64(len(tests)) || st.Bytes == 0 || st.ResponseHits == 0 || st.BlockMisses == 0 || st.BlockHits == 0 {
		t.Fatalf("stats %+v after %d requests", st, len(tests))
	}

	// The health probe names the edge and is not counted as traffic.
	resp := get(t, e, "127.0.0.1", HealthPath)
	var h struct{ Peer string }
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Peer != e.ID().String() {
		t.Fatalf("health: HTTP %d %+v %v", resp.StatusCode, h, err)
	}
	if e.Stats().Requests != st.Requests {
		t.Fatal("the health probe was counted as a request")
	}
}
