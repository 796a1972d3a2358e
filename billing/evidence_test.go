package billing

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// fakeRouter is the DNS router as billing's witness: per edge and epoch,
// the epoch byte counter of its heartbeats, the bytes of the router's
// probes and the demand its answers sent the edge.
type fakeRouter struct {
	mu    sync.Mutex
	edges map[string]*dnsrouteapi.EdgeInfo
	fail  error
}

func newFakeRouter() *fakeRouter { return &fakeRouter{edges: map[string]*dnsrouteapi.EdgeInfo{}} }

func (r *fakeRouter) Edges(ctx context.Context) ([]dnsrouteapi.EdgeInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	var out []dnsrouteapi.EdgeInfo
	for _, e := range r.edges {
		c := *e
		c.Epochs = slices.Clone(e.Epochs)
		c.Demand = slices.Clone(e.Demand)
		out = append(out, c)
	}
	return out, nil
}

func (r *fakeRouter) edge(id peer.ID) *dnsrouteapi.EdgeInfo {
	e := r.edges[id.String()]
	if e == nil {
		e = &dnsrouteapi.EdgeInfo{Peer: id.String(), Healthy: true}
		r.edges[id.String()] = e
	}
	return e
}

// counter sets the epoch byte counter id's heartbeats reported for epoch.
func (r *fakeRouter) counter(id peer.ID, epoch int64, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.edge(id)
	for i := range e.Epochs {
		if e.Epochs[i].Epoch == epoch {
			e.Epochs[i].Bytes, e.Epochs[i].Closed = n, true
			return
		}
	}
	e.Epochs = append(e.Epochs, dnsrouteapi.EpochBytes{Epoch: epoch, Bytes: n, Closed: true})
}

func (r *fakeRouter) epochDemand(id peer.ID, epoch int64) *dnsrouteapi.EpochDemand {
	e := r.edge(id)
	for i := range e.Demand {
		if e.Demand[i].Epoch == epoch {
			return &e.Demand[i]
		}
	}
	e.Demand = append(e.Demand, dnsrouteapi.EpochDemand{Epoch: epoch})
	return &e.Demand[len(e.Demand)-1]
}

// demand sets the client units the router handed id to for site in
// epoch, first and later in its answers.
func (r *fakeRouter) demand(id peer.ID, epoch int64, site string, first, other uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.epochDemand(id, epoch)
	for i := range d.Sites {
		if d.Sites[i].Site == site {
			d.Sites[i].First, d.Sites[i].Other = first, other
			return
		}
	}
	d.Sites = append(d.Sites, dnsrouteapi.SiteDemand{Site: site, First: first, Other: other})
}

// probes sets the bytes of the router's probes of id in epoch.
func (r *fakeRouter) probes(id peer.ID, epoch int64, n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epochDemand(id, epoch).ProbeBytes = n
}

// admit admits the edges with the operator's key, as of a day before
// the clock (tests back-date their batches).
func (tl *testLedger) admit(t testing.TB, edges ...*identity.Key) {
	t.Helper()
	now := tl.clock()
	tl.setNow(now.Add(-24 * time.Hour))
	defer tl.setNow(now)
	for _, k := range edges {
		env := mustSign(t, tl.operator, billingapi.TypeAdmission, billingapi.Admission{Edge: k.ID.String(), Nonce: "admit-" + k.ID.String()})
		if _, err := tl.Admit(context.Background(), env); err != nil {
			t.Fatal(err)
		}
	}
}

// vouch gives the router's evidence for an honest edge in epoch: its
// heartbeats counted served bytes, and clients were sent to it for each
// site (9 units: enough for 18 times the site; fewer than
// minReferenceUnits, so two vouched edges do not yet bound each other).
func (tl *testLedger) vouch(edge peer.ID, epoch int64, served uint64, sites ...string) {
	tl.router.counter(edge, epoch, served)
	for _, s := range sites {
		tl.router.demand(edge, epoch, s, 9, 0)
	}
}

// SiteBytes is the bytes of the site whose root (or name) is root.
func (f *fakeContent) SiteBytes(ctx context.Context, root string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, objs := range f.objects {
		if f.roots[n] == root || (f.roots[n] == "" && n == root) {
			var sum int64
			for _, size := range objs {
				sum += size
			}
			return sum, nil
		}
	}
	return 0, reject(billingapi.ReasonUnpublished, "root %s is not published", root)
}

var _ Sizer = (*fakeContent)(nil)

