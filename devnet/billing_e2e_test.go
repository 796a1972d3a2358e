package devnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// The billing test's schedule. The epoch is 10 s, not the devnet's 30 s:
// six epochs of traffic, one for the insider, the settle delay (one
// epoch) and the settlements that pay held records and storage claims
// then fit in under 2 minutes with the devnet's start (about 100 s here),
// where 30 s epochs would take over 5. It stays as long as the site's name TTL (10 s), so an
// edge still serves the superseded root for up to a whole epoch after the
// update, and the router's answers (TTL 30 s) count in the next epoch too.
const (
	billingTestEpoch = 10 * time.Second
	trafficEpochs    = 6 // honest epochs in the figure; the first is partial
	updateEpoch      = 3 // the site is republished in the middle of this one
	roundPause       = 100 * time.Millisecond
	minHonestShare   = 0.99
)

// TestDevnetBilling runs `topcdn devnet` and sends it honest traffic like
// real clients for six billing epochs, republishing the site in the middle
// of one, with the router's and billing's probes running as usual; then
// settles and checks the ledger: the publisher paid exactly what the edges
// and storage peers earned, every edge that served and every storage peer
// read earned, balances sum to zero, a second settle pays nothing, and the
// edges were paid at least 99 % of the bytes their Reporters counted.
// A second site, docs, is published from a keystore whose account is the
// devnet's funded publisher, with its own key linked to the account
// before its traffic starts; clients fetch both sites once both are
// striped, and after settlement the account has paid for both keys and
// `topcdn sites` shows each site's bytes. In a seventh epoch one edge's operator (an admitted insider with its
// key) adds a batch claiming all its real demand allows and raises its
// epoch counter to match; the test reports what that got it.
func TestDevnetBilling(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole network for about 2 minutes")
	}
	bin := testkit.BuildBinary(t)
	siteDir := filepath.Join(t.TempDir(), "site")
	copyDir(t, "../examples/site", siteDir)
	dir := t.TempDir()
	offset := devnetOffset()
	n := startDevnet(t, bin, dir, offset, "--epoch", billingTestEpoch.String(), "--site", siteDir)
	info := n.info
	secs := int64(info.EpochSeconds)
	if secs != int64(billingTestEpoch/time.Second) {
		t.Fatalf("devnet.json says %d s epochs, want %s", secs, billingTestEpoch)
	}
	site := info.Sites[0]
	_, edgePort, _ := net.SplitHostPort(strings.TrimPrefix(info.Edges[0].URL, "http://"))
	bc := billingapi.NewClient(info.Billing.URL, nil)
	ctx := context.Background()

	// 0. The second site, published in the epoch its key's link starts;
	// traffic starts once both sites are striped.
	docs := publishSecondSite(t, bin, info, bc)
	waitStriped(t, info, site.CID, docs.root)

	// 1. Traffic: six epochs of honest sessions of each site, blog
	// updated in the middle of the fourth, then a seventh the insider
	// claims more of. docs' clients run beside blog's, as many, from
	// other /24s at any one time.
	cl := newClients(info.DNS.Addr, site.Host, edgePort, info.DNS.Zone, uint64(offset))
	dl := newClients(info.DNS.Addr, docs.host, edgePort, info.DNS.Zone, uint64(offset)+1)
	const dl0 = 375 // docs' first session number: its /24s start past blog's first ones
	dl.n = dl0
	start := time.Now()
	first := start.Unix() - start.Unix()%secs
	insiderEpoch := first + trafficEpochs*secs
	epochs := make([]int64, trafficEpochs)
	for i := range epochs {
		epochs[i] = first + int64(i)*secs
	}
	tctx, stopTraffic := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	traffic.Go(func() { cl.run(tctx, roundPause) })
	traffic.Go(func() { dl.run(tctx, roundPause) })
	sleepUntil(time.Unix(first+updateEpoch*secs+secs/2, 0))
	newRoot := republish(t, bin, info, siteDir)
	if err := cl.fetchByCID(site.CID); err != nil { // the superseded root, by CID
		t.Fatal(err)
	}
	t.Logf("site updated at %s (epoch %d + %ds): root %s -> %s", time.Now().Format("15:04:05"), first+updateEpoch*secs, secs/2, site.CID, newRoot)
	objCID := objectCID(t, info, site.Host, edgePort, "/docs/manual.txt")
	sleepUntil(time.Unix(insiderEpoch+secs, 0))
	stopTraffic()
	traffic.Wait()
	rounds, received, perEdge, failures := cl.summary()
	t.Logf("clients of %s: %d sessions (%d by CID), %d body bytes received:%s", site.Host, rounds, cl.byCID, received, perEdge)
	t.Logf("after the update, %d responses by name (%d B) still came from the superseded root %s",
		cl.stale[0], cl.stale[1], site.CID)
	dRounds, dReceived, dPerEdge, dFailures := dl.summary()
	t.Logf("clients of %s: %d sessions, %d body bytes received:%s", docs.host, dRounds-dl0, dReceived, dPerEdge)
	rounds, received, failures = rounds+dRounds-dl0, received+dReceived, append(failures, dFailures...)
	if len(failures) > rounds/50 {
		t.Errorf("%d of %d sessions failed; first: %v", len(failures), rounds, failures[0])
	} else if len(failures) > 0 {
		t.Logf("%d sessions failed, first: %v", len(failures), failures[0])
	}
	readsBefore := storageReads(t, info)

	// 2. The edges' epoch counters, closed, from the router's evidence;
	// then the insider's extra claim before its epoch is settled.
	var router []dnsrouteapi.EdgeInfo
	testkit.WaitFor(t, 3*billingTestEpoch, "the router to hold every edge's closed counters", func() bool {
		router = routerEdges(t, info)
		return countersClosed(router, info, append(slices.Clone(epochs), insiderEpoch))
	})
	served, probes := servedBytes(router, info, append(slices.Clone(epochs), insiderEpoch))
	var counted, probed int64
	for _, e := range info.Edges {
		counted += sumValues(served[e.PeerID])
		probed += sumValues(probes[e.PeerID])
	}
	t.Logf("cross-check over the %d epochs of traffic: the edges counted %d B, the clients received %d B; the %d B more are the router's content probes (%d B) and billing's sampling probes",
		trafficEpochs+1, counted, received, counted-received, probed)
	if counted < received {
		t.Errorf("the edges counted %d B, less than the %d B the clients received", counted, received)
	}
	ins := insiderClaim(t, info, router, insiderEpoch, newRoot, objCID, siteDir)

	// 3. Settle until the traffic epochs and the insider's are settled,
	// held records paid and the storage peers' claims of the run credited.
	var busy []int64 // epochs the edges served bytes in
	for _, ep := range append(slices.Clone(epochs), insiderEpoch) {
		for _, e := range info.Edges {
			if served[e.PeerID][ep] > 0 && !slices.Contains(busy, ep) {
				busy = append(busy, ep)
			}
		}
	}
	sleepUntil(time.Unix(insiderEpoch+2*secs, 0).Add(2 * time.Second))
	var led *ledger
	settled := func() bool {
		if _, err := bc.Settle(ctx); err != nil {
			t.Logf("settle: %v", err)
			return false
		}
		led = readLedger(t, bc, info)
		return led.complete(busy, readsBefore) == ""
	}
	deadline := time.Now().Add(6 * billingTestEpoch)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Second)
	}
	if led == nil {
		t.Fatalf("billing never settled for %s", 6*billingTestEpoch)
	}
	if why := led.complete(busy, readsBefore); why != "" {
		t.Errorf("after settling for %s: %s", 6*billingTestEpoch, why)
		for id, st := range led.statements {
			for _, d := range st.Deferred {
				t.Logf("  held: edge %s epoch %d publisher %s root %s: %d records, %d bytes", short(id), d.Epoch, short(d.Publisher),
					d.Root, d.Records, d.Bytes)
			}
		}
	}

	// 4. The ledger: who paid, who earned, a second settle pays nothing.
	t.Run("ledger", func(t *testing.T) {
		holders := shardHolders(t, info, site.CID, newRoot)
		checkLedger(t, ctx, bc, info, led, served, epochs, readsBefore, holders)
	})

	// 5. Two sites, one account: it paid for both keys, and `topcdn
	// sites` shows what each served.
	t.Run("two sites", func(t *testing.T) {
		checkTwoSites(t, bin, info, led, docs, first)
	})

	// 6. The figure: honest bytes paid over honest bytes served.
	t.Run("honest figure", func(t *testing.T) {
		f := honestFigure(led, info, served, probes, epochs)
		f.log(t)
		if f.share() < minHonestShare {
			t.Errorf("honest bytes paid %d / served %d = %.4f, below %.2f (see the gap above)", f.paid, f.served, f.share(), minHonestShare)
		}
	})

	// 7. The insider's residual (reported, not asserted).
	t.Run("insider residual", func(t *testing.T) {
		ins.report(t, led, info, served, router, epochs)
	})
}

