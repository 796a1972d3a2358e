package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/storage"
)

// sitesEpoch is the billing epoch of TestSitesCommand: short, so that an
// epoch with records ends within the test.
const sitesEpoch = 2 * time.Second

// sitesNetwork is an origin that stripes onto two storage peers and
// checks funds at a billing service over it, all in this process.
type sitesNetwork struct {
	originURL, billingURL string
	origin                *origin.Origin
	operator              *identity.Key
}

func startSitesNetwork(t *testing.T) *sitesNetwork {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Billing needs the origin's URL and the origin billing's: billing's
	// server starts first, its ledger once the origin is up.
	var ledger atomic.Pointer[http.Handler]
	bsrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := ledger.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	t.Cleanup(bsrv.Close)
	n := &sitesNetwork{billingURL: bsrv.URL, operator: testkit.Key(t, 60)}
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir(), Registry: prometheus.NewRegistry(), HeartbeatInterval: 200 * time.Millisecond,
		Funds: billingFunds{billingapi.NewClient(bsrv.URL, nil)}, Billing: bsrv.URL,
		Stripe: &durability.StripeConfig{DataShards: 1, ParityShards: 1, SegmentSize: 256 << 10, ChunkSize: 4096,
			AuditInterval: time.Hour, RepairInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	osrv := httptest.NewServer(o.Handler())
	t.Cleanup(func() { osrv.Close(); o.Close() })
	go o.Run(ctx)
	n.origin, n.originURL = o, osrv.URL
	for range 2 {
		ts := httptest.NewUnstartedServer(nil)
		s, err := storage.New(ctx, storage.Config{DataDir: t.TempDir(), Origin: osrv.URL, OriginID: o.ID().ID, Capacity: 64 << 20,
			PublicAddr: "http://" + ts.Listener.Addr().String(), HeartbeatInterval: 100 * time.Millisecond, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ts.Config.Handler = s.Handler()
		ts.Start()
		t.Cleanup(func() { ts.Close(); s.Close() })
		go s.Run(ctx)
	}
	db, err := billing.OpenDB(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := billing.New(ctx, db, witness.NewOriginContent(osrv.URL, nil), n.operator.ID,
		billing.Config{Epoch: sitesEpoch, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := l.Handler(prometheus.NewRegistry())
	ledger.Store(&h)
	testkit.WaitFor(t, 20*time.Second, "two healthy storage peers", func() bool {
		peers, _ := o.Storage().Peers(ctx)
		healthy := 0
		for _, p := range peers {
			if p.Healthy {
				healthy++
			}
		}
		return healthy == 2
	})
	return n
}

// TestSitesCommand: a keystore whose funded account publishes two sites,
// each with its own key; an edge reports what it served of both; then
// `topcdn sites` shows each site's root, sequence, size and bytes served
// in the last epoch and this month, finding billing through the origin;
// and with billing or the origin down it says so and prints what it knows.
func TestSitesCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an origin, storage peers and billing")
	}
	clearPublishEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	n := startSitesNetwork(t)
	bc := billingapi.NewClient(n.billingURL, nil)
	ks := filepath.Join(dir, "keys")
	if _, stderr, err := runTopcdn(t, "keygen", "--name", "docs", "--keystore", ks); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	account, err := identity.Load(filepath.Join(ks, "account.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Deposit(ctx, n.operator, account.ID.String(), 1000, ""); err != nil {
		t.Fatal(err)
	}
	roots := map[string]string{}
	for _, name := range []string{"docs", "blog"} {
		stdout, stderr, err := runTopcdn(t, "publish", writeSite(t, dir, name, "the "+name+" site"), "--name", name,
			"--keystore", ks, "--origin", n.originURL)
		m := rootLine.FindStringSubmatch(stdout)
		if err != nil || m == nil || !strings.Contains(stderr, "linked key for "+name) {
			t.Fatalf("publish %s: %v\n%s%s", name, err, stdout, stderr)
		}
		roots[name] = m[1]
	}
	testkit.WaitFor(t, 20*time.Second, "both sites striped", func() bool {
		for _, r := range roots {
			if code, _ := testkit.Get(t, n.originURL+"/api/v1/manifests/"+r, ""); code != http.StatusOK {
				return false
			}
		}
		return true
	})

	// An admitted edge reports, in the open epoch, two responses of docs
	// and one of blog.
	edge := testkit.Key(t, 61)
	if _, err := bc.Admit(ctx, n.operator, edge.ID.String(), false, ""); err != nil {
		t.Fatal(err)
	}
	keyOf := func(name string) string {
		k, err := identity.Load(filepath.Join(ks, "sites", name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return k.ID.String()
	}
	epoch := postRecords(t, n.billingURL, edge, []billingapi.Record{
		{Name: "docs", CID: roots["docs"], Path: "/", Bytes: 60},
		{Name: "docs", CID: roots["docs"], Path: "/", Bytes: 60},
		{Name: "blog", CID: roots["blog"], Path: "/", Bytes: 50}})
	time.Sleep(time.Until(time.Unix(epoch, 0).Add(sitesEpoch + 50*time.Millisecond))) // the epoch ended

	stdout, stderr, err := runTopcdn(t, "sites", "--keystore", ks, "--origin", n.originURL, "--json")
	if err != nil {
		t.Fatalf("sites --json: %v\n%s", err, stderr)
	}
	var rep sitesReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("sites --json: %v\n%s", err, stdout)
	}
	if rep.Errors != nil || len(rep.Sites) != 2 || rep.Month == nil {
		t.Fatalf("sites --json:\n%s", stdout)
	}
	want := map[string]billingapi.Traffic{"docs": {Bytes: 120, Requests: 2}, "blog": {Bytes: 50, Requests: 1}}
	inMonth := !time.Unix(epoch, 0).Before(*rep.Month)
	for _, s := range rep.Sites {
		if s.Key != keyOf(s.Name) || !s.InKeystore || !s.Published || s.Root != roots[s.Name] || s.Sequence != 1 || s.Updated == nil ||
			s.Size == nil || *s.Size <= 0 {
			t.Errorf("%s: %+v; want its key, root %s, sequence 1 and a size", s.Name, s, roots[s.Name])
		}
		if inMonth && (s.Month == nil || *s.Month != want[s.Name]) {
			t.Errorf("%s this month: %+v, want %+v", s.Name, s.Month, want[s.Name])
		}
		switch {
		case rep.LastEpoch != epoch:
			t.Logf("the last epoch is %d, not the records' %d (the test was slow): its figures not checked", rep.LastEpoch, epoch)
		case s.LastEpoch == nil || *s.LastEpoch != want[s.Name]:
			t.Errorf("%s last epoch: %+v, want %+v", s.Name, s.LastEpoch, want[s.Name])
		}
	}

	tests := []struct {
		name             string
		args             []string
		contains, absent []string
		err              string
	}{
		{"the table", nil, []string{"NAME", "LAST EPOCH", "THIS MONTH", "docs", "blog", shortID(roots["docs"]), "50 B"},
			[]string{"not striped yet", "cannot be reached", "not known"}, ""},
		{"billing down: roots and sizes still shown", []string{"--billing", "http://127.0.0.1:1"},
			[]string{"billing at http://127.0.0.1:1 cannot be reached", "(bytes served unknown)", shortID(roots["docs"])}, []string{"50 B"}, ""},
		{"origin down: billing is not known either", []string{"--origin", "http://127.0.0.1:1"},
			[]string{"the origin at http://127.0.0.1:1 cannot be reached", "billing not known", "docs"}, []string{shortID(roots["docs"])}, ""},
		{"origin down, billing given: bytes still shown", []string{"--origin", "http://127.0.0.1:1", "--billing", n.billingURL},
			[]string{"the origin at http://127.0.0.1:1 cannot be reached", "docs", "50 B"}, []string{"billing not known"}, ""},
		{"an empty keystore", []string{"--keystore", filepath.Join(dir, "none")}, nil, nil, "holds no keys"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"sites", "--keystore", ks, "--origin", n.originURL}, tc.args...)
			stdout, _, err := runTopcdn(t, args...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(stdout, s) {
					t.Fatalf("does not print %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(stdout, s) {
					t.Fatalf("prints %q:\n%s", s, stdout)
				}
			}
		})
	}
}

// postRecords signs recs as edge's batch of the open epoch (serials,
// status, time and a client outside loopback filled in) and posts it to
// billing, which must accept every record; it returns the epoch.
func postRecords(t *testing.T, billingURL string, edge *identity.Key, recs []billingapi.Record) int64 {
	t.Helper()
	now := time.Now()
	secs := int64(sitesEpoch / time.Second)
	epoch := now.Unix() - now.Unix()%secs
	salt := bytes.Repeat([]byte{3}, billingapi.SaltSize)
	for i := range recs {
		recs[i].Serial, recs[i].Status, recs[i].Time = uint64(now.UnixNano())+uint64(i), http.StatusOK, now.UnixMilli()
		recs[i].Client = billingapi.ClientHash(salt, netip.MustParseAddr("192.0.2.1"))
	}
	b := billingapi.Batch{Edge: edge.ID.String(), Epoch: epoch, EpochSeconds: secs, Seq: uint64(now.UnixNano()), Salt: salt, Records: recs}
	b.MerkleRoot = billingapi.MerkleRoot(b.Records)
	env, err := edge.Sign(billingapi.TypeBatch, &b)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(env)
	resp, err := http.Post(billingURL+"/api/v1/batches", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res billingapi.BatchResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 || res.Accepted != len(recs) {
		t.Fatalf("batch: HTTP %d %+v %v", resp.StatusCode, res, err)
	}
	return epoch
}
