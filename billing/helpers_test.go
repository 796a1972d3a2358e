package billing

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// t0 is the test clock's start: the beginning of an epoch.
var t0 = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

// fakeContent is an in-memory Content.
type fakeContent struct {
	mu       sync.Mutex
	sites    map[string]peer.ID          // name -> publisher
	objects  map[string]map[string]int64 // name -> cid -> size
	shards   map[string]peer.ID
	roots    map[string]string   // name -> root, if set
	striped  map[string][]string // root -> shards, for ShardIndex
	holdings []witness.Holding
	fail     error
	origin   peer.ID // for OriginID; "" matches no reader
}

func newFakeContent() *fakeContent {
	return &fakeContent{sites: map[string]peer.ID{}, objects: map[string]map[string]int64{}, shards: map[string]peer.ID{},
		roots: map[string]string{}, striped: map[string][]string{}}
}

func (f *fakeContent) publish(name string, pub peer.ID, objs map[string]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sites[name] = pub
	f.objects[name] = objs
}

func (f *fakeContent) Object(ctx context.Context, name, root, c string) (witness.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return witness.Object{}, f.fail
	}
	for n, objs := range f.objects {
		if (name == "" || n == name) && objs[c] > 0 {
			root := f.roots[n]
			if root == "" {
				root = n // a site without a set root: its name stands for it
			}
			return witness.Object{Publisher: f.sites[n], MaxBytes: objs[c], Root: root}, nil
		}
	}
	return witness.Object{}, reject(billingapi.ReasonUnpublished, "%s/%s is not published", name, c)
}

func (f *fakeContent) ShardPublisher(ctx context.Context, shard string) (peer.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.shards[shard]; ok {
		return p, nil
	}
	return "", reject(billingapi.ReasonUnknownShard, "shard %s unknown", shard)
}

func (f *fakeContent) OriginIDs(ctx context.Context) ([]peer.ID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []peer.ID{f.origin}, nil
}

func (f *fakeContent) Holdings(ctx context.Context) ([]witness.Holding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]witness.Holding(nil), f.holdings...), nil
}

func (f *fakeContent) RootShards(ctx context.Context) (map[string][]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for r, ids := range f.striped {
		out[r] = append([]string(nil), ids...)
	}
	return out, nil
}

var (
	_ Content    = (*fakeContent)(nil)
	_ ShardIndex = (*fakeContent)(nil)
	_ OriginKey  = (*fakeContent)(nil)
)

// testLedger is a Ledger on a settable clock over SQLite (or dsn).
type testLedger struct {
	*Ledger
	content  *fakeContent
	router   *fakeRouter // the DNS router, unless the test's Config names another
	operator *identity.Key
	mu       sync.Mutex
	now      time.Time
}

func (tl *testLedger) setNow(t time.Time) {
	tl.mu.Lock()
	tl.now = t
	tl.mu.Unlock()
}

func (tl *testLedger) clock() time.Time {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.now
}

func newTestLedger(t testing.TB, dsn string, cfg Config) *testLedger {
	t.Helper()
	content := newFakeContent()
	tl := newLedgerWith(t, dsn, cfg, content)
	tl.content = content
	return tl
}

// newLedgerWith is newTestLedger over content instead of a fakeContent
// (tl.content stays nil).
func newLedgerWith(t testing.TB, dsn string, cfg Config, content Content) *testLedger {
	t.Helper()
	ctx := context.Background()
	if dsn == "" {
		dsn = filepath.Join(t.TempDir(), "billing.db")
	}
	db, err := OpenDB(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tl := &testLedger{router: newFakeRouter(), operator: testkit.Key(t, 99), now: t0}
	if cfg.DNS == nil {
		cfg.DNS = tl.router
	}
	if cfg.Epoch == 0 {
		cfg.Epoch = time.Minute
	}
	cfg.now = tl.clock
	if tl.Ledger, err = New(ctx, db, content, tl.operator.ID, cfg); err != nil {
		t.Fatal(err)
	}
	return tl
}

// settleCrashing runs a settlement that the Config's FaultHook makes
// panic, and fails the test if it does not.
func settleCrashing(t testing.TB, tl *testLedger) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatal("no crash")
		}
	}()
	tl.Settle(context.Background())
}

// batch builds and signs a batch of key for epoch.
func signBatch(t testing.TB, key *identity.Key, epoch int64, seq uint64, recs []billingapi.Record) *identity.Envelope {
	t.Helper()
	b := billingapi.Batch{Edge: key.ID.String(), Epoch: epoch, EpochSeconds: 60, Seq: seq, Salt: bytes.Repeat([]byte{7}, billingapi.SaltSize),
		Records: recs}
	b.MerkleRoot = billingapi.MerkleRoot(b.Records)
	env, err := key.Sign(billingapi.TypeBatch, &b)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// rec returns a record served at epoch+1s.
func rec(serial uint64, name, c string, n int64, epoch int64) billingapi.Record {
	return billingapi.Record{Serial: serial, Name: name, CID: c, Bytes: n, Status: 200, Time: (epoch + 1) * 1000,
		Client: bytes.Repeat([]byte{1}, billingapi.ClientHashSize)}
}

// counter reads a counter's value.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// newHTTPLedger serves tl's API on loopback and returns its URL.
func newHTTPLedger(t testing.TB, tl *testLedger) string {
	t.Helper()
	srv := httptest.NewServer(tl.Handler(prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return srv.URL
}

// balancedStatement returns id's statement, failing the test unless its
// entries sum to its balance.
func balancedStatement(t testing.TB, tl *testLedger, id string) *billingapi.Statement {
	t.Helper()
	st, err := tl.Statement(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range st.Entries {
		sum += e.Amount
	}
	if sum != st.Balance {
		t.Fatalf("%s: balance %d, entries sum %d", id, st.Balance, sum)
	}
	return st
}