// sleepUntil sleeps until t.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// copyDir copies the regular files under src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}

// republish changes one file of the site (about.html) and publishes it
// again under the same name, as the devnet did at start; it returns the
// new root.
func republish(t *testing.T, bin string, info Info, siteDir string) string {
	t.Helper()
	about := filepath.Join(siteDir, "about.html")
	b, err := os.ReadFile(about)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, []byte("<!-- updated by TestDevnetBilling at "+time.Now().Format(time.RFC3339Nano)+" -->\n")...)
	if err := os.WriteFile(about, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := testkit.Run(t, bin, "publish", siteDir, "--name", info.Sites[0].Name, "--origin", info.Origin.URL,
		"--key", info.PublisherKey, "--ttl", siteTTL.String())
	root := rootOf(out)
	if root == "" {
		t.Fatalf("publish printed no root line:\n%s", out)
	}
	if root == info.Sites[0].CID {
		t.Fatalf("republishing gave the same root %s", root)
	}
	return root
}

// objectCID returns the CID of the object at path of the site, from the
// X-Ipfs-Roots header of the first edge's answer (its last CID).
func objectCID(t *testing.T, info Info, host, port, path string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, info.Edges[0].URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host + ":" + port
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	roots := strings.Split(resp.Header.Get("X-Ipfs-Roots"), ",")
	if resp.StatusCode != http.StatusOK || roots[len(roots)-1] == "" {
		t.Fatalf("HEAD %s: %s, X-Ipfs-Roots %q", path, resp.Status, resp.Header.Get("X-Ipfs-Roots"))
	}
	return strings.TrimSpace(roots[len(roots)-1])
}

