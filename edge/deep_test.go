package edge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
)

// deepDAG is a chain of depth directories, each holding one directory
// named "a", the last one empty: /ipfs/{root}/a/a/…/a resolves depth
// links.
type deepDAG struct {
	root   cid.Cid
	blocks map[cid.Cid][]byte
}

func newDeepDAG(t testing.TB, depth int) *deepDAG {
	t.Helper()
	d := &deepDAG{blocks: map[cid.Cid][]byte{}}
	child := ft.EmptyDirNode()
	d.blocks[child.Cid()] = child.RawData()
	for range depth {
		dir := ft.EmptyDirNode()
		if err := dir.AddNodeLink("a", child); err != nil {
			t.Fatal(err)
		}
		d.blocks[dir.Cid()] = dir.RawData()
		child = dir
	}
	d.root = child.Cid()
	return d
}

// path is the content path depth links into the DAG.
func (d *deepDAG) path(depth int) string {
	return "/ipfs/" + d.root.String() + strings.Repeat("/a", depth)
}

// fakeOrigin serves the DAG's blocks as an origin's Trustless Gateway
// (no manifests, no names), counting block fetches and calling onFetch
// with the count before answering each.
type fakeOrigin struct {
	*httptest.Server
	fetches atomic.Int64
}

func newFakeOrigin(t testing.TB, d *deepDAG, onFetch func(n int64)) *fakeOrigin {
	t.Helper()
	o := &fakeOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/ipfs/")
		c, err := cid.Decode(rest)
		b, found := d.blocks[c]
		if !ok || err != nil || !found {
			http.NotFound(w, r)
			return
		}
		n := o.fetches.Add(1)
		if onFetch != nil {
			onFetch(n)
		}
		w.Write(b)
	}))
	t.Cleanup(o.Close)
	return o
}

// TestDeepPathBounded: a path over maxPathSegments is refused with a
// clear 4xx before any block is read, and a request over its block
// budget fails with 400; paths within both bounds are served.
func TestDeepPathBounded(t *testing.T) {
	d := newDeepDAG(t, maxPathSegments)
	tests := []struct {
		name   string
		depth  int   // links into the DAG
		budget int64 // block reads; 0: the default
		code   int
		read   bool // blocks were read
	}{
		// /ipfs/{cid} is two segments.
		{name: "at the bound", depth: maxPathSegments - 2, code: http.StatusMovedPermanently, read: true},
		{name: "one over the bound", depth: maxPathSegments - 1, code: http.StatusRequestURITooLong},
		{name: "far over the bound", depth: maxPathSegments, code: http.StatusRequestURITooLong},
		// Resolving 20 links reads every prefix of the path again: some
		// 230 block reads.
		{name: "over the block budget", depth: 20, budget: 100, code: http.StatusBadRequest, read: true},
		{name: "within the block budget", depth: 20, budget: 1000, code: http.StatusMovedPermanently, read: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newFakeOrigin(t, d, nil)
			e, err := New(context.Background(), Config{Origin: o.URL})
			if err != nil {
				t.Fatal(err)
			}
			if tc.budget > 0 {
				e.blockBudget = tc.budget
			}
			r := get(t, e, "127.0.0.1", d.path(tc.depth))
			got := body(t, r)
			if r.StatusCode != tc.code {
				t.Fatalf("HTTP %d, want %d: %.200s", r.StatusCode, tc.code, got)
			}
			if read := e.Stats().BlockMisses+e.Stats().BlockHits > 0; read != tc.read {
				t.Fatalf("blocks read: %v, want %v", read, tc.read)
			}
		})
	}
}

// TestWorkStopsWhenClientLeaves: when the client of a request for a deep
// path leaves (its context ends), the edge stops resolving at the next
// block: no block is fetched after the one in flight.
func TestWorkStopsWhenClientLeaves(t *testing.T) {
	const depth, leaveAt = maxPathSegments - 2, 10
	d := newDeepDAG(t, depth)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := newFakeOrigin(t, d, func(n int64) {
		if n == leaveAt {
			cancel() // the client leaves while this block is on its way
		}
	})
	e, err := New(context.Background(), Config{Origin: o.URL})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(ctx, "GET", "http://127.0.0.1"+d.path(depth), nil)
	e.ServeHTTP(httptest.NewRecorder(), req)
	if n := o.fetches.Load(); n != leaveAt {
		t.Fatalf("%d blocks fetched of the %d the path needs; want %d, the last one in flight when the client left",
			n, depth+1, leaveAt)
	}
}

// TestUpstreamFetchEndsWithItsRequests: a block fetch from an origin that
// does not answer ends when the last request waiting on it has left, and
// not before: a request that stays gets the block another left behind.
func TestUpstreamFetchEndsWithItsRequests(t *testing.T) {
	blk := mdag.NewRawNode([]byte("slow to come"))
	blockPath := "/ipfs/" + blk.Cid().String()
	tests := []struct {
		name     string
		stays    bool // a second request waits on the same fetch and stays
		canceled bool // the origin sees its request cancelled
	}{
		{name: "the only request leaves", canceled: true},
		{name: "one of two leaves", stays: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			arrived, release := make(chan struct{}, 1), make(chan struct{})
			upstreamCanceled := make(chan struct{}, 1)
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != blockPath {
					http.NotFound(w, r)
					return
				}
				arrived <- struct{}{}
				select {
				case <-r.Context().Done():
					upstreamCanceled <- struct{}{}
				case <-release:
					w.Write(blk.RawData())
				}
			}))
			defer o.Close()
			defer close(release)
			e, err := New(context.Background(), Config{Origin: o.URL})
			if err != nil {
				t.Fatal(err)
			}
			serve := func(ctx context.Context) <-chan *httptest.ResponseRecorder {
				done := make(chan *httptest.ResponseRecorder, 1)
				go func() {
					rec := httptest.NewRecorder()
					e.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "http://127.0.0.1"+blockPath, nil))
					done <- rec
				}()
				return done
			}
			ctx, leave := context.WithCancel(context.Background())
			first := serve(ctx)
			<-arrived
			var second <-chan *httptest.ResponseRecorder
			if tc.stays {
				second = serve(context.Background())
				for e.waiters(blk.Cid().KeyString()) < 2 {
					time.Sleep(time.Millisecond)
				}
			}
			leave()
			watchdog := time.After(30 * time.Second) // fails a hang, times nothing
			select {
			case <-first:
			case <-watchdog:
				t.Fatal("the request that left is still served")
			}
			if !tc.stays {
				select {
				case <-upstreamCanceled:
				case <-watchdog:
					t.Fatal("the upstream fetch went on after its only request left")
				}
				return
			}
			release <- struct{}{}
			if rec := <-second; rec.Code != http.StatusOK || rec.Body.String() != "slow to come" {
				t.Fatalf("the request that stayed: HTTP %d %q", rec.Code, rec.Body)
			}
			if len(upstreamCanceled) > 0 {
				t.Fatal("the upstream fetch was cancelled while a request waited on it")
			}
		})
	}
}

// waiters is how many requests wait on the upstream fetch of key.
func (e *Edge) waiters(key string) int {
	e.fetches.mu.Lock()
	defer e.fetches.mu.Unlock()
	if f, ok := e.fetches.m[key]; ok {
		return f.waiters
	}
	return 0
}