// TestEdgeBound: what an admitted edge is paid for an epoch is what it
// claims, bounded per site by the demand the router sent it (F × the
// site's bytes per client unit, later places counting half), plus the
// bytes of probes, and in all by its heartbeats' epoch counter.
func TestEdgeBound(t *testing.T) {
	const site = 10_000 // bytes of the blog's DAG: c1 4000 + c2 6000
	tests := []struct {
		name    string
		claims  []int64 // bytes of records of blog (c2 when > 4000)
		cidKey  int64   // bytes of a record by root (no name), key cid:…
		counter uint64
		first   uint32
		other   uint32
		cidUnit uint32 // first units for the cid key
		probes  uint64 // the router's probe bytes
		billing int64  // billing's prober's bytes
		want    int64
		reasons []billingapi.Reason
	}{
		{name: "within demand and counter", claims: []int64{4000, 6000}, counter: 10_000, first: 1, want: 10_000},
		{name: "one unit fetches the site twice at most", claims: []int64{6000, 6000, 6000, 6000}, counter: 1 << 20, first: 1, want: 2 * site,
			reasons: []billingapi.Reason{billingapi.ReasonOverDemand}},
		{name: "later places count half", claims: []int64{6000, 6000, 6000, 6000}, counter: 1 << 20, other: 1, want: site,
			reasons: []billingapi.Reason{billingapi.ReasonOverDemand}},
		{name: "no client sent: nothing", claims: []int64{4000}, counter: 4000, want: 0,
			reasons: []billingapi.Reason{billingapi.ReasonOverDemand}},
		{name: "probes fill the excess", claims: []int64{4000}, counter: 4000, probes: 1000, billing: 500, want: 1500,
			reasons: []billingapi.Reason{billingapi.ReasonOverDemand}},
		{name: "counter bounds the total", claims: []int64{4000, 6000}, counter: 7000, first: 1, want: 7000,
			reasons: []billingapi.Reason{billingapi.ReasonOverCounter}},
		{name: "no counter: nothing", claims: []int64{4000, 6000}, first: 5, want: 0,
			reasons: []billingapi.Reason{billingapi.ReasonNoCounter}},
		{name: "by CID, with demand for that CID", cidKey: 6000, counter: 6000, cidUnit: 1, want: 6000},
		{name: "by CID, demand only for the name", cidKey: 6000, counter: 6000, first: 1, want: 0,
			reasons: []billingapi.Reason{billingapi.ReasonOverDemand}},
	}
	for _, dsn := range []string{""} {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				tl := newTestLedger(t, dsn, Config{PricePerGiBServed: GiB})
				pub, edge := testkit.Key(t, 1), testkit.Key(t, 2)
				tl.content.publish("blog", pub.ID, map[string]int64{"c1": 4000, "c2": 6000})
				tl.content.roots["blog"] = testRoot
				tl.admit(t, edge)
				e0 := t0.Unix() - 60
				var recs []billingapi.Record
				for i, n := range tc.claims {
					c := "c1"
					if n > 4000 {
						c = "c2"
					}
					recs = append(recs, rec(uint64(i+1), "blog", c, n, e0))
				}
				if tc.cidKey > 0 {
					r := rec(100, "", "c2", tc.cidKey, e0)
					r.Root = testRoot
					recs = append(recs, r)
				}
				if res, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, recs), netip.Addr{}); err != nil || res.Accepted != len(recs) {
					t.Fatalf("batch: %+v, %v", res, err)
				}
				if tc.counter > 0 {
					tl.router.counter(edge.ID, e0, tc.counter)
				}
				if tc.first+tc.other > 0 {
					tl.router.demand(edge.ID, e0, "name:blog", tc.first, tc.other)
				}
				if tc.cidUnit > 0 {
					tl.router.demand(edge.ID, e0, "cid:"+testRoot, tc.cidUnit, 0)
				}
				if tc.probes > 0 {
					tl.router.probes(edge.ID, e0, tc.probes)
				}
				if tc.billing > 0 {
					if err := tl.addProbeBytes(ctx, edge.ID.String(), e0, tc.billing); err != nil {
						t.Fatal(err)
					}
				}
				tl.setNow(t0.Add(time.Minute))
				if _, err := tl.Settle(ctx); err != nil {
					t.Fatal(err)
				}
				st, err := tl.Statement(ctx, edge.ID.String())
				if err != nil {
					t.Fatal(err)
				}
				var got []billingapi.Reason
				var refused int64
				for _, r := range st.Rejected {
					got = append(got, r.Reason)
					refused += r.Bytes
				}
				var claimed int64
				for _, r := range recs {
					claimed += r.Bytes
				}
				if st.Balance != tc.want || !slices.Equal(got, tc.reasons) || st.Balance+refused != claimed {
					t.Fatalf("paid %d, refused %v (%d bytes) of %d claimed; want %d paid, refused %v",
						st.Balance, got, refused, claimed, tc.want, tc.reasons)
				}
				if total, err := tl.Total(ctx); err != nil || total != 0 {
					t.Fatalf("sum of balances %d, %v", total, err)
				}
			})
		}
	}
}

