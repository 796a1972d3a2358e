package billing

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storageapi"
)

// signOrder returns a read order of key for length bytes at offset of
// shard on peer p, valid until expires.
func signOrder(t testing.TB, key *identity.Key, p, shard, serial string, offset, length int64, expires time.Time) string {
	t.Helper()
	env, err := key.Sign(storageapi.TypeReadOrder, storageapi.ReadOrder{Peer: p, Shard: shard, Offset: offset, Length: length,
		Expires: expires.UTC(), Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAttacksStorage: storage peers are paid only for reads the origin's
// billing log backs. A key the origin never placed a shard on, claiming
// 16 MiB orders for a 66 KB shard signed by another fresh key or by an
// honest edge, gets nothing (unplaced_peer_claims), as does an order
// valid for a year (expiry_a_year); the reads of a peer the origin flagged
// for a shard are refused once the flag is known, accepted or not, and its
// rent stops at the flag (flagged_peer); the origin's repair reads of a
// shard are paid up to its size per 24 h (repair_rereads), an edge's up to
// twice its size per epoch (edge_rereads). Each case starts from the same
// honest traffic: the attackers get exactly 0, the honest parties exactly
// their baseline plus what the case adds, balances sum to 0, and a second
// settlement pays nothing.
func TestAttacksStorage(t *testing.T) { testAttacksStorage(t, func(*testing.T) string { return "" }) }

// TestAttacksStoragePostgres runs the same cases on PostgreSQL.
func TestAttacksStoragePostgres(t *testing.T) { testAttacksStorage(t, pgDSN) }

func testAttacksStorage(t *testing.T, dsn func(*testing.T) string) {
	ctx := context.Background()
	const (
		price     = 3 << 30               // 3 units per byte served or read
		rent      = GiB * 30 * 86400 / 60 // 1 unit per byte held for an epoch (1 min)
		shardSize = 66_000
	)
	var (
		pub = testkit.Key(t, 70)
		e1  = testkit.Key(t, 71)
		s1  = testkit.Key(t, 72) // holds shard1
		s2  = testkit.Key(t, 73) // holds shard2
		x   = testkit.Key(t, 74) // fresh, never placed
		y   = testkit.Key(t, 75) // fresh, signs orders for x
	)
	e0 := t0.Unix() - 60 // the epoch just closed; claims land in t0's
	type world struct {
		tl      *testLedger
		lo      *logOrigin
		claims  []func() (*identity.Key, []billingapi.ClaimedOrder) // more claims after the honest ones
		after   func()                                              // more log events, after the claims
		delta   map[string]int64                                    // balances the case moves, vs the baseline
		reasons map[string][]billingapi.Reason                      // refusals a statement must show
	}
	newWorld := func(t *testing.T) *world {
		w := &world{delta: map[string]int64{}, reasons: map[string][]billingapi.Reason{}}
		var url string
		w.lo, url = newLogOrigin(t)
		r1, leaves := w.lo.site(t, map[string][]byte{"index.html": bytes.Repeat([]byte("a"), 1000)})
		at := time.Unix(e0-7200, 0)
		w.lo.upload(r1, pub.ID, at)
		w.lo.name("blog", r1, pub.ID, at)
		for _, sh := range []struct {
			id   string
			peer *identity.Key
		}{{"shard1", s1}, {"shard2", s2}} {
			w.lo.log(originapi.BillingEvent{Kind: originapi.EventPlace, Shard: sh.id, Peer: sh.peer.ID.String(), Segment: 1,
				Size: shardSize, Root: r1.String()}, at)
		}
		w.tl = newLedgerWith(t, dsn(t), Config{PricePerGiBServed: price, PricePerGiBMonthStored: rent},
			witness.NewOriginContent(url, nil))
		if _, err := w.tl.Deposit(ctx, mustSign(t, w.tl.operator, billingapi.TypeDeposit,
			billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000_000, Nonce: "d1"})); err != nil {
			t.Fatal(err)
		}
		// e1, admitted, serves 2000 bytes the router vouches for, and reads
		// shard1 from s1 (4 KiB + 8 KiB) and shard2 from s2 (4 KiB).
		w.tl.admit(t, e1)
		w.tl.vouch(e1.ID, e0, 2000, "name:blog")
		res, err := w.tl.IngestBatch(ctx, signBatch(t, e1, e0, 1, []billingapi.Record{rec(1, "blog", leaves["index.html"].String(), 1000, e0),
			rec(2, "blog", leaves["index.html"].String(), 1000, e0)}), netip.Addr{})
		if err != nil || res.Accepted != 2 {
			t.Fatalf("honest batch: %+v, %v", res, err)
		}
		exp := t0.Add(storageapi.ReadOrderLifetime)
		w.claims = []func() (*identity.Key, []billingapi.ClaimedOrder){
			func() (*identity.Key, []billingapi.ClaimedOrder) {
				return s1, []billingapi.ClaimedOrder{{ID: 1, Order: signOrder(t, e1, s1.ID.String(), "shard1", "h1", 0, 4096, exp)},
					{ID: 2, Order: signOrder(t, e1, s1.ID.String(), "shard1", "h2", 4096, 8192, exp)}}
			},
			func() (*identity.Key, []billingapi.ClaimedOrder) {
				return s2, []billingapi.ClaimedOrder{{ID: 1, Order: signOrder(t, e1, s2.ID.String(), "shard2", "h3", 0, 4096, exp)}}
			},
		}
		return w
	}
	accounts := []*identity.Key{pub, e1, s1, s2, x, y}
	run := func(t *testing.T, w *world) map[string]int64 {
		t.Helper()
		for _, c := range w.claims {
			k, orders := c()
			res, err := w.tl.IngestClaim(ctx, mustSign(t, k, billingapi.TypeClaim, billingapi.Claim{Peer: k.ID.String(), Orders: orders}))
			if err != nil {
				t.Fatalf("claim of %s: %v", k.ID, err)
			}
			t.Logf("claim of %s: accepted %d, rejected %+v, deferred %v", k.ID, res.Accepted, res.Rejected, res.Deferred)
		}
		if w.after != nil {
			w.after()
		}
		w.tl.setNow(t0.Add(150 * time.Second))
		if res, err := w.tl.Settle(ctx); err != nil || len(res.Epochs) != 2 {
			t.Fatalf("settle: %+v, %v; want epochs %d and %d", res, err, e0, t0.Unix())
		}
		out := map[string]int64{}
		for _, k := range accounts {
			st := balancedStatement(t, w.tl, k.ID.String())
			out[k.ID.String()] = st.Balance
			for _, want := range w.reasons[k.ID.String()] {
				if !slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool { return r.Reason == want }) {
					t.Errorf("statement of %s lacks %s: %+v", k.ID, want, st.Rejected)
				}
			}
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
	// Two epochs of rent for each 66 KB shard; reads at 3 units a byte.
	if want := int64(2*shardSize) + ServedAmount(4096+8192, price); baseline[s1.ID.String()] != want {
		t.Fatalf("baseline %v: s1 %d, want %d", baseline, baseline[s1.ID.String()], want)
	}
	if want := int64(2*shardSize) + ServedAmount(4096, price); baseline[s2.ID.String()] != want {
		t.Fatalf("baseline %v: s2 %d, want %d", baseline, baseline[s2.ID.String()], want)
	}

	old := t0.Add(-10 * time.Minute).Add(storageapi.ReadOrderLifetime) // issued long enough ago to judge the reader
	exp := t0.Add(storageapi.ReadOrderLifetime)
	claim := func(k *identity.Key, orders ...billingapi.ClaimedOrder) func() (*identity.Key, []billingapi.ClaimedOrder) {
		return func() (*identity.Key, []billingapi.ClaimedOrder) { return k, orders }
	}
	order := func(id int64, s string) billingapi.ClaimedOrder { return billingapi.ClaimedOrder{ID: id, Order: s} }
	tests := []struct {
		name  string
		setup func(w *world)
	}{
		{"unplaced_peer_claims", func(w *world) {
			w.claims = append(w.claims,
				claim(x, order(1, signOrder(t, y, x.ID.String(), "shard1", "y1", 0, 16<<20, old)),
					order(2, signOrder(t, y, x.ID.String(), "shard1", "y2", 0, 16<<20, old)),
					order(3, signOrder(t, y, x.ID.String(), "shard1", "y3", 0, 16<<20, old)),
					order(4, signOrder(t, e1, x.ID.String(), "shard1", "x1", 0, 16<<20, exp))),
				claim(s1, order(3, signOrder(t, e1, s1.ID.String(), "shard1", "big", 0, 16<<20, exp)),
					order(4, signOrder(t, e1, s1.ID.String(), "shard1", "past", shardSize-100, 101, exp))))
			w.reasons[x.ID.String()] = []billingapi.Reason{billingapi.ReasonUnknownReader, billingapi.ReasonOrderPlacement}
			w.reasons[s1.ID.String()] = []billingapi.Reason{billingapi.ReasonOrderRange}
		}},
		{"expiry_a_year", func(w *world) {
			w.claims = append(w.claims, claim(s1, order(3, signOrder(t, e1, s1.ID.String(), "shard1", "year", 0, 4096, t0.AddDate(1, 0, 0)))))
			w.reasons[s1.ID.String()] = []billingapi.Reason{billingapi.ReasonOrderExpiry}
		}},
		{"flagged_peer", func(w *world) {
			// The flag comes after s2's reads were accepted, before the
			// settlement: they are refused, and its rent for shard2 stops
			// at the flag (half of t0's epoch).
			w.after = func() {
				w.lo.log(originapi.BillingEvent{Kind: originapi.EventFlag, Peer: s2.ID.String(), Shard: "shard2", Reason: "bad-bytes"},
					t0.Add(30*time.Second))
			}
			lost := ServedAmount(4096, price) + shardSize/2
			w.delta[s2.ID.String()], w.delta[pub.ID.String()] = -lost, lost
			w.reasons[s2.ID.String()] = []billingapi.Reason{billingapi.ReasonPeerFlagged}
		}},
		{"repair_rereads", func(w *world) {
			// 20 whole-shard reads of shard1 by the origin in 10 minutes.
			var orders []billingapi.ClaimedOrder
			for i := range 20 {
				orders = append(orders, order(int64(10+i), signOrder(t, w.lo.key, s1.ID.String(), "shard1", fmt.Sprintf("rep%d", i), 0, shardSize,
					t0.Add(-10*time.Minute+time.Duration(i)*30*time.Second).Add(storageapi.ReadOrderLifetime))))
			}
			w.claims = append(w.claims, claim(s1, orders...))
			paid := ServedAmount(shardSize, price)
			w.delta[s1.ID.String()], w.delta[pub.ID.String()] = paid, -paid
			w.reasons[s1.ID.String()] = []billingapi.Reason{billingapi.ReasonUpkeepRepeat}
		}},
		{"edge_rereads", func(w *world) {
			// e1 reads shard1 whole three more times in the epoch: with
			// its 12 KiB, two shards' worth is paid.
			var orders []billingapi.ClaimedOrder
			for i := range 3 {
				orders = append(orders, order(int64(10+i), signOrder(t, e1, s1.ID.String(), "shard1", fmt.Sprintf("again%d", i), 0, shardSize, exp)))
			}
			w.claims = append(w.claims, claim(s1, orders...))
			paid := ServedAmount(2*shardSize-(4096+8192), price)
			w.delta[s1.ID.String()], w.delta[pub.ID.String()] = paid, -paid
			w.reasons[s1.ID.String()] = []billingapi.Reason{billingapi.ReasonOverRead}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(w)
			got := run(t, w)
			for _, k := range accounts {
				id := k.ID.String()
				if want := baseline[id] + w.delta[id]; got[id] != want {
					t.Errorf("%s: balance %d, want %d (baseline %d)", id, got[id], want, baseline[id])
				}
			}
			if got[x.ID.String()] != 0 || got[y.ID.String()] != 0 {
				t.Errorf("attackers paid: x %d, y %d", got[x.ID.String()], got[y.ID.String()])
			}
		})
	}
}
