package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// reasonsOf collects the refusal reasons of an ingest's outcome.
func reasonsOf(res any, err error) []billingapi.Reason {
	if err != nil {
		return []billingapi.Reason{reasonOf(err)}
	}
	var out []billingapi.Reason
	switch r := res.(type) {
	case *billingapi.BatchResult:
		for _, x := range r.Rejected {
			out = append(out, x.Reason)
		}
	case *billingapi.ClaimResult:
		for _, x := range r.Rejected {
			out = append(out, x.Reason)
		}
	}
	return out
}

// readOrder returns a read order of shard signed by key, issued at issued.
func readOrder(t testing.TB, key *identity.Key, peer, shard, serial string, n int64, issued time.Time) string {
	t.Helper()
	env, err := key.Sign(storageapi.TypeReadOrder, storageapi.ReadOrder{Peer: peer, Shard: shard, Length: n,
		Expires: issued.Add(storageapi.ReadOrderLifetime).UTC(), Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wrongFor is a Prober that finds wrong content at one URL.
type wrongFor string

func (w wrongFor) Probe(ctx context.Context, url, c string) (int64, error) {
	if url == string(w) {
		return 10, reject(billingapi.ReasonWrongContent, "%s served wrong bytes for %s", url, c)
	}
	return 0, nil
}

// TestAttacks feeds the ledger lies of every kind next to honest traffic:
// no lie is credited, each is refused with its reason (and shown in the
// liar's statement), and the honest parties are paid exactly.
func TestAttacks(t *testing.T) { testAttacks(t, "") }

// TestAttacksPostgres runs the same suite on PostgreSQL (see pgDSN).
func TestAttacksPostgres(t *testing.T) { testAttacks(t, pgDSN(t)) }

func testAttacks(t *testing.T, dsn string) {
	ctx := context.Background()
	const price = 3 << 30 // 3 units per byte served
	var (
		pub      = testkit.Key(t, 10)
		edge     = testkit.Key(t, 11)
		liar     = testkit.Key(t, 12)
		peerKey  = testkit.Key(t, 13)
		liarPeer = testkit.Key(t, 14)
		forger   = testkit.Key(t, 15)
		stranger = testkit.Key(t, 16)
		hbLiar   = testkit.Key(t, 17)
	)
	tl := newTestLedger(t, dsn, Config{PricePerGiBServed: price})
	tl.content.publish("blog", pub.ID, map[string]int64{"cidA": 1000, "cidB": 5000, "cidBig": 1 << 20})
	tl.content.shards["shard1"] = pub.ID
	e0 := t0.Unix() - 60 // the epoch just closed
	// The operator admitted the edges (liars included: the lies below
	// are an admitted edge's, or they would stop at admission); the DNS
	// router sent the honest edge clients and relays its heartbeats'
	// counter of the 6000 bytes it serves.
	tl.admit(t, edge, liar, pub, hbLiar)
	tl.vouch(edge.ID, e0, 6000, "name:blog")
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000, Nonce: "d1"})); err != nil {
		t.Fatal(err)
	}

	// Honest traffic: 6000 bytes served by edge, 12288 read from peer.
	honest := signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "cidA", 1000, e0), rec(2, "blog", "cidB", 5000, e0)})
	if res, err := tl.IngestBatch(ctx, honest, netip.Addr{}); err != nil || res.Accepted != 2 || len(res.Rejected) != 0 {
		t.Fatalf("honest batch: %+v, %v", res, err)
	}
	honestOrders := []billingapi.ClaimedOrder{
		{ID: 1, Order: readOrder(t, edge, peerKey.ID.String(), "shard1", "r1", 4096, t0)},
		{ID: 2, Order: readOrder(t, edge, peerKey.ID.String(), "shard1", "r2", 8192, t0)},
	}
	if res, err := tl.IngestClaim(ctx, mustSign(t, peerKey, billingapi.TypeClaim, billingapi.Claim{Peer: peerKey.ID.String(), Orders: honestOrders})); err != nil ||
		res.Accepted != 2 || len(res.Rejected) != 0 {
		t.Fatalf("honest claim: %+v, %v", res, err)
	}
	// A liar's batch that looks fine, for the prober to catch.
	probed := signBatch(t, liar, e0, 50, []billingapi.Record{rec(50, "blog", "cidA", 1000, e0)})
	probedBatch := mustOpen(t, probed)
	probedBatch.URL = "http://liar.invalid"
	probedBatch.MerkleRoot = billingapi.MerkleRoot(probedBatch.Records)
	probed = mustSign(t, liar, billingapi.TypeBatch, probedBatch)
	if res, err := tl.IngestBatch(ctx, probed, netip.Addr{}); err != nil || res.Accepted != 1 {
		t.Fatalf("liar's plausible batch: %+v, %v", res, err)
	}

	old := t0.Add(-10 * time.Minute) // orders issued long enough ago to judge their reader
	claim := func(k *identity.Key, orders ...billingapi.ClaimedOrder) func() (any, error) {
		return func() (any, error) {
			return tl.IngestClaim(ctx, mustSign(t, k, billingapi.TypeClaim, billingapi.Claim{Peer: k.ID.String(), Orders: orders}))
		}
	}
	batch := func(env *identity.Envelope, from string) func() (any, error) {
		return func() (any, error) {
			var a netip.Addr
			if from != "" {
				a = netip.MustParseAddr(from)
			}
			return tl.IngestBatch(ctx, env, a)
		}
	}
	tampered := signBatch(t, liar, e0, 2, []billingapi.Record{rec(3, "blog", "cidA", 10, e0)})
	tampered.Body = []byte(string(tampered.Body[:len(tampered.Body)-2]) + " }")
	impersonated := signBatch(t, forger, e0, 3, []billingapi.Record{rec(4, "blog", "cidA", 10, e0)})
	impersonated.Signer = edge.ID.String()
	wrongLength := func() *identity.Envelope {
		b := mustOpen(t, signBatch(t, liar, e0, 4, []billingapi.Record{rec(5, "blog", "cidA", 10, e0)}))
		b.Epoch, b.EpochSeconds = t0.Unix()-30, 30
		return mustSign(t, liar, billingapi.TypeBatch, b)
	}()
	ownNet := signBatch(t, liar, e0-60, 5, []billingapi.Record{func() billingapi.Record {
		r := rec(6, "blog", "cidA", 100, e0-60)
		r.Client = billingapi.ClientHash(make([]byte, billingapi.SaltSize), netip.MustParseAddr("203.0.113.9"))
		return r
	}()})
	ownNetBatch := mustOpen(t, ownNet)
	ownNetBatch.Salt = make([]byte, billingapi.SaltSize)
	ownNet = mustSign(t, liar, billingapi.TypeBatch, ownNetBatch)
	notFound := rec(7, "blog", "cidA", 100, e0-120)
	notFound.Status = 404
	unsigned := func() string {
		env, _ := identity.DecodeEnvelope(readOrder(t, edge, liarPeer.ID.String(), "shard1", "u1", 100, old))
		env.Sig = nil
		s, _ := env.Encode()
		return s
	}()

	tests := []struct {
		name    string
		account string // whose statement shows the refusal; "-" prefix: must not
		want    billingapi.Reason
		run     func() (any, error)
	}{
		// An envelope that does not verify is nobody's: the key it names
		// did not sign it, so its statement must not carry the refusal.
		{"tampered batch body", "-" + liar.ID.String(), billingapi.ReasonSignature, batch(tampered, "")},
		{"batch signed by another key", "-" + edge.ID.String(), billingapi.ReasonSignature, batch(impersonated, "")},
		{"batch for a reported epoch, other content", edge.ID.String(), billingapi.ReasonReplayBatch,
			batch(signBatch(t, edge, e0, 9, []billingapi.Record{rec(9, "blog", "cidB", 5000, e0)}), "")},
		{"batch reusing a sequence number", edge.ID.String(), billingapi.ReasonReplayBatch,
			batch(signBatch(t, edge, e0-60, 1, []billingapi.Record{rec(10, "blog", "cidB", 5000, e0-60)}), "")},
		{"replayed record serials", edge.ID.String(), billingapi.ReasonReplayRecord,
			batch(signBatch(t, edge, e0-120, 7, []billingapi.Record{rec(1, "blog", "cidA", 1000, e0-120)}), "")},
		{"epoch in the future", liar.ID.String(), billingapi.ReasonEpochFuture,
			batch(signBatch(t, liar, t0.Unix()+600, 11, []billingapi.Record{rec(11, "blog", "cidA", 10, t0.Unix()+600)}), "")},
		{"stale epoch", liar.ID.String(), billingapi.ReasonEpochStale,
			batch(signBatch(t, liar, e0-2*86400, 12, []billingapi.Record{rec(12, "blog", "cidA", 10, e0-2*86400)}), "")},
		{"other epoch length", liar.ID.String(), billingapi.ReasonEpochLength, batch(wrongLength, "")},
		{"record outside its epoch", liar.ID.String(), billingapi.ReasonRecordTime,
			batch(signBatch(t, liar, e0-180, 13, []billingapi.Record{rec(13, "blog", "cidA", 10, e0)}), "")},
		{"unpublished site", liar.ID.String(), billingapi.ReasonUnpublished,
			batch(signBatch(t, liar, e0-240, 14, []billingapi.Record{rec(14, "nope", "cidA", 10, e0-240)}), "")},
		{"unpublished object", liar.ID.String(), billingapi.ReasonUnpublished,
			batch(signBatch(t, liar, e0-300, 15, []billingapi.Record{rec(15, "blog", "cidZ", 10, e0-300)}), "")},
		{"inflated bytes", liar.ID.String(), billingapi.ReasonInflated,
			batch(signBatch(t, liar, e0-360, 16, []billingapi.Record{rec(16, "blog", "cidA", 1001, e0-360)}), "")},
		{"bytes for an error response", liar.ID.String(), billingapi.ReasonStatus,
			batch(signBatch(t, liar, e0-120, 17, []billingapi.Record{notFound}), "")},
		{"publisher's own edge", pub.ID.String(), billingapi.ReasonSelfDealing,
			batch(signBatch(t, pub, e0, 18, []billingapi.Record{rec(18, "blog", "cidB", 5000, e0)}), "")},
		{"requests from the edge's own network", liar.ID.String(), billingapi.ReasonSelfDealing, batch(ownNet, "203.0.113.7")},
		{"unsigned read order", liarPeer.ID.String(), billingapi.ReasonSignature, claim(liarPeer, billingapi.ClaimedOrder{ID: 1, Order: unsigned})},
		{"read order signed by an unknown key", liarPeer.ID.String(), billingapi.ReasonUnknownReader,
			claim(liarPeer, billingapi.ClaimedOrder{ID: 2, Order: readOrder(t, stranger, liarPeer.ID.String(), "shard1", "x1", 100, old)})},
		{"read order for another peer", liarPeer.ID.String(), billingapi.ReasonOrderPeer,
			claim(liarPeer, billingapi.ClaimedOrder{ID: 3, Order: readOrder(t, edge, peerKey.ID.String(), "shard1", "x2", 100, old)})},
		{"read order for an unknown shard", liarPeer.ID.String(), billingapi.ReasonUnknownShard,
			claim(liarPeer, billingapi.ClaimedOrder{ID: 4, Order: readOrder(t, edge, liarPeer.ID.String(), "shard9", "x3", 100, old)})},
		{"batch of an edge the operator did not admit", stranger.ID.String(), billingapi.ReasonNotAdmitted,
			batch(signBatch(t, stranger, e0, 80, []billingapi.Record{rec(80, "blog", "cidB", 5000, e0)}), "")},
		{"claim signed by another key", "-" + liarPeer.ID.String(), billingapi.ReasonSignature, func() (any, error) {
			env := mustSign(t, forger, billingapi.TypeClaim, billingapi.Claim{Peer: liarPeer.ID.String(), Orders: honestOrders})
			env.Signer = liarPeer.ID.String()
			return tl.IngestClaim(ctx, env)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.run()
			got := reasonsOf(res, err)
			if len(got) == 0 || slices.ContainsFunc(got, func(r billingapi.Reason) bool { return r != tc.want }) {
				t.Fatalf("got reasons %v (err %v), want only %s", got, err, tc.want)
			}
			account, hidden := strings.CutPrefix(tc.account, "-")
			st, err := tl.Statement(ctx, account)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool {
				return r.Reason == tc.want && (!hidden || r.Kind == "batch" || r.Kind == "claim")
			}); got == hidden {
				t.Fatalf("statement of %s shows %s: %v, want %v: %+v", account, tc.want, got, !hidden, st.Rejected)
			}
		})
	}

	// A read order claimed again by its peer (the answer to its claim was
	// lost) is credited once: counted as a duplicate, neither paid again
	// nor refused.
	if res, err := tl.IngestClaim(ctx, mustSign(t, peerKey, billingapi.TypeClaim,
		billingapi.Claim{Peer: peerKey.ID.String(), Nonce: "again", Orders: []billingapi.ClaimedOrder{honestOrders[0]}})); err != nil ||
		res.Accepted != 0 || res.Duplicates != 1 || len(res.Rejected) != 0 {
		t.Fatalf("claim sent again: %+v, %v", res, err)
	}
	// The identical honest batch, resent, is accepted once.
	if res, err := tl.IngestBatch(ctx, honest, netip.Addr{}); err != nil || !res.Duplicate || res.Accepted != 2 {
		t.Fatalf("resent batch: %+v, %v", res, err)
	}
	// The prober catches the liar's edge serving wrong bytes: it forfeits
	// the epoch.
	for i := 0; ; i++ {
		if _, err := tl.ProbeOnce(ctx, wrongFor("http://liar.invalid")); err != nil {
			t.Fatal(err)
		}
		st, err := tl.Statement(ctx, liar.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool { return r.Reason == billingapi.ReasonWrongContent && r.Epoch == e0 }) {
			break
		}
		if i > 500 {
			t.Fatal("the prober never probed the liar")
		}
	}

	// Admitted edges claiming beyond the evidence: each batch is accepted,
	// and settlement pays none of it.
	zeroHB, noDemand := testkit.Key(t, 18), testkit.Key(t, 19)
	tl.admit(t, zeroHB, noDemand)
	bounded := []struct {
		edge  *identity.Key
		epoch int64
		recs  int
		want  billingapi.Reason
	}{
		// A proxy the router sends clients to, its heartbeats carrying
		// no counter, claims 1.2 GB.
		{zeroHB, e0, 1200, billingapi.ReasonNoCounter},
		// Its heartbeats count every byte it claims, but the router sent
		// it no client.
		{noDemand, e0, 5, billingapi.ReasonOverDemand},
		// Its heartbeats counted 100 MiB in another epoch (a lifetime
		// counter would allow them again now), none in this one.
		{hbLiar, e0 - 60, 100, billingapi.ReasonNoCounter},
	}
	tl.router.demand(zeroHB.ID, e0, "name:blog", 5, 0)
	tl.router.counter(noDemand.ID, e0, 5<<20)
	tl.router.counter(hbLiar.ID, e0-120, 100<<20)
	tl.router.demand(hbLiar.ID, e0-60, "name:blog", 1000, 0)
	for i, b := range bounded {
		var recs []billingapi.Record
		for j := range b.recs {
			recs = append(recs, rec(uint64(3000+1000*i+j), "blog", "cidBig", 1<<20, b.epoch))
		}
		if res, err := tl.IngestBatch(ctx, signBatch(t, b.edge, b.epoch, uint64(90+i), recs), netip.Addr{}); err != nil || res.Accepted != b.recs {
			t.Fatalf("batch of %s: %+v, %v", b.want, res, err)
		}
	}

	tl.setNow(t0.Add(150 * time.Second))
	res, err := tl.Settle(ctx)
	if err != nil || len(res.Epochs) == 0 {
		t.Fatalf("settle: %+v, %v", res, err)
	}
	for _, b := range bounded {
		st, err := tl.Statement(ctx, b.edge.ID.String())
		if err != nil || !slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool { return r.Reason == b.want && r.Epoch == b.epoch }) {
			t.Errorf("statement of the %s edge: %+v, %v", b.want, st, err)
		}
	}
	wantEdge, wantPeer := ServedAmount(6000, price), ServedAmount(4096+8192, price)
	if wantEdge != 18000 || wantPeer != 3*12288 {
		t.Fatalf("price arithmetic: %d, %d", wantEdge, wantPeer)
	}
	balances := map[string]int64{
		edge.ID.String():     wantEdge,
		peerKey.ID.String():  wantPeer,
		pub.ID.String():      1_000_000 - wantEdge - wantPeer,
		liar.ID.String():     0,
		liarPeer.ID.String(): 0,
		hbLiar.ID.String():   0,
		zeroHB.ID.String():   0,
		noDemand.ID.String(): 0,
		TreasuryAccount:      -1_000_000,
	}
	for id, want := range balances {
		st, err := tl.Statement(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		var sum int64
		for _, e := range st.Entries {
			sum += e.Amount
		}
		if st.Balance != want || sum != want {
			t.Errorf("%s (%s): balance %d, entries sum %d, want %d", id, st.Kind, st.Balance, sum, want)
		}
	}
	if total, err := tl.Total(ctx); err != nil || total != 0 {
		t.Fatalf("sum of all balances: %d, %v", total, err)
	}
	// Settling again pays nothing more.
	if res, err := tl.Settle(ctx); err != nil || res.Paid != 0 || len(res.Epochs) != 0 {
		t.Fatalf("second settle: %+v, %v", res, err)
	}
	// The forfeited epoch and its late batches stay unpaid after settling.
	if _, err := tl.IngestBatch(ctx, signBatch(t, liar, e0-60, 60, []billingapi.Record{rec(60, "blog", "cidA", 10, e0-60)}), netip.Addr{}); reasonOf(err) != billingapi.ReasonEpochSettled {
		t.Fatalf("batch for a settled epoch: %v", err)
	}
}

