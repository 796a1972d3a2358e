package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storageapi"
)

// pricePerByte makes --price-gib-served pay a whole number of tokens per
// byte, so billing's rounding (downwards, per epoch and (operator,
// publisher) pair) never drops a fraction and expected amounts are exact
// whatever epochs the bytes fall in.
const pricePerByte = 5

// statement runs `topcdn billing statement --json`.
func statement(t *testing.T, bin, url, account string) billingapi.Statement {
	t.Helper()
	var st billingapi.Statement
	out := testkit.Run(t, bin, "billing", "statement", "--billing", url, "--account", account, "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("statement --json: %v\n%s", err, out)
	}
	return st
}

// balanceOf returns an account's balance, 0 if billing does not know it.
func balanceOf(t *testing.T, url, account string) int64 {
	t.Helper()
	a, err := billingapi.NewClient(url, nil).Account(context.Background(), account)
	if err != nil {
		return 0
	}
	return a.Balance
}

// startStripedBilling runs an origin that stripes content into
// dataShards + parityShards small segments, and billing over it with
// pricePerByte tokens a byte and 1 s epochs (its key in DIR/billing).
//
// The origin keeps a local copy (--keep-local): without one it would read
// each site from the peers for billing's index, billing pays those reads
// too (upkeep, TestClaimPaysOriginReads), and the peers' earnings would no
// longer be the test's reads alone. With it the origin reads nothing from
// the peers.
func startStripedBilling(t *testing.T, bin, dir string, dataShards, parityShards int, dnsURL string) (o, b *service) {
	t.Helper()
	o = startOrigin(t, bin, filepath.Join(dir, "origin"), "--data-shards", strconv.Itoa(dataShards),
		"--parity-shards", strconv.Itoa(parityShards), "--segment-size", "256KiB", "--chunk-size", "4KiB",
		"--heartbeat-interval", "1s", "--audit-interval", "1h", "--keep-local")
	b = startService(t, bin, "billing", "--listen", "127.0.0.1:0", "--db", "sqlite:"+filepath.Join(dir, "billing", "ledger.db"),
		"--origin", o.url, "--dns", dnsURL, "--shared-prefix", "127.0.0.0/24", "--epoch", "1s", "--settle-delay", "1s", "--price-gib-served", strconv.Itoa(pricePerByte<<30))
	return o, b
}

// vouchingRouter is a stand-in DNS router for tests whose edges are
// simulated (or send no heartbeats): for each edge it lists, for every
// 1 s epoch of the last minute, a large epoch byte counter and many client
// units sent to it for site, so that billing's evidence bound does not
// bind and the test sees billing's other checks. The real router's
// evidence is tested in dnsroute and in the devnet. It returns the
// router's URL.
func vouchingRouter(t *testing.T, site string, edges func() []dnsrouteapi.EdgeInfo) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().Unix()
		list := edges()
		for i := range list {
			for e := now - 60; e <= now+1; e++ {
				list[i].Epochs = append(list[i].Epochs, dnsrouteapi.EpochBytes{Epoch: e, Bytes: 1 << 40, Closed: e < now})
				list[i].Demand = append(list[i].Demand, dnsrouteapi.EpochDemand{Epoch: e,
					Sites: []dnsrouteapi.SiteDemand{{Site: site, First: 1000}}})
			}
		}
		json.NewEncoder(w).Encode(list)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// edgesOf lists edges by peer ID for vouchingRouter.
func edgesOf(ids ...string) func() []dnsrouteapi.EdgeInfo {
	return func() []dnsrouteapi.EdgeInfo {
		out := make([]dnsrouteapi.EdgeInfo, len(ids))
		for i, id := range ids {
			out[i] = dnsrouteapi.EdgeInfo{Peer: id, Healthy: true}
		}
		return out
	}
}

// admitEdges admits edges with `topcdn billing admit`, signed with the
// key in billingDir.
func admitEdges(t *testing.T, bin, billingURL, billingDir string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if out := testkit.Run(t, bin, "billing", "admit", "--billing", billingURL, "--key", filepath.Join(billingDir, "billing.key"),
			"--edge", id); !strings.Contains(out, id+" admitted since") {
			t.Fatalf("admit %s: %s", id, out)
		}
	}
}