// testRoot is a CIDv1 (base32) standing for a site's root in tests.
const testRoot = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

// TestAdmission: only the operator admits edges; an admission resent is
// applied once, a nonce reused for another is a conflict; a revoked edge
// is not paid for epochs after its revocation, nor are reads it signs.
func TestAdmission(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{})
	srv := newHTTPLedger(t, tl)
	c := billingapi.NewClient(srv, nil)
	edge, stranger := testkit.Key(t, 1), testkit.Key(t, 2)
	if _, err := c.Admit(ctx, stranger, edge.ID.String(), false, "n1"); err == nil || !strings.Contains(err.Error(), "bad_signature") {
		t.Fatalf("admission signed by another key: %v", err)
	}
	if _, err := c.Admit(ctx, tl.operator, "not a peer ID", false, "n0"); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("admission of a malformed ID: %v", err)
	}
	for range 2 {
		a, err := c.Admit(ctx, tl.operator, edge.ID.String(), false, "n1")
		if err != nil || a.Edge != edge.ID.String() || !a.Since.Equal(t0) || a.Revoked != nil {
			t.Fatalf("admission: %+v, %v", a, err)
		}
	}
	if _, err := c.Admit(ctx, tl.operator, stranger.ID.String(), false, "n1"); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("nonce reused for another edge: %v", err)
	}
	if list, err := c.Admitted(ctx); err != nil || len(list) != 1 || list[0].Edge != edge.ID.String() {
		t.Fatalf("admitted: %+v, %v", list, err)
	}
	if a, err := c.Account(ctx, edge.ID.String()); err != nil || a.Kind != "edge" || a.Balance != 0 {
		t.Fatalf("account of an admitted edge: %+v, %v", a, err)
	}
	tl.setNow(t0.Add(2 * time.Minute))
	if a, err := c.Admit(ctx, tl.operator, edge.ID.String(), true, "n2"); err != nil || a.Revoked == nil || !a.Revoked.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("revocation: %+v, %v", a, err)
	}
	if list, err := c.Admitted(ctx); err != nil || len(list) != 0 {
		t.Fatalf("admitted after the revocation: %+v, %v", list, err)
	}
	tests := []struct {
		epoch int64
		want  billingapi.Reason
	}{
		{t0.Unix(), ""}, // served while admitted
		{t0.Unix() + 120, billingapi.ReasonNotAdmitted},
	}
	tl.content.publish("blog", testkit.Key(t, 3).ID, map[string]int64{"c": 10})
	tl.setNow(t0.Add(3 * time.Minute))
	for i, tc := range tests {
		_, err := tl.IngestBatch(ctx, signBatch(t, edge, tc.epoch, uint64(i+1), []billingapi.Record{rec(uint64(i+1), "blog", "c", 10, tc.epoch)}), netip.Addr{})
		if reasonOf(err) != tc.want {
			t.Errorf("batch of epoch %d: %v, want %q", tc.epoch, err, tc.want)
		}
	}
	// A read order it signs after its revocation earns nothing.
	sp := testkit.Key(t, 4)
	tl.content.shards["s1"] = testkit.Key(t, 3).ID
	res, err := tl.IngestClaim(ctx, mustSign(t, sp, billingapi.TypeClaim, billingapi.Claim{Peer: sp.ID.String(), Orders: []billingapi.ClaimedOrder{
		{ID: 1, Order: readOrder(t, edge, sp.ID.String(), "s1", "late", 10, t0.Add(3*time.Minute))}}}))
	if got := reasonsOf(res, err); !slices.Equal(got, []billingapi.Reason{billingapi.ReasonUnknownReader}) {
		t.Fatalf("order of a revoked edge: %v", got)
	}
}