func mustSign(t testing.TB, k *identity.Key, typ string, v any) *identity.Envelope {
	t.Helper()
	env, err := k.Sign(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func mustOpen(t testing.TB, env *identity.Envelope) *billingapi.Batch {
	t.Helper()
	b, _, err := billingapi.OpenBatch(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttacksUpstreamReads: an edge cannot serve striped content it never
// read from the storage peers. Records of a striped root that no read
// order of the edge backs, while storage peers claim other edges' reads
// of it, are held at settlement, then refused as no_upstream_reads after
// BackingWait; an honest edge whose read orders are claimed late is paid
// exactly in a later settlement; unstriped content and roots no claims
// flow for are not checked.
func TestAttacksUpstreamReads(t *testing.T) { testUpstreamReads(t, "") }

// TestAttacksUpstreamReadsPostgres runs the same cases on PostgreSQL.
func TestAttacksUpstreamReadsPostgres(t *testing.T) { testUpstreamReads(t, pgDSN(t)) }

func testUpstreamReads(t *testing.T, dsn string) {
	ctx := context.Background()
	const price = 3 << 30 // 3 units per byte served
	var (
		pub     = testkit.Key(t, 20)
		edge    = testkit.Key(t, 21) // the edge under test
		other   = testkit.Key(t, 22) // an honest edge whose reads are claimed
		peerKey = testkit.Key(t, 23)
	)
	e0 := t0.Unix() - 60
	const wait = 5 * time.Minute
	tests := []struct {
		name       string
		root       string // "" : the site is served from the origin
		striped    bool
		flowing    bool // other's reads of the root are claimed
		lateOrders bool // edge's own read orders are claimed after the first settlement
		deferred   bool // the first settlement holds edge's records
		paid       bool // edge is paid in the end, else refused
	}{
		{name: "edge claiming a striped root it never read", root: "rootS", striped: true, flowing: true,
			deferred: true, paid: false},
		{name: "honest edge whose read orders arrive an epoch late", root: "rootS", striped: true, flowing: true,
			lateOrders: true, deferred: true, paid: true},
		{name: "striped root no claims flow for yet (skipped)", root: "rootS", striped: true, paid: true},
		{name: "content not striped (skipped)", root: "rootU", flowing: true, paid: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if dsn != "" && i > 0 {
				dsn = pgDSN(t) // a fresh database per case
			}
			tl := newTestLedger(t, dsn, Config{PricePerGiBServed: price, BackingWait: wait})
			tl.content.publish("blog", pub.ID, map[string]int64{"cidA": 1000, "cidB": 5000})
			tl.content.roots["blog"] = tc.root
			tl.content.shards["shard1"], tl.content.shards["shard2"] = pub.ID, pub.ID
			if tc.striped {
				tl.content.striped[tc.root] = []string{"shard1", "shard2"}
			}
			if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000, Nonce: "d1"})); err != nil {
				t.Fatal(err)
			}
			tl.admit(t, edge, other)
			tl.vouch(edge.ID, e0, 6000, "name:blog")
			tl.vouch(other.ID, e0, 1000, "name:blog")
			if res, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "cidA", 1000, e0), rec(2, "blog", "cidB", 5000, e0)}), netip.Addr{}); err != nil || res.Accepted != 2 {
				t.Fatalf("edge's batch: %+v, %v", res, err)
			}
			if res, err := tl.IngestBatch(ctx, signBatch(t, other, e0, 1, []billingapi.Record{rec(1, "blog", "cidA", 1000, e0)}), netip.Addr{}); err != nil || res.Accepted != 1 {
				t.Fatalf("other edge's batch: %+v, %v", res, err)
			}
			claim := func(orders ...billingapi.ClaimedOrder) {
				t.Helper()
				res, err := tl.IngestClaim(ctx, mustSign(t, peerKey, billingapi.TypeClaim, billingapi.Claim{Peer: peerKey.ID.String(), Orders: orders}))
				if err != nil || res.Accepted != len(orders) {
					t.Fatalf("claim: %+v, %v", res, err)
				}
			}
			if tc.flowing {
				claim(billingapi.ClaimedOrder{ID: 1, Order: readOrder(t, other, peerKey.ID.String(), "shard1", "o1", 4096, t0)})
			}
			settle := func(at time.Time) {
				t.Helper()
				tl.setNow(at)
				if _, err := tl.Settle(ctx); err != nil {
					t.Fatal(err)
				}
			}
			statement := func() *billingapi.Statement {
				t.Helper()
				st, err := tl.Statement(ctx, edge.ID.String())
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			want := ServedAmount(6000, price)
			settle(t0.Add(time.Minute)) // settles e0
			st := statement()
			if tc.deferred {
				if st.Balance != 0 || len(st.Deferred) != 1 || st.Deferred[0].Bytes != 6000 || st.Deferred[0].Epoch != e0 {
					t.Fatalf("after the first settlement: balance %d, deferred %+v; want 0 and 6000 bytes held", st.Balance, st.Deferred)
				}
			} else if st.Balance != want || len(st.Deferred) != 0 {
				t.Fatalf("after the first settlement: balance %d, deferred %+v; want %d", st.Balance, st.Deferred, want)
			}
			if tc.lateOrders {
				claim(billingapi.ClaimedOrder{ID: 2, Order: readOrder(t, edge, peerKey.ID.String(), "shard2", "r1", 8192, t0)})
			}
			settle(t0.Add(2 * time.Minute)) // the next epoch: backed records are paid
			if tc.lateOrders {
				if st := statement(); st.Balance != want || len(st.Deferred) != 0 {
					t.Fatalf("after the read orders arrived: balance %d, deferred %+v; want %d", st.Balance, st.Deferred, want)
				}
			}
			settle(t0.Add(time.Minute + wait - time.Second)) // still held just before the bound
			if tc.deferred && !tc.paid {
				if st := statement(); st.Balance != 0 || len(st.Deferred) != 1 {
					t.Fatalf("before the bound: balance %d, deferred %+v", st.Balance, st.Deferred)
				}
			}
			settle(t0.Add(time.Minute + wait + time.Minute))
			st = statement()
			refused := slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool {
				return r.Reason == billingapi.ReasonNoUpstreamReads && r.Epoch == e0 && r.Bytes == 6000
			})
			var sum int64
			for _, e := range st.Entries {
				sum += e.Amount
			}
			switch {
			case len(st.Deferred) != 0:
				t.Fatalf("still held after the bound: %+v", st.Deferred)
			case tc.paid && (st.Balance != want || sum != want || refused):
				t.Fatalf("balance %d, entries %d, rejected %+v; want %d paid", st.Balance, sum, st.Rejected, want)
			case !tc.paid && (st.Balance != 0 || sum != 0 || !refused):
				t.Fatalf("balance %d, entries %d, rejected %+v; want nothing paid, refused as %s", st.Balance, sum, st.Rejected, billingapi.ReasonNoUpstreamReads)
			}
			if !tc.paid && counter(tl.metrics.backing.WithLabelValues("refused")) != 1 {
				t.Fatal("the refusal is not counted in the metrics")
			}
			if st, err := tl.Statement(ctx, other.ID.String()); err != nil || st.Balance != ServedAmount(1000, price) {
				t.Fatalf("other edge: %+v, %v", st, err)
			}
			if total, err := tl.Total(ctx); err != nil || total != 0 {
				t.Fatalf("sum of all balances: %d, %v", total, err)
			}
			// Settling again pays and refuses nothing more.
			if res, err := tl.Settle(ctx); err != nil || res.Paid != 0 {
				t.Fatalf("settle again: %+v, %v", res, err)
			}
		})
	}
}