// TestBillingEndToEnd runs an origin, two storage peers that claim from
// billing, and billing as processes; publishes a site; acts as an edge
// that reads blocks from the peers with signed read orders and reports
// what it served with a Reporter; then settles and checks that the
// publisher is debited and the edge and the peers credited exactly what
// the price says, and that the lies it slipped in are refused.
func TestBillingEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	ctx := context.Background()
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	pubKey := filepath.Join(dir, "publisher.key")
	pubID := strings.TrimSpace(testkit.Run(t, bin, "keygen", "--out", pubKey))
	edgeKey := testkit.Key(t, 1)
	o, b := startStripedBilling(t, bin, dir, 1, 1, vouchingRouter(t, "name:blog", edgesOf(edgeKey.ID.String())))
	bdir := filepath.Join(dir, "billing")
	defer func() {
		if t.Failed() {
			t.Logf("billing log:\n%s", b.Tail(40))
		}
	}()
	admitEdges(t, bin, b.url, bdir, edgeKey.ID.String())
	startClaimingPeers(t, bin, dir, o.url, b.url, 2)

	const deposit = 100_000_000
	if !t.Run("the billing operator funds the publisher from the CLI", func(t *testing.T) {
		out := testkit.Run(t, bin, "billing", "deposit", "--billing", b.url, "--key", filepath.Join(bdir, "billing.key"),
			"--account", pubID, "--amount", strconv.Itoa(deposit), "--nonce", "start")
		if !strings.Contains(out, "balance "+strconv.Itoa(deposit)) {
			t.Fatalf("deposit: %s", out)
		}
		testkit.Run(t, bin, "billing", "deposit", "--billing", b.url, "--key", filepath.Join(bdir, "billing.key"),
			"--account", pubID, "--amount", strconv.Itoa(deposit), "--nonce", "start") // resent: applied once
		// A deposit signed by another key is refused.
		if msg, err := exec.Command(bin, "billing", "deposit", "--billing", b.url, "--key", pubKey, "--account", pubID,
			"--amount", "5").CombinedOutput(); err == nil || !strings.Contains(string(msg), "403") {
			t.Fatalf("deposit signed by the publisher: %v %s", err, msg)
		}
	}) {
		return
	}

	var m *erasure.Manifest
	addrs := map[string]string{}
	if !t.Run("the publish is striped", func(t *testing.T) {
		m = manifest(t, o.url, publishStriped(t, bin, o.url, pubKey, "../../examples/site"))
		for id, p := range peersByID(t, o.url) {
			addrs[id] = p.Addr
		}
	}) {
		return
	}

	// The edge: read 12 blocks from the data shards with signed read
	// orders, verify them, and report each as served.
	var served int64
	readFrom := map[string]int64{}
	if !t.Run("an edge reads blocks from the peers and reports them, and two lies", func(t *testing.T) {
		sc := storageapi.NewClient(edgeKey, nil)
		client := netip.MustParseAddr("127.0.0.1")
		var report []billingapi.Served
		for _, br := range m.Blocks[:12] {
			sh := m.Segments[br.Segment].Shards[0] // k = 1: the data shard holds the segment
			data, err := sc.GetRange(ctx, mustPeer(t, sh.Peer), addrs[sh.Peer], sh.ID, br.Offset, br.Length)
			if err != nil {
				t.Fatal(err)
			}
			c := cid.MustParse(br.CID)
			if err := dag.Verify(c, data); err != nil {
				t.Fatal(err)
			}
			readFrom[sh.Peer] += br.Length
			served += int64(len(data))
			report = append(report, billingapi.Served{Name: "blog", CID: br.CID, Bytes: int64(len(data)), Status: http.StatusOK,
				Time: time.Now(), Client: client})
		}
		// Lies next to it: bytes inflated past the block's size, and a CID
		// that was never published.
		var big erasure.BlockRef // a raw leaf: its size bounds a response
		for _, br := range m.Blocks {
			if cid.MustParse(br.CID).Type() == cid.Raw {
				big = br
				break
			}
		}
		report = append(report, billingapi.Served{Name: "blog", CID: big.CID, Bytes: big.Length + 1, Status: 200, Time: time.Now(), Client: client},
			billingapi.Served{Name: "blog", CID: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", Bytes: 10,
				Status: 200, Time: time.Now(), Client: client})
		reportServed(edgeKey, b.url, report)
	}) {
		return
	}

	// Settle until the peers' claims are in: the edge gets price × bytes
	// served, each peer price × bytes read from it.
	want := map[string]int64{edgeKey.ID.String(): pricePerByte * served}
	var storageTotal int64
	for id, n := range readFrom {
		want[id] = pricePerByte * n
		storageTotal += n
	}
	want[pubID] = deposit - pricePerByte*(served+storageTotal)
	if !t.Run("settlement pays the edge and the peers", func(t *testing.T) {
		settleUntilPaid(t, bin, b.url, func() map[string]int64 { return want })
		testkit.Run(t, bin, "billing", "settle", "--billing", b.url) // idempotent
		for id, w := range want {
			st := statement(t, bin, b.url, id)
			var sum int64
			for _, e := range st.Entries {
				sum += e.Amount
			}
			if st.Balance != w || sum != w || st.Account != id {
				t.Errorf("%s: balance %d, entries sum %d, want %d", id, st.Balance, sum, w)
			}
		}
	}) {
		return
	}

	t.Run("the lies are refused", func(t *testing.T) {
		st := statement(t, bin, b.url, edgeKey.ID.String())
		var reasons []billingapi.Reason
		for _, r := range st.Rejected {
			reasons = append(reasons, r.Reason)
		}
		slices.Sort(reasons)
		if !slices.Equal(reasons, []billingapi.Reason{billingapi.ReasonInflated, billingapi.ReasonUnpublished}) {
			t.Errorf("edge's statement shows refusals %v, want inflated and unpublished", reasons)
		}
		code, metrics := testkit.Get(t, b.url+"/metrics", "")
		if code != 200 || !strings.Contains(string(metrics), `topcdn_billing_claims_total{kind="record",reason="inflated",result="rejected"} 1`) {
			t.Errorf("metrics lack the refused record:\n%s", metrics)
		}
	})

	// The site is striped: billing found its records' root in a manifest
	// and ran the upstream-read check on them (backed, held then paid, or
	// skipped while no claims had come in yet), never as unstriped.
	t.Run("billing checks the upstream reads of the striped site", func(t *testing.T) {
		_, metrics := testkit.Get(t, b.url+"/metrics", "")
		if !strings.Contains(string(metrics), `topcdn_billing_upstream_checks_total{result=`) ||
			strings.Contains(string(metrics), `result="skipped_unstriped"`) || strings.Contains(string(metrics), `result="refused"`) {
			t.Errorf("metrics show no upstream-read check of the striped site, or a wrong one:\n%s", metrics)
		}
	})

	t.Run("origin, storage peers and billing serve their build and runtime metrics", func(t *testing.T) {
		checkRoleMetrics(t, o.url)
		checkRoleMetrics(t, b.url)
		for _, p := range peersByID(t, o.url) {
			checkRoleMetrics(t, p.Addr)
		}
	})

	t.Run("the accounts balance", func(t *testing.T) {
		if s := accountsSum(t, b.url); s != 0 {
			t.Errorf("accounts sum to %d, want 0", s)
		}
		if out := testkit.Run(t, bin, "billing", "balance", "--billing", b.url); !strings.Contains(out, pubID) ||
			!strings.Contains(out, strconv.FormatInt(want[pubID], 10)) {
			t.Errorf("balance lists no publisher with %d:\n%s", want[pubID], out)
		}
		var susp billingapi.SuspendedResponse
		testkit.GetJSON(t, b.url+"/api/v1/suspended", &susp)
		if len(susp.Publishers) != 0 {
			t.Errorf("suspended: %v", susp.Publishers)
		}
	})
}

