package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

// logOrigin is an origin as billing's witness.OriginContent reads it: a
// billing log signed with the origin's key, and each site as a CAR. No
// root is striped (manifests are 404).
type logOrigin struct {
	key    *identity.Key
	mu     sync.Mutex
	events []originapi.BillingEvent
	cars   map[string][]byte
}

func newLogOrigin(t *testing.T) (*logOrigin, string) {
	t.Helper()
	lo := &logOrigin{key: testkit.Key(t, 60), cars: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lo.mu.Lock()
		defer lo.mu.Unlock()
		switch {
		case r.URL.Path == "/healthz":
			json.NewEncoder(w).Encode(map[string]string{"peer_id": lo.key.ID.String()})
		case r.URL.Path == "/api/v1/billing/log":
			since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
			page := originapi.BillingLog{Since: since, To: since, Last: int64(len(lo.events)), Events: []originapi.BillingEvent{}}
			if since < int64(len(lo.events)) {
				page.Events, page.To = lo.events[since:], page.Last
			}
			env, err := lo.key.Sign(originapi.TypeBillingLog, page)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			json.NewEncoder(w).Encode(env)
		case strings.HasPrefix(r.URL.Path, "/ipfs/") && lo.cars[strings.TrimPrefix(r.URL.Path, "/ipfs/")] != nil:
			w.Write(lo.cars[strings.TrimPrefix(r.URL.Path, "/ipfs/")])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return lo, srv.URL
}

// log appends an event at at.
func (lo *logOrigin) log(ev originapi.BillingEvent, at time.Time) {
	lo.mu.Lock()
	defer lo.mu.Unlock()
	ev.ID, ev.At = int64(len(lo.events)+1), at
	lo.events = append(lo.events, ev)
}

// upload logs p's upload of root.
func (lo *logOrigin) upload(root cid.Cid, p peer.ID, at time.Time) {
	lo.log(originapi.BillingEvent{Kind: originapi.EventUpload, Root: root.String(), Publisher: p.String()}, at)
}

// name logs the move of the human name, published by p's key, to root.
func (lo *logOrigin) name(human string, root cid.Cid, p peer.ID, at time.Time) {
	lo.log(originapi.BillingEvent{Kind: originapi.EventName, Name: human, IPNS: ipns.NameFromPeer(p).String(), Publisher: p.String(),
		Root: root.String(), TTLSeconds: 60}, at)
}

// site builds a directory over raw leaves, served as a CAR; it returns
// the root and the leaves.
func (lo *logOrigin) site(t *testing.T, files map[string][]byte) (cid.Cid, map[string]cid.Cid) {
	t.Helper()
	dir := mdag.NodeWithData(unixfs.FolderPBData())
	dir.SetCidBuilder(mdag.V1CidPrefix())
	leaves := map[string]cid.Cid{}
	var nodes []*mdag.RawNode
	for name, data := range files {
		leaf := mdag.NewRawNode(data)
		if err := dir.AddNodeLink(name, leaf); err != nil {
			t.Fatal(err)
		}
		leaves[name] = leaf.Cid()
		nodes = append(nodes, leaf)
	}
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{dir.Cid()}, car.WriteAsCarV1(true), car.AllowDuplicatePuts(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put(context.Background(), dir.Cid().KeyString(), dir.RawData()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := w.Put(context.Background(), n.Cid().KeyString(), n.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	lo.mu.Lock()
	lo.cars[dir.Cid().String()] = buf.Bytes()
	lo.mu.Unlock()
	return dir.Cid(), leaves
}

// TestAttacksContent: who pays for content is fixed by the origin's
// billing log. An unfunded key pointing a name of its own at another
// publisher's root does not become the payer of the root's traffic
// (name_hijack); records of a site's older root, served while edges may
// still serve it after the name moved, are paid (superseded_root_paid);
// records of a block inside a site, fetched alone as the router's probes
// do, are paid by the site's payer (probe_block_paid). Each case starts
// from the same honest traffic: the attacker gets exactly 0, the honest
// parties exactly their baseline (plus what the case adds), the balances
// sum to 0 and a second settlement pays nothing.
func TestAttacksContent(t *testing.T) { testAttacksContent(t, func(*testing.T) string { return "" }) }

// TestAttacksContentPostgres runs the same cases on PostgreSQL.
func TestAttacksContentPostgres(t *testing.T) { testAttacksContent(t, pgDSN) }

func testAttacksContent(t *testing.T, dsn func(*testing.T) string) {
	ctx := context.Background()
	const price = 3 << 30 // 3 units per byte served
	var (
		pub      = testkit.Key(t, 61)
		e1       = testkit.Key(t, 62)
		e2       = testkit.Key(t, 63)
		attacker = testkit.Key(t, 64) // unfunded
	)
	e0 := t0.Unix() - 60 // the epoch just closed
	at := func(sec int64) time.Time { return time.Unix(e0+sec, 0).UTC() }
	record := func(serial uint64, name string, c, root cid.Cid, n int64, sec int64) billingapi.Record {
		r := rec(serial, name, c.String(), n, e0)
		r.Time = (e0 + sec) * 1000
		if root.Defined() {
			r.Root = root.String()
		}
		return r
	}
	type world struct {
		tl      *testLedger
		lo      *logOrigin
		r1, r2  cid.Cid
		l1, l2  map[string]cid.Cid
		e1, e2  []billingapi.Record // each edge's records of e0
		before  func()              // more log events, before any batch
		extraE1 int64               // bytes the case adds to e1's and e2's pay
		extraE2 int64
	}
	newWorld := func(t *testing.T) *world {
		w := &world{}
		var url string
		w.lo, url = newLogOrigin(t)
		w.r1, w.l1 = w.lo.site(t, map[string][]byte{"index.html": bytes.Repeat([]byte("a"), 1000), "style.css": bytes.Repeat([]byte("b"), 3000)})
		w.r2, w.l2 = w.lo.site(t, map[string][]byte{"index.html": bytes.Repeat([]byte("c"), 1200), "style.css": bytes.Repeat([]byte("b"), 3000)})
		w.lo.upload(w.r1, pub.ID, at(-7200))
		w.lo.name("blog", w.r1, pub.ID, at(-7200))
		w.lo.upload(w.r2, pub.ID, at(-3600)) // uploaded, not named yet
		w.tl = newLedgerWith(t, dsn(t), Config{PricePerGiBServed: price}, witness.NewOriginContent(url, nil))
		if _, err := w.tl.Deposit(ctx, mustSign(t, w.tl.operator, billingapi.TypeDeposit,
			billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000, Nonce: "d1"})); err != nil {
			t.Fatal(err)
		}
		// The honest traffic: 2000 bytes by e1, 3000 by e2, all of R1 by name.
		w.e1 = []billingapi.Record{record(1, "blog", w.l1["index.html"], w.r1, 1000, 1), record(2, "blog", w.l1["index.html"], w.r1, 1000, 2)}
		w.e2 = []billingapi.Record{record(1, "blog", w.l1["style.css"], w.r1, 3000, 1)}
		return w
	}
	run := func(t *testing.T, w *world) map[string]int64 {
		t.Helper()
		if w.before != nil {
			w.before()
		}
		// Both edges are admitted, the router sent them clients and
		// probed them (the pool that pays blocks fetched alone).
		w.tl.admit(t, e1, e2)
		for _, k := range []*identity.Key{e1, e2} {
			w.tl.vouch(k.ID, e0, 1<<30, "name:blog")
			w.tl.router.probes(k.ID, e0, 1<<20)
		}
		for i, b := range []struct {
			k    *identity.Key
			recs []billingapi.Record
		}{{e1, w.e1}, {e2, w.e2}} {
			res, err := w.tl.IngestBatch(ctx, signBatch(t, b.k, e0, uint64(i+1), b.recs), netip.Addr{})
			if err != nil || res.Accepted != len(b.recs) || len(res.Rejected) != 0 {
				t.Fatalf("batch of edge %d: %+v, %v", i+1, res, err)
			}
		}
		w.tl.setNow(t0.Add(150 * time.Second))
		if res, err := w.tl.Settle(ctx); err != nil || len(res.Epochs) == 0 {
			t.Fatalf("settle: %+v, %v", res, err)
		}
		out := map[string]int64{}
		for _, id := range []string{pub.ID.String(), e1.ID.String(), e2.ID.String(), attacker.ID.String()} {
			st := balancedStatement(t, w.tl, id)
			out[id] = st.Balance
		}
		if total, err := w.tl.Total(ctx); err != nil || total != 0 {
			t.Fatalf("sum of all balances: %d, %v", total, err)
		}
		if res, err := w.tl.Settle(ctx); err != nil || res.Paid != 0 || len(res.Epochs) != 0 {
			t.Fatalf("second settle: %+v, %v", res, err)
		}
		return out
	}

	baseline := run(t, newWorld(t))
	if want := ServedAmount(2000, price); baseline[e1.ID.String()] != want || baseline[pub.ID.String()] != 1_000_000-ServedAmount(5000, price) {
		t.Fatalf("baseline %v: e1 %d, want %d", baseline, baseline[e1.ID.String()], want)
	}

	tests := []struct {
		name  string
		setup func(w *world)
	}{
		{"name_hijack", func(w *world) {
			// An unfunded key points a name of its own at P's root, after
			// P uploaded it; the honest traffic is unchanged.
			w.before = func() { w.lo.name("evil", w.r1, attacker.ID, at(-1800)) }
		}},
		{"superseded_root_paid", func(w *world) {
			// blog moves R1 -> R2 mid-epoch; e2 serves R1 after the move,
			// within the record's TTL (its cached name), and R2 after.
			w.before = func() { w.lo.name("blog", w.r2, pub.ID, at(30)) }
			w.e2 = append(w.e2, record(2, "blog", w.l1["index.html"], w.r1, 1000, 40), record(3, "blog", w.l2["index.html"], w.r2, 1200, 45),
				record(4, "blog", w.l1["style.css"], cid.Undef, 3000, 50))
			w.extraE2 = 1000 + 1200 + 3000
		}},
		{"probe_block_paid", func(w *world) {
			// The router's probe: /ipfs/<block inside the site>, no name,
			// the root being the block itself.
			w.e1 = append(w.e1, record(3, "", w.l1["style.css"], w.l1["style.css"], 3000, 5))
			w.extraE1 = 3000
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(w)
			got := run(t, w)
			want := map[string]int64{
				attacker.ID.String(): 0,
				e1.ID.String():       baseline[e1.ID.String()] + ServedAmount(w.extraE1, price),
				e2.ID.String():       baseline[e2.ID.String()] + ServedAmount(w.extraE2, price),
				pub.ID.String():      baseline[pub.ID.String()] - ServedAmount(w.extraE1, price) - ServedAmount(w.extraE2, price),
			}
			for id, v := range want {
				if got[id] != v {
					t.Errorf("%s: balance %d, want %d", id, got[id], v)
				}
			}
			st, err := w.tl.Statement(ctx, attacker.ID.String())
			if err != nil || len(st.Entries) != 0 {
				t.Fatalf("attacker's statement %+v, %v: want no entry at all", st, err)
			}
		})
	}
}