// TestUpstreamHeldCrash: a settlement that dies while paying held records
// leaves them held and unpaid; the next one pays them exactly once.
func TestUpstreamHeldCrash(t *testing.T) {
	ctx := context.Background()
	const price = 3 << 30
	var (
		pub     = testkit.Key(t, 30)
		edge    = testkit.Key(t, 31)
		other   = testkit.Key(t, 32)
		peerKey = testkit.Key(t, 33)
	)
	var crash atomic.Bool
	tl := newTestLedger(t, "", Config{PricePerGiBServed: price, FaultHook: func(stage string) {
		if stage == "settle-mid" && crash.Swap(false) {
			panic("crash mid-settlement")
		}
	}})
	tl.content.publish("blog", pub.ID, map[string]int64{"cidA": 1000})
	tl.content.roots["blog"] = "rootS"
	tl.content.shards["shard1"] = pub.ID
	tl.content.striped["rootS"] = []string{"shard1"}
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000, Nonce: "d1"})); err != nil {
		t.Fatal(err)
	}
	e0 := t0.Unix() - 60
	tl.admit(t, edge, other)
	for i, k := range []*identity.Key{edge, other} {
		tl.vouch(k.ID, e0, 1000, "name:blog")
		if _, err := tl.IngestBatch(ctx, signBatch(t, k, e0, 1, []billingapi.Record{rec(uint64(i+1), "blog", "cidA", 1000, e0)}), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(k *identity.Key, serial string) {
		t.Helper()
		if _, err := tl.IngestClaim(ctx, mustSign(t, peerKey, billingapi.TypeClaim, billingapi.Claim{Peer: peerKey.ID.String(),
			Orders: []billingapi.ClaimedOrder{{ID: 1, Order: readOrder(t, k, peerKey.ID.String(), "shard1", serial, 100, t0)}}})); err != nil {
			t.Fatal(err)
		}
	}
	claim(other, "o1")
	tl.setNow(t0.Add(time.Minute))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	claim(edge, "e1")
	tl.setNow(t0.Add(2 * time.Minute))
	crash.Store(true)
	settleCrashing(t, tl)
	st, err := tl.Statement(ctx, edge.ID.String())
	if err != nil || st.Balance != 0 || len(st.Entries) != 0 || len(st.Deferred) != 1 {
		t.Fatalf("after the crash: %+v, %v; want unpaid and still held", st, err)
	}
	for range 2 {
		if _, err := tl.Settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := ServedAmount(1000, price)
	if st, err := tl.Statement(ctx, edge.ID.String()); err != nil || st.Balance != want || len(st.Entries) != 1 || len(st.Deferred) != 0 {
		t.Fatalf("after settling again: %+v, %v; want %d paid once", st, err, want)
	}
	if total, err := tl.Total(ctx); err != nil || total != 0 {
		t.Fatalf("sum of all balances: %d, %v", total, err)
	}
}

// TestUnverifiedInputCostsNothing: messages whose signature does not
// verify are nobody's. A batch, a claim and a deposit naming a 20 MiB
// signer, and a batch forged in an honest edge's name, are refused without
// a row in the ledger or a long log line, and the honest edge's statement
// stays clean.
func TestUnverifiedInputCostsNothing(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	tl := newTestLedger(t, "", Config{Logger: zap.New(core)})
	srv := httptest.NewServer(tl.Handler(nil))
	defer srv.Close()
	edge, forger := testkit.Key(t, 40), testkit.Key(t, 41)
	e0 := t0.Unix() - 60
	huge := strings.Repeat("1", 20<<20)
	forged := signBatch(t, forger, e0, 1, []billingapi.Record{rec(1, "blog", "cidA", 10, e0)})
	forged.Signer = edge.ID.String()
	hugeBatch := signBatch(t, forger, e0, 2, []billingapi.Record{rec(2, "blog", "cidA", 10, e0)})
	hugeBatch.Signer = huge
	hugeClaim := mustSign(t, forger, billingapi.TypeClaim, billingapi.Claim{Peer: forger.ID.String()})
	hugeClaim.Signer = huge
	hugeDeposit := mustSign(t, forger, billingapi.TypeDeposit, billingapi.Deposit{Account: forger.ID.String(), Amount: 1, Nonce: "n"})
	hugeDeposit.Signer = huge
	tests := []struct {
		name string
		path string
		env  *identity.Envelope
		code int
	}{
		{"batch forged in an honest edge's name", "/api/v1/batches", forged, http.StatusForbidden},
		{"batch with a 20 MiB signer", "/api/v1/batches", hugeBatch, http.StatusUnprocessableEntity},
		{"claim with a 20 MiB signer", "/api/v1/claims", hugeClaim, http.StatusUnprocessableEntity},
		{"deposit with a 20 MiB signer", "/api/v1/deposits", hugeDeposit, http.StatusUnprocessableEntity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, err := json.Marshal(tc.env)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(srv.URL+tc.path, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || len(answer) > 4<<10 {
				t.Fatalf("%d, %d bytes: %.200s; want %d and a short answer", resp.StatusCode, len(answer), answer, tc.code)
			}
			var n int
			if err := tl.db.QueryRow(`SELECT COUNT(*) FROM rejections`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d rejection rows (%v), want none", n, err)
			}
			for _, e := range logs.TakeAll() {
				if n := len(e.Message) + len(fmt.Sprint(e.Context)); n > 4<<10 {
					t.Fatalf("log entry %q is %d bytes", e.Message, n)
				}
			}
		})
	}
	st, err := tl.Statement(context.Background(), edge.ID.String())
	if err != nil || len(st.Rejected) != 0 || st.Balance != 0 {
		t.Fatalf("honest edge's statement %+v, %v: want clean", st, err)
	}
}