// settleUntilPaid runs `topcdn billing settle` until every account of
// want() holds the balance it names, and fails t after 30 s. want is
// called before each settlement.
func settleUntilPaid(t *testing.T, bin, billingURL string, want func() map[string]int64) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "settlement to pay the edge and the peers", func() bool {
		w := want()
		testkit.Run(t, bin, "billing", "settle", "--billing", billingURL)
		for id, amount := range w {
			if got := balanceOf(t, billingURL, id); got != amount {
				t.Logf("%s: balance %d, want %d", id, got, amount)
				return false
			}
		}
		return true
	})
}

// reportServed reports to billing at billingURL, as an edge with key,
// what it served, in 1 s epochs, and returns once the open epoch is sent.
func reportServed(key *identity.Key, billingURL string, served []billingapi.Served) {
	ctx, stop := context.WithCancel(context.Background())
	rep := billingapi.NewReporter(key, billingURL, billingapi.WithEpoch(time.Second))
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	for _, s := range served {
		rep.Observe(s)
	}
	stop()
	<-done
}

// accountsSum returns the sum of the balances of every account billing
// at billingURL lists: 0 unless money was made or lost.
func accountsSum(t *testing.T, billingURL string) int64 {
	t.Helper()
	var all []billingapi.Account
	testkit.GetJSON(t, billingURL+"/api/v1/accounts", &all)
	var total int64
	for _, a := range all {
		total += a.Balance
	}
	return total
}

