package durability

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/sqldb"
)

// keeperOn returns a Keeper with a new block store over db, as another
// origin sharing the database has, and its registry. Its key is key, or a
// new one if nil.
func keeperOn(t testing.TB, db *sqldb.DB, sc StripeConfig, key ...*identity.Key) (*Keeper, *prometheus.Registry) {
	t.Helper()
	cfg := testConfig(t, filepath.Join(t.TempDir(), "unused.db"), Config{HeartbeatInterval: time.Second, Stripe: &sc})
	cfg.DB = db
	if len(key) > 0 {
		cfg.Key = key[0]
	}
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	kp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kp, reg
}

// TestLeaseLapses: a lease is one origin's until it lapses unrenewed; then
// another takes it over, with a new token, and the old holder can neither
// renew nor release it. A released lease is taken at once, and that is no
// takeover. On the database's clock, here a test's (SQLite).
func TestLeaseLapses(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	clock := time.Unix(1_900_000_000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	db, err := origindb.Open(ctx, filepath.Join(t.TempDir(), "origin.db"), sqldb.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sc := StripeConfig{LeaseTTL: 30 * time.Second}
	a, _ := keeperOn(t, db, sc)
	b, _ := keeperOn(t, db, sc)

	ga, ok, err := a.acquireLease(ctx, leaseRepair)
	if err != nil || !ok || ga.token != 1 || ga.previous != "" {
		t.Fatalf("first acquire: %+v, %v, %v", ga, ok, err)
	}
	if _, ok, err := b.acquireLease(ctx, leaseRepair); err != nil || ok {
		t.Fatalf("B took A's live lease: %v, %v", ok, err)
	}
	if _, ok, err := b.acquireLease(ctx, leaseAudit); err != nil || !ok {
		t.Fatalf("B could not take another lease: %v, %v", ok, err)
	}
	advance(20 * time.Second)
	if ok, err := a.renewLease(ctx, ga); err != nil || !ok {
		t.Fatalf("A's renewal: %v, %v", ok, err)
	}
	advance(20 * time.Second) // 40 s after the acquire, 20 s after the renewal
	if _, ok, _ := b.acquireLease(ctx, leaseRepair); ok {
		t.Fatal("B took a lease A had renewed")
	}
	if g, ok, err := a.acquireLease(ctx, leaseRepair); err != nil || !ok || g.token != 1 {
		t.Fatalf("A could not take its own lease again: %+v, %v, %v", g, ok, err)
	}

	advance(31 * time.Second) // A stopped renewing
	gb, ok, err := b.acquireLease(ctx, leaseRepair)
	if err != nil || !ok || gb.token != 2 || gb.previous != a.holder() {
		t.Fatalf("takeover: %+v, %v, %v; want token 2 from A", gb, ok, err)
	}
	if ok, err := a.renewLease(ctx, ga); err != nil || ok {
		t.Fatalf("A renewed a lease B took over: %v, %v", ok, err)
	}
	a.releaseLease(ctx, ga)
	if _, ok, _ := a.acquireLease(ctx, leaseRepair); ok {
		t.Fatal("A's release of its lapsed lease freed B's")
	}
	b.releaseLease(ctx, gb)
	if g, ok, err := a.acquireLease(ctx, leaseRepair); err != nil || !ok || g.token != 3 || g.previous != "" {
		t.Fatalf("after B's release: %+v, %v, %v; want token 3, no takeover", g, ok, err)
	}
}

// TestWithLease: two origins over one database (two connections to one
// PostgreSQL database, or one SQLite file): a pass runs on one of them at
// a time; the holder renews its lease for as long as its pass runs; a
// holder that stops (its database gone, as when killed) has its pass
// cancelled and the lease taken over once it lapses, counted and shown in
// the metrics.
func TestWithLease(t *testing.T) { pgtest.Dialects(t, testWithLease) }

func testWithLease(t *testing.T, dsn string) {
	ctx := context.Background()
	const ttl = time.Second
	sc := StripeConfig{LeaseTTL: ttl}
	dbA, err := origindb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	dbB := dbA
	if dbA.Postgres() {
		if dbB, err = origindb.Open(ctx, dsn); err != nil {
			t.Fatal(err)
		}
		defer dbB.Close()
	}
	a, regA := keeperOn(t, dbA, sc)
	b, regB := keeperOn(t, dbB, sc)

	running, cancelled := make(chan struct{}), make(chan struct{})
	finish := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		a.withLease(ctx, leaseSweep, func(ctx context.Context) {
			close(running)
			select {
			case <-ctx.Done():
				close(cancelled)
			case <-finish:
			}
		})
	})
	<-running
	if testutil.ToFloat64(a.metrics.leaseHeld.WithLabelValues(leaseSweep)) != 1 {
		t.Fatal("lease_held{sweep} is not 1 on the holder")
	}
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 10) {
		if b.withLease(ctx, leaseSweep, func(context.Context) {}) {
			t.Fatal("B ran a pass while A's, renewed, was running")
		}
	}
	close(finish)
	wg.Wait()
	if testutil.ToFloat64(a.metrics.leaseHeld.WithLabelValues(leaseSweep)) != 0 {
		t.Fatal("lease_held{sweep} is not 0 after the pass")
	}
	if !b.withLease(ctx, leaseSweep, func(context.Context) {}) {
		t.Fatal("B could not run a pass once A's ended")
	}
	if n := testutil.ToFloat64(b.metrics.leaseTakeovers.WithLabelValues(leaseSweep)); n != 0 {
		t.Fatalf("%v takeovers of a released lease", n)
	}

	if !dbA.Postgres() {
		return // one SQLite file: A cannot lose its database alone
	}
	running, cancelled = make(chan struct{}), make(chan struct{})
	wg.Go(func() {
		a.withLease(ctx, leaseAudit, func(ctx context.Context) {
			close(running)
			<-ctx.Done()
			close(cancelled)
		})
	})
	<-running
	dbA.Close() // A can no longer renew
	start := time.Now()
	select {
	case <-cancelled:
	case <-time.After(2 * ttl):
		t.Fatal("A's pass went on after its lease could not be renewed")
	}
	for !b.withLease(ctx, leaseAudit, func(context.Context) {}) {
		if time.Since(start) > 2*ttl {
			t.Fatalf("B had not taken the lease over %s after A stopped (TTL %s)", time.Since(start), ttl)
		}
		time.Sleep(ttl / 20)
	}
	wg.Wait()
	if n := testutil.ToFloat64(b.metrics.leaseTakeovers.WithLabelValues(leaseAudit)); n != 1 {
		t.Fatalf("%v takeovers counted, want 1", n)
	}
	for _, reg := range []*prometheus.Registry{regA, regB} {
		if n, err := testutil.GatherAndCount(reg, "topcdn_origin_lease_held", "topcdn_origin_lease_takeovers_total"); err != nil || n == 0 {
			t.Fatalf("lease metrics not registered: %d, %v", n, err)
		}
	}
}