// TestSettlementWaitsForEvidence: an epoch is settled only once the
// router's evidence was read after its settle delay; with the router
// unreachable it waits, up to DemandWait, then settles and refuses what
// nothing bounds as no_demand_evidence.
func TestSettlementWaitsForEvidence(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB, DemandWait: 10 * time.Minute})
	pub, edge := testkit.Key(t, 1), testkit.Key(t, 2)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.admit(t, edge)
	e0 := t0.Unix()
	if _, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "c", 100, e0)}), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	tl.router.fail = errors.New("connection refused")
	tl.setNow(t0.Add(2 * time.Minute))
	if res, err := tl.Settle(ctx); err != nil || len(res.Epochs) != 0 {
		t.Fatalf("settle with the router down: %+v, %v; want nothing settled", res, err)
	}
	tl.setNow(t0.Add(11 * time.Minute))
	res, err := tl.Settle(ctx)
	if err != nil || len(res.Epochs) == 0 || res.Epochs[0] != e0 || res.Paid != 0 {
		t.Fatalf("settle after the demand wait: %+v, %v", res, err)
	}
	st, err := tl.Statement(ctx, edge.ID.String())
	if err != nil || len(st.Rejected) != 1 || st.Rejected[0].Reason != billingapi.ReasonNoDemandEvidence || st.Rejected[0].Bytes != 100 {
		t.Fatalf("statement: %+v, %v", st, err)
	}
	// With the router back, later epochs are paid as its evidence says.
	tl.router.fail = nil
	e1 := t0.Unix() + 660
	if _, err := tl.IngestBatch(ctx, signBatch(t, edge, e1, 2, []billingapi.Record{rec(2, "blog", "c", 100, e1)}), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	tl.vouch(edge.ID, e1, 100, "name:blog")
	tl.setNow(time.Unix(e1+150, 0))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if a, err := tl.Account(ctx, edge.ID.String()); err != nil || a.Balance != 100 {
		t.Fatalf("paid %+v, %v; want 100", a, err)
	}
}

// TestCaptureEvidenceKeepsHighest: billing keeps the highest figures the
// router ever said of an edge's epoch (a restarted router starts again
// from zero), and nothing of settled epochs.
func TestCaptureEvidenceKeepsHighest(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{})
	edge := testkit.Key(t, 1).ID
	e0 := t0.Unix()
	tl.router.counter(edge, e0, 500)
	tl.router.demand(edge, e0, "name:blog", 3, 2)
	tl.router.probes(edge, e0, 70)
	if err := tl.CaptureEvidence(ctx); err != nil {
		t.Fatal(err)
	}
	tl.router.counter(edge, e0, 100) // the router restarted
	tl.router.demand(edge, e0, "name:blog", 1, 0)
	tl.router.probes(edge, e0, 0)
	if err := tl.CaptureEvidence(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := tl.evidenceOf(ctx, tl.db, e0)
	if err != nil {
		t.Fatal(err)
	}
	e := ev[edge.String()]
	if e == nil || e.counter != 500 || e.routerProbes != 70 || e.demand["name:blog"] != [2]int64{3, 2} {
		t.Fatalf("evidence %+v", e)
	}
}

// addrs sets the addresses id's heartbeats list, and those the router
// reached it at.
func (r *fakeRouter) addrs(id peer.ID, own, verified []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.edge(id)
	e.Addrs, e.Verified = own, verified
}