// rawBlocks returns the blocks of the DAG under root with their sizes.
func rawBlocks(t *testing.T, originURL string, root cid.Cid) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for c := range fetchDAG(t, originURL, root) {
		code, data := testkit.Get(t, originURL+"/ipfs/"+c.String(), "application/vnd.ipld.raw")
		if code != 200 {
			t.Fatalf("raw %s: %d", c, code)
		}
		out[c.String()] = int64(len(data))
	}
	return out
}

// publishUnstriped runs an origin that keeps everything itself, publishes
// examples/site on it as blog with a new key, and returns the origin, the
// key's peer ID, and the site's raw block sizes by CID.
func publishUnstriped(t *testing.T, bin, dir string) (o *service, pubID string, blocks map[string]int64) {
	t.Helper()
	pubKey := filepath.Join(dir, "publisher.key")
	pubID = strings.TrimSpace(testkit.Run(t, bin, "keygen", "--out", pubKey))
	o = startOrigin(t, bin, filepath.Join(dir, "origin"), "--no-stripe")
	root := strings.TrimSpace(testkit.Run(t, bin, "publish", "../../examples/site", "--name", "blog", "--origin", o.url, "--key", pubKey, "-Q"))
	return o, pubID, rawBlocks(t, o.url, cid.MustParse(root))
}

// TestBillingKillMidSettlement kills billing with SIGKILL inside a
// settlement transaction (after a publisher's debit, before the credit),
// restarts it, and checks that nothing of the interrupted settlement
// stayed, that the accounts still sum to zero, and that settling then pays
// each party exactly once.
func TestBillingKillMidSettlement(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	ctx := context.Background()
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	o, pubID, blocks := publishUnstriped(t, bin, dir)

	bdir := filepath.Join(dir, "billing")
	var edges []string
	for i := range 3 {
		edges = append(edges, testkit.Key(t, byte(1+i)).ID.String())
	}
	args := []string{"billing", "--listen", "127.0.0.1:0", "--db", filepath.Join(bdir, "ledger.db"), "--origin", o.url,
		"--dns", vouchingRouter(t, "name:blog", edgesOf(edges...)),
		// The stand-in router's units are not real clients: no edge's
		// bytes per unit are a reference for the others'.
		"--demand-headroom", "-1",
		"--shared-prefix", "127.0.0.0/24", "--epoch", "1s", "--settle-delay", "1s", "--price-gib-served", strconv.Itoa(pricePerByte << 30)}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cmd.Environ(), faultEnv+"=kill-mid-settle")
	b := listening(t, testkit.StartCmd(t, cmd))
	const deposit = 1_000_000_000
	testkit.Run(t, bin, "billing", "deposit", "--billing", b.url, "--key", filepath.Join(bdir, "billing.key"),
		"--account", pubID, "--amount", strconv.Itoa(deposit), "--nonce", "start")
	admitEdges(t, bin, b.url, bdir, edges...)

	// Three edges report every block of the site, each in its own epochs.
	want := map[string]int64{}
	var paid int64
	for i := range 3 {
		key := testkit.Key(t, byte(1+i))
		var served []billingapi.Served
		for c, n := range blocks {
			served = append(served, billingapi.Served{Name: "blog", CID: c, Bytes: n, Status: 200, Time: time.Now(),
				Client: netip.MustParseAddr("127.0.0.1")})
			want[key.ID.String()] += pricePerByte * n
			paid += pricePerByte * n
		}
		reportServed(key, b.url, served)
	}
	want[pubID] = deposit - paid
	time.Sleep(2500 * time.Millisecond) // every reported epoch is closed

	if !t.Run("a settle request kills billing mid-transaction", func(t *testing.T) {
		if out, err := exec.Command(bin, "billing", "settle", "--billing", b.url).CombinedOutput(); err == nil {
			t.Fatalf("settle survived the fault injection: %s", out)
		}
		err := b.Wait(ctx)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("billing exited with %v, want SIGKILL\n%s", err, b.Tail(10))
		}
		if !strings.Contains(b.Tail(10), "killing myself mid-settlement") {
			t.Fatalf("the fault was not injected:\n%s", b.Tail(10))
		}
	}) {
		return
	}

	b = startService(t, bin, args...)
	if !t.Run("restarted, billing holds nothing of the interrupted settlement", func(t *testing.T) {
		if s := accountsSum(t, b.url); s != 0 {
			t.Fatalf("after the kill the accounts sum to %d", s)
		}
		if got := balanceOf(t, b.url, pubID); got != deposit {
			t.Fatalf("after the kill the publisher holds %d, want the untouched %d", got, deposit)
		}
		for id := range want {
			if id != pubID && balanceOf(t, b.url, id) != 0 {
				t.Fatalf("edge %s was paid by the killed settlement", id)
			}
		}
	}) {
		return
	}

	t.Run("settling pays each edge once, however often it is asked", func(t *testing.T) {
		for range 3 {
			testkit.Run(t, bin, "billing", "settle", "--billing", b.url)
		}
		for id, w := range want {
			if got := balanceOf(t, b.url, id); got != w {
				t.Errorf("%s: balance %d, want %d", id, got, w)
			}
		}
		if s := accountsSum(t, b.url); s != 0 {
			t.Fatalf("accounts sum to %d", s)
		}
	})
}

