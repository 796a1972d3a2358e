package devnet

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the origins' database, read by the test
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
)

// TestOriginsKill9: two origins over one PostgreSQL database, 14 storage
// peers, the router, billing and three edges. While a reader fetches
// every acknowledged version through the edges and a publisher publishes
// a new version every second through both origins' URLs, one origin is
// killed with SIGKILL, later restarted, and then the other: no read
// fails, no publish fails, every acknowledged version stays readable and
// the name ends at the last one; the background work (audits, repair)
// moves to the survivor each time, billing keeps settling, and every role's client logged
// and counted its failover.
func TestOriginsKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole network")
	}
	dsn := pgtest.DSN(t)
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	offset := devnetOffset()
	n := startDevnet(t, bin, dir, offset, "--origins", "2", "--db", dsn, "--epoch", "10s", "--lease-ttl", "6s")
	info := n.info
	if len(info.Origins) != 2 || info.Origin.URL != info.Origins[0].URL {
		t.Fatalf("devnet.json origins: %+v (origin %+v)", info.Origins, info.Origin)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	origins := info.Origins[0].URL + "," + info.Origins[1].URL

	// versions are the acknowledged publishes: root → the index page.
	var (
		mu       sync.Mutex
		versions = map[string]string{}
		roots    []string // in publish order
	)
	page, err := os.ReadFile("../examples/site/index.html")
	if err != nil {
		t.Fatal(err)
	}
	versions[info.Sites[0].CID], roots = string(page), []string{info.Sites[0].CID}

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	var reads, failedReads, publishes, failedPublishes atomic.Int64

	// The publisher: a new version every second, with both origins.
	siteDir := filepath.Join(t.TempDir(), "site")
	copyDir(t, "../examples/site", siteDir)
	wg.Go(func() {
		for i := 1; ctx.Err() == nil; i++ {
			text := fmt.Sprintf("%s<p>version %d</p>\n", page, i)
			if err := os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(text), 0o644); err != nil {
				t.Error(err)
				return
			}
			out, err := exec.Command(bin, "publish", siteDir, "--name", info.Sites[0].Name, "--origin", origins,
				"--key", info.PublisherKey, "--ttl", "1m").CombinedOutput()
			publishes.Add(1)
			root := rootOf(string(out))
			if err != nil || root == "" {
				if ctx.Err() == nil {
					failedPublishes.Add(1)
					t.Errorf("publish %d: %v\n%s", i, err, tail(string(out), 15))
				}
			} else {
				mu.Lock()
				versions[root] = text
				roots = append(roots, root)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	// The reader: every acknowledged version through every edge, by its
	// immutable path, 20 reads a second.
	client := &http.Client{Timeout: 20 * time.Second}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			mu.Lock()
			root := roots[rand.IntN(len(roots))]
			want := versions[root]
			mu.Unlock()
			edge := info.Edges[i%len(info.Edges)]
			got, err := fetchBody(ctx, client, edge.URL+"/ipfs/"+root+"/index.html")
			if ctx.Err() != nil {
				return
			}
			reads.Add(1)
			if err != nil || got != want {
				if failedReads.Add(1) <= 5 {
					t.Errorf("read %s through %s: %v (%d bytes, want %d)", root, edge.City, err, len(got), len(want))
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	settledBefore := settledEpochs(t, bin, info)
	// holders returns who holds the audit and repair leases.
	holder := func(name string) string {
		var h string
		db.QueryRow("SELECT holder FROM leases WHERE name = $1", name).Scan(&h)
		return h
	}

	time.Sleep(10 * time.Second) // warm
	for victim := range 2 {
		survivor := info.Origins[1-victim]
		dead := info.Origins[victim] // the second was never restarted: its PID is devnet.json's
		t.Logf("kill -9 %s (pid %d); %d reads, %d publishes so far", dead.URL, dead.PID, reads.Load(), publishes.Load())
		if err := syscall.Kill(dead.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The survivor takes the background work over within the lease
		// TTL and the jobs' intervals (audits every 3 s, repair every 5 s).
		deadline := time.Now().Add(40 * time.Second)
		for holder("audit") != survivor.PeerID || holder("repair") != survivor.PeerID {
			if time.Now().After(deadline) {
				t.Errorf("%s down 40 s: leases audit %s, repair %s; want the survivor %s", dead.URL, holder("audit"), holder("repair"), survivor.PeerID)
				break
			}
			time.Sleep(time.Second)
		}
		time.Sleep(20 * time.Second) // two epochs without it
		if s := settledEpochs(t, bin, info); s <= settledBefore {
			t.Errorf("no epoch settled while %s was down (%d before, %d now)", dead.URL, settledBefore, s)
		} else {
			settledBefore = s
		}
		restartOrigin(t, bin, dead)
		time.Sleep(10 * time.Second)
	}
	stopLoad()
	wg.Wait()
	t.Logf("%d reads (%d failed), %d publishes (%d failed), %d versions acknowledged",
		reads.Load(), failedReads.Load(), publishes.Load(), failedPublishes.Load(), len(roots))
	if failedReads.Load() > 0 || failedPublishes.Load() > 0 {
		t.Fatalf("%d failed reads, %d failed publishes; want none", failedReads.Load(), failedPublishes.Load())
	}
	if len(roots) < 20 {
		t.Errorf("only %d versions acknowledged", len(roots))
	}

	// Every acknowledged version is whole: striped (a manifest at both
	// origins) and readable; the name is at the last one.
	last := roots[len(roots)-1]
	for _, root := range roots {
		for _, o := range info.Origins {
			resp, err := client.Get(o.URL + "/api/v1/manifests/" + root)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("manifest of %s at %s: %v %v", root, o.URL, err, resp)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
	}
	for _, o := range info.Origins {
		got, err := fetchBody(context.Background(), client, o.URL+"/api/v1/names/"+info.Sites[0].Name)
		if err != nil || !strings.Contains(got, last) {
			t.Errorf("name at %s: %v %s; want root %s", o.URL, err, got, last)
		}
	}
	var pending int
	db.QueryRow("SELECT count(*) FROM stripe_jobs WHERE state = 'pending'").Scan(&pending)
	if pending > 0 {
		t.Errorf("%d stripe jobs pending", pending)
	}
	var uploads, gaps int
	db.QueryRow("SELECT count(*), max(id) - min(id) + 1 - count(*) FROM billing_log").Scan(&uploads, &gaps)
	if gaps != 0 {
		t.Errorf("billing log IDs have %d gaps", gaps)
	}

	// Every role's client failed over, and said so.
	for _, role := range []string{"edge-frankfurt", "dns", "billing", "storage-01"} {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", role+".log"))
		if !strings.Contains(string(b), "origin failover") {
			t.Errorf("%s logged no origin failover", role)
		}
	}
	for _, m := range []struct{ url, name string }{
		{info.Storage[0].URL + "/metrics", "topcdn_storage_origin_failovers_total"},
		{strings.TrimSuffix(info.DNS.API, "/api/v1/edges") + "/metrics", "topcdn_dns_origin_failovers_total"},
		{info.Billing.URL + "/metrics", "topcdn_billing_origin_failovers_total"},
	} {
		body, err := fetchBody(context.Background(), client, m.url)
		if err != nil || !strings.Contains(body, m.name+"{") {
			t.Errorf("%s: no %s (%v)", m.url, m.name, err)
		}
	}
}

// restartOrigin starts the origin o again as the devnet ran it, and waits
// until it answers. It is stopped when t ends.
func restartOrigin(t *testing.T, bin string, o Endpoint) {
	t.Helper()
	p := testkit.Start(t, bin, o.Args...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(o.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted origin %s not healthy in 60 s: %v\n%s", o.URL, err, p.Tail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fetchBody GETs u and returns the body of a 200.
func fetchBody(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
	}
	return string(b), err
}

// rootOf returns the root `topcdn publish` printed.
func rootOf(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "root" {
			return f[1]
		}
	}
	return ""
}

// settledEpochs reads how many epochs billing has settled
// (topcdn_billing_settled_epochs_total).
func settledEpochs(t *testing.T, _ string, info Info) int {
	t.Helper()
	body, err := fetchBody(context.Background(), http.DefaultClient, info.Billing.URL+"/metrics")
	if err != nil {
		t.Fatalf("billing metrics: %v", err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "topcdn_billing_settled_epochs_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("billing metrics: %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatal("billing metrics: no topcdn_billing_settled_epochs_total")
	return 0
}