// routerEdges returns the router's GET /api/v1/edges.
func routerEdges(t *testing.T, info Info) []dnsrouteapi.EdgeInfo {
	t.Helper()
	var edges []dnsrouteapi.EdgeInfo
	testkit.GetJSON(t, info.DNS.API, &edges)
	return edges
}

// routerEdge returns the router's entry for peer, nil if it has none.
func routerEdge(edges []dnsrouteapi.EdgeInfo, peer string) *dnsrouteapi.EdgeInfo {
	for i := range edges {
		if edges[i].Peer == peer {
			return &edges[i]
		}
	}
	return nil
}

// countersClosed reports whether the router holds, for every devnet edge,
// a closed counter of each of epochs it reported at all (an edge that
// served nothing in an epoch reports none).
func countersClosed(edges []dnsrouteapi.EdgeInfo, info Info, epochs []int64) bool {
	last := slices.Max(epochs)
	for _, e := range info.Edges {
		re := routerEdge(edges, e.PeerID)
		if re == nil {
			return false
		}
		for _, eb := range re.Epochs {
			if slices.Contains(epochs, eb.Epoch) && !eb.Closed {
				return false
			}
		}
		if !slices.ContainsFunc(re.Epochs, func(eb dnsrouteapi.EpochBytes) bool { return eb.Epoch > last }) {
			return false // the epoch after the last not open yet: the last may not be reported
		}
	}
	return true
}