// TestBillingProberForfeits runs billing with --dns against a stand-in
// router that lists an edge whose server answers every object with wrong
// bytes: billing's prober catches it, the edge forfeits its epoch, and
// settlement pays it nothing and charges the publisher nothing.
func TestBillingProberForfeits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	ctx := context.Background()
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	o, pubID, blocks := publishUnstriped(t, bin, dir)

	edgeKey := testkit.Key(t, 1)
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("not the published bytes"))
	}))
	defer liar.Close()
	router := vouchingRouter(t, "name:blog", func() []dnsrouteapi.EdgeInfo {
		return []dnsrouteapi.EdgeInfo{{Peer: edgeKey.ID.String(), URL: liar.URL, Healthy: true, Answers: 5}}
	})

	bdir := filepath.Join(dir, "billing")
	b := startService(t, bin, "billing", "--listen", "127.0.0.1:0", "--db", filepath.Join(bdir, "ledger.db"), "--origin", o.url,
		"--dns", router, "--probe-every", "200ms", "--shared-prefix", "127.0.0.0/24", "--epoch", "1s", "--settle-delay", "3s",
		"--price-gib-served", strconv.Itoa(pricePerByte<<30))
	testkit.Run(t, bin, "billing", "deposit", "--billing", b.url, "--key", filepath.Join(bdir, "billing.key"),
		"--account", pubID, "--amount", "1000000000")
	admitEdges(t, bin, b.url, bdir, edgeKey.ID.String())

	if !t.Run("the prober catches the edge", func(t *testing.T) {
		// Report everything inside one epoch: start just after a second begins.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 100*time.Millisecond)))
		var served []billingapi.Served
		for c, n := range blocks {
			served = append(served, billingapi.Served{Name: "blog", CID: c, Bytes: n, Status: 200, Time: time.Now(), Client: netip.MustParseAddr("127.0.0.1")})
		}
		reportServed(edgeKey, b.url, served)
		testkit.WaitFor(t, 20*time.Second, "the prober to catch the edge", func() bool {
			st := statement(t, bin, b.url, edgeKey.ID.String())
			return slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool { return r.Reason == billingapi.ReasonWrongContent })
		})
	}) {
		return
	}

	if !t.Run("settlement pays the forfeited epoch nothing and charges nothing", func(t *testing.T) {
		time.Sleep(4 * time.Second) // past the settle delay
		testkit.Run(t, bin, "billing", "settle", "--billing", b.url)
		st := statement(t, bin, b.url, edgeKey.ID.String())
		if st.Balance != 0 || len(st.Entries) != 0 || st.DNSCheck != "on" {
			t.Fatalf("forfeiting edge: balance %d, %d entries, dns check %q", st.Balance, len(st.Entries), st.DNSCheck)
		}
		if got := balanceOf(t, b.url, pubID); got != 1000000000 {
			t.Fatalf("publisher charged for a forfeited epoch: %d", got)
		}
	}) {
		return
	}

	t.Run("the DNS router learns of the verdict from GET /api/v1/forfeits", func(t *testing.T) {
		fs, err := billingapi.NewClient(b.url, nil).Forfeits(ctx, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) != 1 || fs[0].Edge != edgeKey.ID.String() || fs[0].Reason != billingapi.ReasonWrongContent {
			t.Fatalf("forfeits %+v, want the edge's epoch for wrong content", fs)
		}
	})
}

// startClaimingPeers runs n storage peers of the origin at originURL that
// claim what they serve from billing every second, and waits until the
// origin sees all n healthy.
func startClaimingPeers(t *testing.T, bin, dir, originURL, billingURL string, n int) {
	t.Helper()
	for i := range n {
		data := filepath.Join(dir, "peer", string(rune('a'+i)))
		startService(t, bin, "storage", "--data", data, "--listen", "127.0.0.1:0", "--origin", originURL,
			"--heartbeat", "1s", "--capacity", "64MiB", "--billing", billingURL, "--claim-every", "1s")
	}
	waitHealthyPeers(t, originURL, n)
}