// TestSelfTraffic: requests from the edge's own networks (loopback, the
// address its batch came from, the addresses its heartbeats list) are the
// edge's own traffic, refused as self_dealing, unless in a shared prefix
// (a devnet's 127.0.0.0/24); requests from an address the router reached
// another edge at are that edge fetching through this one (a proxy),
// refused as edge_client: the client bytes are the proxy's to claim.
func TestSelfTraffic(t *testing.T) {
	ctx := context.Background()
	salt := bytes.Repeat([]byte{7}, billingapi.SaltSize) // signBatch's
	tests := []struct {
		name   string
		shared bool
		client string
		from   string
		want   billingapi.Reason
	}{
		{"a client elsewhere", false, "192.0.2.1", "198.51.100.7", ""},
		{"the edge's heartbeat address on loopback", true, "127.1.0.1", "127.0.0.1", billingapi.ReasonSelfDealing},
		{"any loopback address outside the shared /24", true, "127.9.9.9", "127.0.0.1", billingapi.ReasonSelfDealing},
		{"the shared devnet /24", true, "127.0.0.1", "127.0.0.1", ""},
		{"127.0.0.1 with no shared prefix", false, "127.0.0.1", "198.51.100.7", billingapi.ReasonSelfDealing},
		{"::1", true, "::1", "127.0.0.1", billingapi.ReasonSelfDealing},
		{"the edge's verified address's /24", false, "198.51.100.9", "192.0.2.200", billingapi.ReasonSelfDealing},
		{"the network the batch came from", false, "203.0.114.9", "203.0.114.7", billingapi.ReasonSelfDealing},
		{"another edge's verified address: a proxy", false, "203.0.113.9", "198.51.100.7", billingapi.ReasonEdgeClient},
		{"another edge on loopback: self, not a proxy", true, "127.2.0.1", "127.0.0.1", billingapi.ReasonSelfDealing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{PricePerGiBServed: GiB}
			if tc.shared {
				cfg.SharedPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")}
			}
			tl := newTestLedger(t, "", cfg)
			pub, edge, proxy, local := testkit.Key(t, 1), testkit.Key(t, 2), testkit.Key(t, 3), testkit.Key(t, 4)
			tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
			tl.admit(t, edge, proxy)
			tl.router.addrs(edge.ID, []string{"127.1.0.1", "198.51.100.7"}, []string{"198.51.100.7"})
			tl.router.addrs(proxy.ID, []string{"203.0.113.7"}, []string{"203.0.113.7"})
			tl.router.addrs(local.ID, []string{"127.2.0.1"}, []string{"127.2.0.1"})
			if err := tl.CaptureEvidence(ctx); err != nil {
				t.Fatal(err)
			}
			e0 := t0.Unix() - 60
			r := rec(1, "blog", "c", 100, e0)
			r.Client = billingapi.ClientHash(salt, netip.MustParseAddr(tc.client))
			res, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, []billingapi.Record{r}), netip.MustParseAddr(tc.from))
			if got := reasonsOf(res, err); !slices.Equal(got, []billingapi.Reason{tc.want}) && !(tc.want == "" && len(got) == 0) {
				t.Fatalf("reasons %v (%v), want %q", got, err, tc.want)
			}
			tl.vouch(edge.ID, e0, 100, "name:blog")
			tl.setNow(t0.Add(time.Minute))
			if _, err := tl.Settle(ctx); err != nil {
				t.Fatal(err)
			}
			want := int64(100)
			if tc.want != "" {
				want = 0
			}
			if a, err := tl.Account(ctx, edge.ID.String()); err != nil || a.Balance != want {
				t.Fatalf("edge paid %+v, %v; want %d", a, err, want)
			}
		})
	}
}

// TestEdgeBoundReference: once the other edges' clients give a reference,
// an edge is paid per client unit at most DemandHeadroom times what the
// others claimed per unit: an admitted insider claiming the whole site
// twice for every unit is cut to twice what honest clients fetched, and
// the honest edges are paid in full.
func TestEdgeBoundReference(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
	pub := testkit.Key(t, 1)
	honest1, honest2, insider := testkit.Key(t, 2), testkit.Key(t, 3), testkit.Key(t, 4)
	tl.content.publish("blog", pub.ID, map[string]int64{"c1": 4000, "c2": 6000}) // the site: 10,000 bytes
	tl.content.roots["blog"] = testRoot
	tl.admit(t, honest1, honest2, insider)
	e0 := t0.Unix() - 60
	const units = 30
	claims := map[*identity.Key]int64{honest1: 90_000, honest2: 90_000, insider: 2 * 10_000 * units} // 3,000 a unit; 20,000 a unit
	for i, k := range []*identity.Key{honest1, honest2, insider} {
		var recs []billingapi.Record
		for n := claims[k]; n > 0; n -= 6000 {
			recs = append(recs, rec(uint64(len(recs)+1), "blog", "c2", min(n, 6000), e0))
		}
		if res, err := tl.IngestBatch(ctx, signBatch(t, k, e0, uint64(i+1), recs), netip.Addr{}); err != nil || res.Accepted != len(recs) {
			t.Fatalf("batch: %+v, %v", res, err)
		}
		tl.router.counter(k.ID, e0, uint64(claims[k]))
		tl.router.demand(k.ID, e0, "name:blog", units, 0)
	}
	tl.setNow(t0.Add(time.Minute))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[*identity.Key]int64{honest1: 90_000, honest2: 90_000, insider: 2 * 3000 * units}
	for k, w := range want {
		if a, err := tl.Account(ctx, k.ID.String()); err != nil || a.Balance != w {
			t.Errorf("%s paid %+v, %v; want %d", k.ID, a, err, w)
		}
	}
	st, err := tl.Statement(ctx, insider.ID.String())
	if err != nil || len(st.Rejected) != 1 || st.Rejected[0].Reason != billingapi.ReasonOverDemand ||
		!strings.Contains(st.Rejected[0].Detail, "other edges' clients") {
		t.Fatalf("insider's statement: %+v, %v", st.Rejected, err)
	}
}
