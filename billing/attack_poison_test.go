package billing

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// statusFront stands in front of a logOrigin and answers a set HTTP
// status for the CARs of some roots (a 422 for a DAG the origin will not
// serve, a 503 while it cannot).
type statusFront struct {
	mu     sync.Mutex
	status map[string]int // root -> status; absent: as the origin answers
	asked  map[string]int // root -> requests for its CAR
}

func newStatusFront(t *testing.T, origin string) (*statusFront, string) {
	t.Helper()
	u, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	f := &statusFront{status: map[string]int{}, asked: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		root := strings.TrimPrefix(r.URL.Path, "/ipfs/")
		st := f.status[root]
		f.asked[root]++
		f.mu.Unlock()
		if st != 0 && strings.HasPrefix(r.URL.Path, "/ipfs/") {
			http.Error(w, "refused by the test", st)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// askedFor returns how many times root's CAR was asked for.
func (f *statusFront) askedFor(root cid.Cid) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[root.String()]
}

// set makes the front answer status for root's CAR (0: the origin's).
func (f *statusFront) set(root cid.Cid, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[root.String()] = status
}

// TestAttacksPoison: content billing cannot index holds up no batch.
// deep_dag_poison: an attacker's root the origin answers 422 for (a DAG
// too deep), its records mixed into honest edges' batches as the
// router's probes mix them: the batches are stored (200), the poison
// records refused one by one as unindexable, the honest ones paid exactly
// as without them, the attacker's balance unchanged. transient_root: a
// root whose CAR the origin cannot serve at ingest (503): its records are
// deferred (neither paid nor refused, their serials taken), then paid
// exactly once the origin serves it, whether before their epoch is
// settled or after; still failing past BackingWait, refused as
// unindexable with their bytes. Balances sum to 0 and a second
// settlement pays nothing.
func TestAttacksPoison(t *testing.T) { testAttacksPoison(t, func(*testing.T) string { return "" }) }

// TestAttacksPoisonPostgres runs the same cases on PostgreSQL.
func TestAttacksPoisonPostgres(t *testing.T) { testAttacksPoison(t, pgDSN) }

func testAttacksPoison(t *testing.T, dsn func(*testing.T) string) {
	ctx := context.Background()
	const (
		price   = 3 << 30 // 3 units per byte served
		deposit = 1_000_000
	)
	var (
		pub      = testkit.Key(t, 71)
		e1       = testkit.Key(t, 72)
		e2       = testkit.Key(t, 73)
		attacker = testkit.Key(t, 74) // funded: it must lose and gain nothing
	)
	e0 := t0.Unix() - 60 // the epoch just closed
	at := func(sec int64) time.Time { return time.Unix(e0+sec, 0).UTC() }
	record := func(serial uint64, name string, c, root cid.Cid, n int64) billingapi.Record {
		r := rec(serial, name, c.String(), n, e0)
		if root.Defined() {
			r.Root = root.String()
		}
		return r
	}
	type world struct {
		tl                *testLedger
		front             *statusFront
		blog, shop, evil  cid.Cid
		lBlog, lShop, lEv map[string]cid.Cid
		e1, e2            []billingapi.Record
	}
	newWorld := func(t *testing.T) *world {
		w := &world{}
		lo, origin := newLogOrigin(t)
		var url string
		w.front, url = newStatusFront(t, origin)
		w.blog, w.lBlog = lo.site(t, map[string][]byte{"index.html": bytes.Repeat([]byte("a"), 1000), "style.css": bytes.Repeat([]byte("b"), 3000)})
		w.shop, w.lShop = lo.site(t, map[string][]byte{"index.html": bytes.Repeat([]byte("s"), 1500)})
		w.evil, w.lEv = lo.site(t, map[string][]byte{"deep.bin": bytes.Repeat([]byte("x"), 5000)})
		lo.upload(w.blog, pub.ID, at(-7200))
		lo.name("blog", w.blog, pub.ID, at(-7200))
		lo.upload(w.shop, pub.ID, at(-7200))
		lo.name("shop", w.shop, pub.ID, at(-7200))
		lo.upload(w.evil, attacker.ID, at(-3600))
		lo.name("evil", w.evil, attacker.ID, at(-3600))
		// The witness reads the ledger's clock for its backoffs.
		var tl *testLedger
		content := witness.NewOriginContent(url, nil, witness.WithClock(func() time.Time { return tl.clock() }))
		tl = newLedgerWith(t, dsn(t), Config{PricePerGiBServed: price, BackingWait: 5 * time.Minute}, content)
		w.tl = tl
		for _, k := range []*identity.Key{pub, attacker} {
			if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit,
				billingapi.Deposit{Account: k.ID.String(), Amount: deposit, Nonce: "d-" + k.ID.String()})); err != nil {
				t.Fatal(err)
			}
		}
		tl.admit(t, e1, e2)
		for _, k := range []*identity.Key{e1, e2} {
			tl.vouch(k.ID, e0, 1<<30, "name:blog", "name:shop", "name:evil")
			tl.router.probes(k.ID, e0, 1<<20)
		}
		// The honest traffic: 2000 bytes by e1, 3000 by e2, of blog.
		w.e1 = []billingapi.Record{record(1, "blog", w.lBlog["index.html"], w.blog, 1000), record(2, "blog", w.lBlog["index.html"], w.blog, 1000)}
		w.e2 = []billingapi.Record{record(1, "blog", w.lBlog["style.css"], w.blog, 3000)}
		return w
	}
	// ingest posts both edges' batches and returns the answers.
	ingest := func(t *testing.T, w *world) [2]*billingapi.BatchResult {
		t.Helper()
		var out [2]*billingapi.BatchResult
		for i, b := range []struct {
			k    *identity.Key
			recs []billingapi.Record
		}{{e1, w.e1}, {e2, w.e2}} {
			res, err := w.tl.IngestBatch(ctx, signBatch(t, b.k, e0, uint64(i+1), b.recs), netip.Addr{})
			if err != nil {
				t.Fatalf("batch of edge %d: %v (one root must not hold up a batch)", i+1, err)
			}
			out[i] = res
		}
		return out
	}
	settle := func(t *testing.T, w *world, now time.Time) *billingapi.SettleResult {
		t.Helper()
		w.tl.setNow(now)
		res, err := w.tl.Settle(ctx)
		if err != nil || len(res.Epochs) == 0 {
			t.Fatalf("settle at %s: %+v, %v", now.Sub(t0), res, err)
		}
		return res
	}
	balances := func(t *testing.T, w *world) map[string]int64 {
		t.Helper()
		out := map[string]int64{}
		for _, k := range []*identity.Key{pub, e1, e2, attacker} {
			st := balancedStatement(t, w.tl, k.ID.String())
			out[k.ID.String()] = st.Balance
		}
		if total, err := w.tl.Total(ctx); err != nil || total != 0 {
			t.Fatalf("sum of all balances: %d, %v", total, err)
		}
		return out
	}
	secondSettlePaysNothing := func(t *testing.T, w *world) {
		t.Helper()
		if res, err := w.tl.Settle(ctx); err != nil || res.Paid != 0 || len(res.Epochs) != 0 {
			t.Fatalf("second settle: %+v, %v", res, err)
		}
	}
	refusedOf := func(t *testing.T, w *world, k *identity.Key) map[string]billingapi.Rejected {
		t.Helper()
		st, err := w.tl.Statement(ctx, k.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]billingapi.Rejected{}
		for _, r := range st.Rejected {
			if r.Kind == "record" {
				out[r.Ref] = r
			}
		}
		return out
	}
	pendingOf := func(t *testing.T, w *world, k *identity.Key) []uint64 {
		t.Helper()
		st, err := w.tl.Statement(ctx, k.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, p := range st.Pending {
			out = append(out, p.Serial)
		}
		return out
	}

	bw := newWorld(t)
	ingest(t, bw)
	settle(t, bw, t0.Add(150*time.Second))
	baseline := balances(t, bw)
	if baseline[e1.ID.String()] != ServedAmount(2000, price) || baseline[pub.ID.String()] != deposit-ServedAmount(5000, price) {
		t.Fatalf("baseline %v", baseline)
	}
	want := func(extraE1 int64) map[string]int64 {
		return map[string]int64{
			pub.ID.String():      baseline[pub.ID.String()] - ServedAmount(extraE1, price),
			e1.ID.String():       baseline[e1.ID.String()] + ServedAmount(extraE1, price),
			e2.ID.String():       baseline[e2.ID.String()],
			attacker.ID.String(): deposit,
		}
	}
	check := func(t *testing.T, got, want map[string]int64) {
		t.Helper()
		for id, v := range want {
			if got[id] != v {
				t.Errorf("%s: balance %d, want %d", id, got[id], v)
			}
		}
	}

	t.Run("deep_dag_poison", func(t *testing.T) {
		w := newWorld(t)
		w.front.set(w.evil, http.StatusUnprocessableEntity) // dag_too_deep
		// By name, and as the router's probes fetch it: the root alone.
		w.e1 = append(w.e1, record(10, "evil", w.lEv["deep.bin"], w.evil, 5000), record(11, "", w.evil, w.evil, 700))
		w.e2 = append(w.e2, record(10, "evil", w.lEv["deep.bin"], cid.Undef, 5000))
		res := ingest(t, w)
		for i, r := range res {
			if r.Accepted != 2-i || len(r.Deferred) != 0 {
				t.Fatalf("edge %d: %+v, want the honest records accepted, none deferred", i+1, r)
			}
			for _, rj := range r.Rejected {
				if rj.Reason != billingapi.ReasonUnindexable {
					t.Fatalf("edge %d: %+v refused, want unindexable", i+1, rj)
				}
			}
		}
		if len(res[0].Rejected) != 2 || len(res[1].Rejected) != 1 {
			t.Fatalf("refused %+v / %+v, want every poison record", res[0].Rejected, res[1].Rejected)
		}
		if n := w.front.askedFor(w.evil); n != 1 {
			t.Fatalf("the poison CAR was asked for %d times, want once for three records", n)
		}
		settle(t, w, t0.Add(150*time.Second))
		check(t, balances(t, w), want(0))
		if r := refusedOf(t, w, e1); r["10"].Reason != billingapi.ReasonUnindexable || r["11"].Reason != billingapi.ReasonUnindexable {
			t.Fatalf("e1's statement: %+v", r)
		}
		if st, err := w.tl.Statement(ctx, attacker.ID.String()); err != nil || len(st.Entries) != 1 {
			t.Fatalf("attacker's statement %+v, %v: want its deposit only", st, err)
		}
		secondSettlePaysNothing(t, w)
	})

	shopRecs := func(w *world) []billingapi.Record {
		return []billingapi.Record{record(20, "shop", w.lShop["index.html"], w.shop, 1500), record(21, "shop", w.lShop["index.html"], cid.Undef, 1500)}
	}
	t.Run("transient_root", func(t *testing.T) {
		tests := []struct {
			name string
			// run fixes the origin (or not) and settles, after ingest;
			// extra is the bytes e1 is paid for shop.
			run     func(t *testing.T, w *world)
			extra   int64
			counter uint64 // e1's epoch counter, if not 1 GiB
		}{
			{"fixed_before_settlement", func(t *testing.T, w *world) {
				w.front.set(w.shop, 0)
				settle(t, w, t0.Add(150*time.Second))
			}, 3000, 0},
			{"fixed_after_its_epoch_settled", func(t *testing.T, w *world) {
				settle(t, w, t0.Add(150*time.Second))
				if p := pendingOf(t, w, e1); !slices.Equal(p, []uint64{20, 21}) {
					t.Fatalf("pending after the first settlement: %v", p)
				}
				check(t, balances(t, w), want(0))
				w.front.set(w.shop, 0)
				settle(t, w, t0.Add(240*time.Second))
			}, 3000, 0},
			{"fixed_after_its_epoch_settled_bounded", func(t *testing.T, w *world) {
				// e1's heartbeats counted 3500 bytes: the late records
				// bring 1500 more, the rest is refused over_counter.
				settle(t, w, t0.Add(150*time.Second))
				w.front.set(w.shop, 0)
				settle(t, w, t0.Add(240*time.Second))
				st, err := w.tl.Statement(ctx, e1.ID.String())
				if err != nil {
					t.Fatal(err)
				}
				var over int64
				for _, r := range st.Rejected {
					if r.Reason == billingapi.ReasonOverCounter {
						over += r.Bytes
					}
				}
				if over != 1500 {
					t.Fatalf("over_counter %d bytes, want 1500: %+v", over, st.Rejected)
				}
			}, 1500, 3500},
			{"past_backing_wait", func(t *testing.T, w *world) {
				settle(t, w, t0.Add(150*time.Second))
				if p := pendingOf(t, w, e1); len(p) != 2 {
					t.Fatalf("pending within the backing wait: %v", p)
				}
				settle(t, w, t0.Add(6*time.Minute))
				r := refusedOf(t, w, e1)
				for _, s := range []string{"20", "21"} {
					if r[s].Reason != billingapi.ReasonUnindexable || r[s].Bytes != 1500 {
						t.Fatalf("record %s: %+v, want refused as unindexable with its 1500 bytes", s, r[s])
					}
				}
			}, 0, 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				w := newWorld(t)
				w.front.set(w.shop, http.StatusServiceUnavailable)
				w.e1 = append(w.e1, shopRecs(w)...)
				if tc.counter != 0 {
					w.tl.router.counter(e1.ID, e0, tc.counter)
				}
				res := ingest(t, w)
				if res[0].Accepted != 2 || len(res[0].Rejected) != 0 || !slices.Equal(res[0].Deferred, []uint64{20, 21}) {
					t.Fatalf("e1's batch: %+v, want 2 accepted and 20, 21 deferred", res[0])
				}
				if n := w.front.askedFor(w.shop); n != 1 {
					t.Fatalf("the failing CAR was asked for %d times, want once for two records", n)
				}
				// A deferred serial is taken.
				again, err := w.tl.IngestBatch(ctx, signBatch(t, e1, e0-60, 9, []billingapi.Record{
					func() billingapi.Record { r := shopRecs(w)[0]; r.Time = (e0 - 59) * 1000; return r }()}), netip.Addr{})
				if err != nil || len(again.Rejected) != 1 || again.Rejected[0].Reason != billingapi.ReasonReplayRecord {
					t.Fatalf("a pending serial again: %+v, %v; want replay_record", again, err)
				}
				tc.run(t, w)
				check(t, balances(t, w), want(tc.extra))
				if p := pendingOf(t, w, e1); len(p) != 0 {
					t.Fatalf("still pending: %v", p)
				}
				if tc.extra > 0 {
					if r := refusedOf(t, w, e1); len(r) != 1 { // the replay only
						t.Fatalf("e1's refused records: %+v", r)
					}
				}
				secondSettlePaysNothing(t, w)
			})
		}
	})
}