// servedBytes returns, per edge peer ID and epoch, the bytes the edge's
// Reporter counted (the closed epoch counters its heartbeats relayed) and
// the bytes of the router's content probes of it.
func servedBytes(edges []dnsrouteapi.EdgeInfo, info Info, epochs []int64) (served, probes map[string]map[int64]int64) {
	served, probes = map[string]map[int64]int64{}, map[string]map[int64]int64{}
	for _, e := range info.Edges {
		served[e.PeerID], probes[e.PeerID] = map[int64]int64{}, map[int64]int64{}
		re := routerEdge(edges, e.PeerID)
		if re == nil {
			continue
		}
		for _, eb := range re.Epochs {
			if slices.Contains(epochs, eb.Epoch) {
				served[e.PeerID][eb.Epoch] = int64(eb.Bytes)
			}
		}
		for _, d := range re.Demand {
			if slices.Contains(epochs, d.Epoch) {
				probes[e.PeerID][d.Epoch] = int64(d.ProbeBytes)
			}
		}
	}
	return served, probes
}

// figure is the honest figure: the bytes the edges' Reporters counted in
// the traffic epochs and what the edges were paid for them.
type figure struct {
	served, paid, held int64
	probes             int64 // of served, the router's content probes
	refused            map[billingapi.Reason]int64
	rows               []string // per edge and epoch
}

func (f figure) share() float64 {
	if f.served == 0 {
		return 0
	}
	return float64(f.paid) / float64(f.served)
}

// honestFigure sums the edges' counted and paid bytes of epochs, with the
// refusals and held records that make up the gap.
func honestFigure(led *ledger, info Info, served, probes map[string]map[int64]int64, epochs []int64) figure {
	f := figure{refused: map[billingapi.Reason]int64{}}
	for _, e := range info.Edges {
		paid := led.paidFor(e.PeerID, "served")
		for _, ep := range epochs {
			s, p := served[e.PeerID][ep], paid[ep]
			f.served += s
			f.paid += p
			f.probes += probes[e.PeerID][ep]
			f.rows = append(f.rows, fmt.Sprintf("%s epoch %d: served %d (router probes %d) paid %d gap %d", e.City, ep, s, probes[e.PeerID][ep], p, s-p))
		}
		st := led.statements[e.PeerID]
		for _, r := range st.Rejected {
			if slices.Contains(epochs, r.Epoch) {
				f.refused[r.Reason] += r.Bytes
			}
		}
		for _, d := range st.Deferred {
			if slices.Contains(epochs, d.Epoch) {
				f.held += d.Bytes
			}
		}
	}
	return f
}

// log writes the figure on one line, then the per-edge rows.
func (f figure) log(t *testing.T) {
	var reasons []string
	for r, n := range f.refused {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	sort.Strings(reasons)
	t.Logf("HONEST FIGURE: paid %d / served %d bytes = %.4f over %d edges x %d epochs (site updated mid-epoch; router probes %d B included); gap %d = refused {%s} + held %d + other %d",
		f.paid, f.served, f.share(), len(f.rows)/trafficEpochs, trafficEpochs, f.probes, f.served-f.paid, strings.Join(reasons, " "), f.held,
		f.served-f.paid-f.held-sumValues(f.refused))
	for _, r := range f.rows {
		t.Log("  " + r)
	}
}

func sumValues[K comparable](m map[K]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// short abbreviates a peer ID for logs.
func short(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}
