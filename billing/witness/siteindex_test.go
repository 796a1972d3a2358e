package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/originapi"
)

// carOf returns a CARv1 of blocks under root.
func carOf(t *testing.T, root cid.Cid, blocks ...format.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{root}, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := w.Put(context.Background(), b.Cid().KeyString(), b.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// chain returns a DAG n links deep: n dag-pb nodes, each linking to the
// next, over a raw leaf; the root first.
func chain(t *testing.T, n int, salt string) []format.Node {
	t.Helper()
	var nd format.Node = mdag.NewRawNode([]byte("leaf " + salt))
	out := []format.Node{nd}
	for range n {
		pn := mdag.NodeWithData([]byte(salt))
		pn.SetCidBuilder(mdag.V1CidPrefix())
		if err := pn.AddNodeLink("", nd); err != nil {
			t.Fatal(err)
		}
		out = append(out, pn)
		nd = pn
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// indexOrigin serves a billing log uploading each root, and per root its
// CAR or an HTTP status; it counts the CAR requests per root.
type indexOrigin struct {
	pub    string
	mu     sync.Mutex
	cars   map[string][]byte
	status map[string]int
	asked  map[string]int
	events []originapi.BillingEvent
}

func (io *indexOrigin) serve(root cid.Cid, body []byte, status int) {
	io.mu.Lock()
	defer io.mu.Unlock()
	r := root.String()
	if io.cars[r] == nil && io.status[r] == 0 {
		io.events = append(io.events, originapi.BillingEvent{ID: int64(len(io.events) + 1), Kind: originapi.EventUpload, Root: r,
			Publisher: io.pub, At: t0})
	}
	io.cars[r], io.status[r] = body, status
}

func (io *indexOrigin) askedFor(root cid.Cid) int {
	io.mu.Lock()
	defer io.mu.Unlock()
	return io.asked[root.String()]
}

// newIndexOrigin starts an indexOrigin.
func newIndexOrigin(t *testing.T) (*indexOrigin, string) {
	keys := testKeys(t, 2)
	origin := keys[0]
	io := &indexOrigin{pub: keys[1].ID.String(), cars: map[string][]byte{}, status: map[string]int{}, asked: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.mu.Lock()
		defer io.mu.Unlock()
		switch {
		case r.URL.Path == "/healthz":
			json.NewEncoder(w).Encode(map[string]string{"peer_id": origin.ID.String()})
		case r.URL.Path == "/api/v1/billing/log":
			json.NewEncoder(w).Encode(signedLog(t, origin, r, io.events))
		case strings.HasPrefix(r.URL.Path, "/ipfs/"):
			root := strings.TrimPrefix(r.URL.Path, "/ipfs/")
			io.asked[root]++
			if st := io.status[root]; st != 0 {
				http.Error(w, "no", st)
				return
			}
			w.Write(io.cars[root])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return io, srv.URL
}

// TestOriginContentUnindexable: the origin's answer for a site's CAR, and
// the shape of the DAG it serves, decide whether billing refuses the
// site's records as unindexable (4xx, DAGs beyond the origin's limits) or
// could not tell now (5xx, a CAR cut short); either is remembered, an
// unindexable root with a backoff of 1 min doubling to 1 h.
func TestOriginContentUnindexable(t *testing.T) {
	io, url := newIndexOrigin(t)
	var (
		clockMu sync.Mutex
		now     = t0
	)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	o := NewOriginContent(url, nil, WithClock(clock))
	serve := func(root cid.Cid, body []byte, status int) {
		io.serve(root, body, status)
		o.mu.Lock()
		o.logAt = time.Time{} // read the log again at the next miss, within the second
		o.mu.Unlock()
	}

	deepOK, deep := chain(t, maxIndexDepth, "ok"), chain(t, maxIndexDepth+1, "deep")
	wide := mdag.NodeWithData(nil)
	wide.SetCidBuilder(mdag.V1CidPrefix())
	for i := range maxIndexLinks + 1 {
		if err := wide.AddRawLink("", &format.Link{Cid: mdag.NewRawNode([]byte{byte(i), byte(i >> 8)}).Cid()}); err != nil {
			t.Fatal(err)
		}
	}
	inline := mdag.NodeWithData([]byte("inline"))
	inline.SetCidBuilder(mdag.V1CidPrefix())
	idHash, err := mh.Sum([]byte("inlined"), mh.IDENTITY, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := inline.AddRawLink("x", &format.Link{Cid: cid.NewCidV1(cid.Raw, idHash)}); err != nil {
		t.Fatal(err)
	}
	site := chain(t, 2, "site")
	whole := carOf(t, site[0].Cid(), site...)
	tests := []struct {
		name   string
		nodes  []format.Node // the DAG, root first
		body   []byte        // the CAR served; nil: of nodes
		status int
		reason billingapi.Reason // "": transient; "ok": indexed
	}{
		{"512 deep: indexed", deepOK, nil, 0, "ok"},
		{"an identity link the CAR does not carry: indexed", []format.Node{inline}, nil, 0, "ok"},
		{"513 deep", deep, nil, 0, billingapi.ReasonUnindexable},
		{"513 deep, cut short past the limit", deep, carOf(t, deep[0].Cid(), deep[:len(deep)-1]...), 0, billingapi.ReasonUnindexable},
		{"too many links", []format.Node{wide}, nil, 0, billingapi.ReasonUnindexable},
		{"404", chain(t, 1, "404"), nil, http.StatusNotFound, billingapi.ReasonUnindexable},
		{"410", chain(t, 1, "410"), nil, http.StatusGone, billingapi.ReasonUnindexable},
		{"413", chain(t, 1, "413"), nil, http.StatusRequestEntityTooLarge, billingapi.ReasonUnindexable},
		{"422", chain(t, 1, "422"), nil, http.StatusUnprocessableEntity, billingapi.ReasonUnindexable},
		{"500", chain(t, 1, "500"), nil, http.StatusInternalServerError, ""},
		{"503", chain(t, 1, "503"), nil, http.StatusServiceUnavailable, ""},
		{"429", chain(t, 1, "429"), nil, http.StatusTooManyRequests, ""},
		{"a block missing", site, carOf(t, site[0].Cid(), site[0], site[2]), 0, ""},
		{"cut mid-block", site, whole[:len(whole)-3], 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.nodes[0].Cid()
			body := tc.body
			if body == nil && tc.status == 0 {
				body = carOf(t, root, tc.nodes...)
			}
			serve(root, body, tc.status)
			_, err := o.Object(context.Background(), "", root.String(), root.String())
			var re *billingapi.RejectError
			switch tc.reason {
			case "ok":
				if err != nil {
					t.Fatalf("indexing: %v", err)
				}
				return
			case "":
				if err == nil || errors.As(err, &re) {
					t.Fatalf("%v, want a transient error", err)
				}
			default:
				if !errors.As(err, &re) || re.Reason != tc.reason {
					t.Fatalf("%v, want refused as %s", err, tc.reason)
				}
			}
			// Remembered: no second fetch at once.
			asked := io.askedFor(root)
			if _, err2 := o.Object(context.Background(), "", root.String(), root.String()); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("asked again: %v, want %v", err2, err)
			}
			if io.askedFor(root) != asked {
				t.Fatalf("the CAR was fetched again at once")
			}
		})
	}

	// The backoff of an unindexable root: 1 min, then 2, 4, … 1 h; a root
	// the origin serves whole again is indexed and forgotten as failed.
	t.Run("backoff", func(t *testing.T) {
		root := chain(t, 1, "backoff")
		r := root[0].Cid()
		serve(r, nil, http.StatusUnprocessableEntity)
		ask := func() error {
			_, err := o.Object(context.Background(), "", r.String(), r.String())
			return err
		}
		ask()
		for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
			32 * time.Minute, time.Hour, time.Hour} {
			before := io.askedFor(r)
			advance(wait - time.Second)
			if ask(); io.askedFor(r) != before {
				t.Fatalf("step %d: asked %s after the last refusal, before the backoff of %s", i, wait-time.Second, wait)
			}
			advance(time.Second)
			if err := ask(); !isUnindexable(err) || io.askedFor(r) != before+1 {
				t.Fatalf("step %d: %v, asked %d times; want asked again once the %s backoff passed", i, err, io.askedFor(r)-before, wait)
			}
		}
		io.serve(r, carOf(t, r, root...), 0)
		advance(time.Hour)
		if err := ask(); err != nil {
			t.Fatalf("served whole again: %v", err)
		}
		o.mu.Lock()
		failed := o.failed[r.String()]
		o.mu.Unlock()
		if failed != nil {
			t.Fatalf("indexed root still remembered as failed: %+v", failed)
		}
	})

	// A transient failure is asked again after 30 s.
	t.Run("transient retried", func(t *testing.T) {
		root := chain(t, 1, "transient")
		r := root[0].Cid()
		serve(r, nil, http.StatusServiceUnavailable)
		if _, err := o.Object(context.Background(), "", r.String(), r.String()); err == nil || isUnindexable(err) {
			t.Fatalf("503: %v", err)
		}
		io.serve(r, carOf(t, r, root...), 0)
		advance(transientBackoff - time.Second)
		if _, err := o.Object(context.Background(), "", r.String(), r.String()); err == nil {
			t.Fatal("asked again before 30 s")
		}
		advance(time.Second)
		if _, err := o.Object(context.Background(), "", r.String(), r.String()); err != nil {
			t.Fatalf("after 30 s, served whole: %v", err)
		}
	})

	// A block alone (the router's probe) is found in a site other than an
	// unindexable one, which is passed over.
	t.Run("probe passes over unindexable sites", func(t *testing.T) {
		io, url := newIndexOrigin(t)
		o := NewOriginContent(url, nil)
		poison := chain(t, 1, "poison")
		io.serve(poison[0].Cid(), nil, http.StatusUnprocessableEntity) // uploaded first
		io.serve(site[0].Cid(), whole, 0)
		leaf := site[len(site)-1].Cid()
		if obj, err := o.Object(context.Background(), "", "", leaf.String()); err != nil || obj.Root != site[0].Cid().String() {
			t.Fatalf("block alone: %+v, %v", obj, err)
		}
	})
}