// TestPendingCrash: a settlement that dies while paying records deferred
// at ingest (in their own epoch's settlement, or resolved after it) leaves
// them pending and unpaid; the next one pays them exactly once.
func TestPendingCrash(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "own_epoch", true: "late"}[late], func(t *testing.T) {
			ctx := context.Background()
			const price = 3 << 30
			pub, edge := testkit.Key(t, 75), testkit.Key(t, 76)
			var crash atomic.Bool
			tl := newTestLedger(t, "", Config{PricePerGiBServed: price, FaultHook: func(stage string) {
				if stage == "settle-mid" && crash.Swap(false) {
					panic("crash mid-settlement")
				}
			}})
			tl.content.publish("blog", pub.ID, map[string]int64{"cidA": 1000})
			if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit,
				billingapi.Deposit{Account: pub.ID.String(), Amount: 1_000_000, Nonce: "d1"})); err != nil {
				t.Fatal(err)
			}
			e0 := t0.Unix() - 60
			tl.admit(t, edge)
			tl.vouch(edge.ID, e0, 1000, "name:blog")
			tl.content.fail = errors.New("origin: HTTP 503")
			res, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "cidA", 1000, e0)}), netip.Addr{})
			if err != nil || !slices.Equal(res.Deferred, []uint64{1}) {
				t.Fatalf("batch: %+v, %v; want record 1 deferred", res, err)
			}
			tl.setNow(t0.Add(time.Minute))
			if late {
				if _, err := tl.Settle(ctx); err != nil { // e0 settled, the record still pending
					t.Fatal(err)
				}
				tl.setNow(t0.Add(2 * time.Minute))
			}
			tl.content.fail = nil
			crash.Store(true)
			settleCrashing(t, tl)
			st, err := tl.Statement(ctx, edge.ID.String())
			if err != nil || st.Balance != 0 || len(st.Entries) != 0 || len(st.Pending) != 1 {
				t.Fatalf("after the crash: %+v, %v; want unpaid and still pending", st, err)
			}
			for range 2 {
				if _, err := tl.Settle(ctx); err != nil {
					t.Fatal(err)
				}
			}
			want := ServedAmount(1000, price)
			if st, err := tl.Statement(ctx, edge.ID.String()); err != nil || st.Balance != want || len(st.Entries) != 1 || len(st.Pending) != 0 {
				t.Fatalf("after settling again: %+v, %v; want %d paid once", st, err, want)
			}
			if total, err := tl.Total(ctx); err != nil || total != 0 {
				t.Fatalf("sum of all balances: %d, %v", total, err)
			}
		})
	}
}
