package devnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }

// TestDevnetInChromium runs `topcdn devnet` and browses the example site
// over HTTPS with headless Chromium at the address the DNS router
// answers, trusting the devnet's CA through an NSS database (never told
// to ignore certificate errors, and none in its net log), over HTTP/2;
// then kills the nearest edge and 4 storage peers and browses again,
// settles billing, and checks who paid and who earned; then kills the
// origin and browses again. Screenshots of the site and the dashboard go
// to $TOPCDN_ARTIFACTS (default: artifacts/ at the repository root).
func TestDevnetInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole network")
	}
	browser := findBrowser(t)
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	offset := 10000 + rand.IntN(14000) // every port stays below the ephemeral range
	n := startDevnet(t, bin, dir, offset)
	info := n.info
	browser.trust(t, info.CACert)
	site := info.Sites[0]
	artifacts := artifactsDir(t)
	want := "Welcome to topcdn"
	url := site.URL
	if !strings.HasPrefix(url, "https://"+site.Host+":") {
		t.Fatalf("devnet.json: site URL %q, want https://%s:PORT/", url, site.Host)
	}
	frankfurt := net.ParseIP("127.1.0.5")
	var first, second, third string // the edges that served, in turn

	// 1. From "Frankfurt" the router answers the Frankfurt edge first;
	// Chromium loads the page, its stylesheet and its logo from it.
	if !t.Run("from Frankfurt, Chromium loads the site from the Frankfurt edge", func(t *testing.T) {
		first = resolveFirst(t, info.DNS.Addr, site.Host, frankfurt)
		if first != "127.1.0.1" {
			t.Fatalf("from 127.1.0.5 the router answered %s first, want the Frankfurt edge 127.1.0.1", first)
		}
		dom := browser.run(t, first, "--dump-dom", url)
		if !strings.Contains(dom, want) {
			t.Fatalf("the page through %s does not say %q:\n%.500s", first, want, dom)
		}
		edgeLoaded(t, dir, first, "/", "/css/style.css", "/img/logo.png")
		browser.run(t, first, "--screenshot="+filepath.Join(artifacts, "site.png"), "--window-size=1200,900", url)
		// The NSS database is what Chromium trusts the CA by: without
		// it, the same load fails the certificate (-202
		// ERR_CERT_AUTHORITY_INVALID).
		untrusting := browser.untrusting(t)
		if dom, errs, _ := untrusting.load(t, first, "--dump-dom", url); len(errs) == 0 || strings.Contains(dom, want) {
			t.Fatalf("without the NSS database Chromium saw no certificate error (%v) or loaded the page", errs)
		}
	}) {
		return
	}

	// 2. Kill the nearest edge: within 3 heartbeat intervals the router
	// answers another, and the page loads from it.
	if !t.Run("the nearest edge killed, the router answers another and the page loads", func(t *testing.T) {
		killEdge(t, info, first)
		second = waitAnswerChanges(t, info.DNS.Addr, site.Host, frankfurt, first, 30*time.Second)
		if dom := browser.run(t, second, "--dump-dom", url); !strings.Contains(dom, want) {
			t.Fatalf("after the Frankfurt edge died the page through %s does not say %q", second, want)
		}
		edgeLoaded(t, dir, second, "/", "/css/style.css", "/img/logo.png")
	}) {
		return
	}

	// 3. Kill 4 of the 14 storage peers: an edge that never served the
	// site (cold caches) still loads it, rebuilding from the other 10.
	if !t.Run("4 storage peers killed, a cold edge rebuilds the site from the rest", func(t *testing.T) {
		for _, s := range info.Storage[:4] {
			syscall.Kill(s.PID, syscall.SIGKILL)
		}
		for _, src := range []string{"127.2.0.5", "127.3.0.5"} {
			if a := resolveFirst(t, info.DNS.Addr, site.Host, net.ParseIP(src)); a != second && a != first {
				third = a
			}
		}
		if third == "" {
			t.Fatalf("no source address gets the third edge")
		}
		if dom := browser.run(t, third, "--dump-dom", url+"docs/"); !strings.Contains(dom, "Docs") {
			t.Fatalf("with 4 storage peers dead the docs page through %s did not load:\n%.300s", third, dom)
		}
		edgeLoaded(t, dir, third, "/docs/", "/css/style.css")
	}) {
		return
	}

	// 4. The dashboard shows the network, with the traffic the edges
	// reported in their heartbeats.
	if !t.Run("the dashboard shows the network and its traffic", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			var st struct {
				Edges []struct {
					Addrs    []string `json:"addrs"`
					Requests uint64   `json:"requests"`
					Bytes    uint64   `json:"bytes"`
				} `json:"edges"`
			}
			testkit.GetJSON(t, strings.TrimSuffix(info.Dashboard, "/")+"/api/state", &st)
			serving := 0
			for _, e := range st.Edges {
				if e.Requests > 0 && e.Bytes > 0 && (slices.Contains(e.Addrs, second) || slices.Contains(e.Addrs, third)) {
					serving++
				}
			}
			if serving == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the dashboard does not show the traffic of the edges that served: %+v", st.Edges)
			}
			time.Sleep(500 * time.Millisecond)
		}
		dash := browser.run(t, "", "--dump-dom", "--virtual-time-budget=8000", info.Dashboard)
		for _, s := range []string{"Frankfurt", site.CID, "healthy"} {
			if !strings.Contains(dash, s) {
				t.Fatalf("the dashboard does not show %q:\n%.800s", s, dash)
			}
		}
		browser.run(t, "", "--screenshot="+filepath.Join(artifacts, "dashboard.png"), "--window-size=1400,2600",
			"--virtual-time-budget=8000", info.Dashboard)
		t.Logf("screenshots: %s, %s", filepath.Join(artifacts, "site.png"), filepath.Join(artifacts, "dashboard.png"))
	}) {
		return
	}

	// 5. Settle: the publisher paid, the edges that served earned, and the
	// dashboard shows the bytes billed for the site.
	if !t.Run("settlement: the publisher paid, the edges that served earned", func(t *testing.T) {
		waitPaid(t, bin, info, []string{first, second, third})
		var st struct {
			Sites []struct {
				Name   string `json:"name"`
				Served int64  `json:"served"`
			} `json:"sites"`
		}
		testkit.GetJSON(t, strings.TrimSuffix(info.Dashboard, "/")+"/api/state", &st)
		if len(st.Sites) != 1 || st.Sites[0].Served <= 0 {
			t.Fatalf("the dashboard shows no bytes billed for the site: %+v", st.Sites)
		}
	}) {
		return
	}

	// 6. Kill the origin: past the name's TTL, the router still answers
	// and an edge that served the site still serves it, pages it had not
	// served included (names from the last valid record it kept, blocks
	// from the storage peers).
	t.Run("the origin killed, the router answers and an edge still serves", func(t *testing.T) {
		if err := syscall.Kill(info.Origin.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(siteTTL + time.Second)
		if a := resolveFirst(t, info.DNS.Addr, site.Host, net.ParseIP("127.2.0.5")); a == "" {
			t.Fatal("with the origin dead the router answers no edge")
		}
		if dom := browser.run(t, second, "--dump-dom", url+"about.html"); !strings.Contains(dom, "About this site") {
			t.Fatalf("with the origin dead the about page through %s did not load:\n%.300s", second, dom)
		}
		edgeLoaded(t, dir, second, "/about.html")
	})
}

// devnetRun is a running `topcdn devnet`.
type devnetRun struct {
	*testkit.Process
	info Info
}

// pebble is the devnet's CA, which testkit builds next to bin.
const pebble = "github.com/letsencrypt/pebble/v2/cmd/pebble"

// startDevnet runs `topcdn devnet` in dir and waits for its devnet.json.
// Its flags are a 5 s epoch, the example site and --no-https-redirect
// (tests fetch by name over plain HTTP too); flags in extra come after
// them, so they override (--epoch 10s, --site DIR,
// --no-https-redirect=false).
func startDevnet(t *testing.T, bin, dir string, offset int, extra ...string) *devnetRun {
	t.Helper()
	testkit.BuildTool(t, pebble)
	t.Cleanup(func() { // after the devnet stopped
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	args := append([]string{"devnet", "--dir", dir, "--port-offset", strconv.Itoa(offset), "--epoch", "5s",
		"--site", "../examples/site", "--no-https-redirect"}, extra...)
	p := testkit.Start(t, bin, args...)
	t.Cleanup(func() { // before testkit's stop: the devnet stops its roles one by one
		if err := p.Process.Stop(40 * time.Second); err != nil {
			t.Error(err)
		}
	})
	info := filepath.Join(dir, "devnet.json")
	p.WaitUntil(t, 3*time.Minute, info, func(context.Context) error {
		_, err := os.Stat(info)
		return err
	})
	b, err := os.ReadFile(info)
	if err != nil {
		t.Fatal(err)
	}
	n := &devnetRun{Process: p}
	if err := json.Unmarshal(b, &n.info); err != nil {
		t.Fatalf("devnet.json: %v", err)
	}
	if len(n.info.Edges) != 3 || len(n.info.Storage) == 0 || len(n.info.Sites) != 1 || n.info.PublisherID == "" ||
		n.info.CACert == "" || n.info.Sites[0].URL == "" || slices.ContainsFunc(n.info.Edges, func(e Endpoint) bool { return e.HTTPSURL == "" }) {
		t.Fatalf("devnet.json is incomplete: %s", b)
	}
	return n
}

// browser is headless Chromium, with a home directory whose NSS
// database (where Chromium on Linux finds the roots its user added)
// trusts the devnet's CA once trust is called.
type browser struct {
	path string
	home string
}

// findBrowser finds Chromium and certutil, or skips t (fails it with
// TOPCDN_REQUIRE_TOOLS=1).
func findBrowser(t *testing.T) *browser {
	t.Helper()
	b := &browser{home: t.TempDir()}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			b.path = p
			break
		}
	}
	if b.path == "" {
		needTool(t, "chromium is not installed (apt-get install -y chromium)")
	}
	if _, err := exec.LookPath("certutil"); err != nil {
		needTool(t, "certutil is not installed (apt-get install -y libnss3-tools)")
	}
	return b
}

// needTool skips t for want of a tool, or fails it under
// TOPCDN_REQUIRE_TOOLS=1.
func needTool(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("TOPCDN_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// untrusting returns Chromium with a home directory of its own, with no
// NSS database.
func (b *browser) untrusting(t *testing.T) *browser {
	return &browser{path: b.path, home: t.TempDir()}
}

// trust makes an NSS database in the browser's home that trusts the CA
// whose root is the PEM file caCert to identify websites, as a user
// would: certutil -N, then -A -t C,,.
func (b *browser) trust(t *testing.T, caCert string) {
	t.Helper()
	db := filepath.Join(b.home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", "sql:" + db, "-N", "--empty-password"},
		{"-d", "sql:" + db, "-A", "-t", "C,,", "-n", "topcdn-devnet", "-i", caCert},
	} {
		if out, err := exec.Command("certutil", args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
}

func artifactsDir(t *testing.T) string {
	dir := os.Getenv("TOPCDN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	dir = filepath.Join(dir, "devnet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// run runs headless Chromium with the zone's names mapped to addr (the
// router's answer; "" maps nothing) and returns its standard output. Its
// net log must show no certificate error (net_error -200 to -299).
func (b *browser) run(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errs, stderr := b.load(t, addr, args...)
	if len(errs) > 0 {
		t.Fatalf("chromium %v: certificate errors in its net log: %v\n%s", args, errs, tail(stderr, 2000))
	}
	return out
}

// load is run without the check: it returns Chromium's standard output,
// the certificate errors of its net log, and its standard error.
func (b *browser) load(t *testing.T, addr string, args ...string) (stdout string, certErrs []int, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	netlog := filepath.Join(t.TempDir(), "netlog.json")
	all := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--disable-extensions", "--user-data-dir=" + t.TempDir(), "--log-net-log=" + netlog}
	if addr != "" {
		all = append(all, "--host-resolver-rules=MAP *.cdn.test "+addr)
	}
	cmd := exec.CommandContext(ctx, b.path, append(all, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+b.home)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// Chromium's helpers (crashpad) may outlive it holding the output
	// pipes: do not wait for them, and kill its whole process group.
	cmd.WaitDelay = 3 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Headless Chromium never finishes a --screenshot when its standard
	// input is /dev/null (Chromium 156 here); an open pipe works.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(errOut.String(), 2000))
	}
	return out.String(), certErrors(t, netlog), errOut.String()
}

// netError is a net_error in a Chromium net log.
var netError = regexp.MustCompile(`"net_error":\s*(-\d+)`)

// certErrors returns the certificate errors (net_error -200 to -299, e.g.
// -202 ERR_CERT_AUTHORITY_INVALID) of a Chromium net log.
func certErrors(t *testing.T, netlog string) []int {
	t.Helper()
	b, err := os.ReadFile(netlog)
	if err != nil {
		t.Fatalf("chromium wrote no net log: %v", err)
	}
	var errs []int
	for _, m := range netError.FindAllSubmatch(b, -1) {
		if n, _ := strconv.Atoi(string(m[1])); n <= -200 && n >= -299 {
			errs = append(errs, n)
		}
	}
	return errs
}

// resolveFirst asks the router for host as a resolver at src would and
// returns the first address.
func resolveFirst(t *testing.T, dnsAddr, host string, src net.IP) string {
	t.Helper()
	ips, err := Resolve(context.Background(), dnsAddr, host, src)
	if err != nil || len(ips) == 0 {
		t.Fatalf("resolving %s from %s: %v (%d answers)", host, src, err, len(ips))
	}
	return ips[0].String()
}

// waitAnswerChanges waits until the router's first answer for src is no
// longer old, and never includes it.
func waitAnswerChanges(t *testing.T, dnsAddr, host string, src net.IP, old string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ips, err := Resolve(context.Background(), dnsAddr, host, src)
		if err == nil && len(ips) > 0 && !slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.String() == old }) {
			return ips[0].String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router still answers %v (err %v) %s after %s died", ips, err, within, old)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func killEdge(t *testing.T, info Info, addr string) {
	t.Helper()
	for _, e := range info.Edges {
		if strings.Contains(e.URL, "//"+addr+":") {
			if err := syscall.Kill(e.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no edge at %s", addr)
}

// edgeLoaded checks the access log of the edge at addr: Chromium fetched
// each path with status 200 (or 304) over HTTPS, the first (the page)
// with HTTP/2, the others with HTTP/2 or HTTP/3 (which Chromium could
// switch to once the edge advertised it).
func edgeLoaded(t *testing.T, dir, addr string, paths ...string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "edges", "*", "access.log"))
	var file string
	for _, l := range logs {
		conf, _ := os.ReadFile(filepath.Join(filepath.Dir(l), "Caddyfile"))
		if strings.Contains(string(conf), "bind "+addr+"\n") {
			file = l
		}
	}
	if file == "" {
		t.Fatalf("no access log for the edge at %s", addr)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]string{} // path → protocol
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Request struct {
				URI     string              `json:"uri"`
				Proto   string              `json:"proto"`
				TLS     *struct{}           `json:"tls"`
				Headers map[string][]string `json:"headers"`
			} `json:"request"`
			Status int `json:"status"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		ua := strings.Join(e.Request.Headers["User-Agent"], " ")
		if strings.Contains(ua, "HeadlessChrome") && (e.Status == 200 || e.Status == 304) && e.Request.TLS != nil &&
			(e.Request.Proto == "HTTP/2.0" || e.Request.Proto == "HTTP/3.0") {
			if seen[e.Request.URI] != "HTTP/2.0" {
				seen[e.Request.URI] = e.Request.Proto
			}
		}
	}
	for _, p := range paths {
		if seen[p] == "" || p == paths[0] && seen[p] != "HTTP/2.0" {
			t.Fatalf("the edge at %s did not serve %s to Chromium over HTTPS with HTTP/2 (seen: %v)", addr, p, seen)
		}
	}
}

// waitPaid settles until the serving edges have earned, then checks the
// publisher paid what they earned (and the storage peers theirs).
func waitPaid(t *testing.T, bin string, info Info, edgeAddrs []string) {
	t.Helper()
	edgeIDs := map[string]string{}
	for _, e := range info.Edges {
		for _, a := range edgeAddrs {
			if strings.Contains(e.URL, "//"+a+":") {
				edgeIDs[a] = e.PeerID
			}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		testkit.Run(t, bin, "billing", "settle", "--billing", info.Billing.URL)
		pub := statement(t, bin, info.Billing.URL, info.PublisherID)
		earned := map[string]int64{}
		for a, id := range edgeIDs {
			earned[a] = statement(t, bin, info.Billing.URL, id).Balance
		}
		// The Frankfurt edge was killed, so its last batch may be lost:
		// the other two must have been paid.
		if earned[edgeAddrs[1]] > 0 && earned[edgeAddrs[2]] > 0 {
			if pub.Balance >= 1_000_000_000_000 {
				t.Fatalf("edges earned %v but the publisher's balance is %d (nothing paid)", earned, pub.Balance)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s of settling the serving edges earned %v; publisher balance %d", earned, pub.Balance)
		}
		time.Sleep(2 * time.Second)
	}
}

type stmt struct {
	Account string            `json:"account"`
	Balance int64             `json:"balance"`
	Entries []json.RawMessage `json:"entries"`
}

func statement(t *testing.T, bin, billingURL, account string) stmt {
	t.Helper()
	var s stmt
	cmd := exec.Command(bin, "billing", "statement", "--billing", billingURL, "--account", account, "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "unknown account") {
			return stmt{Account: account} // nothing paid to or by it yet
		}
		t.Fatalf("statement %s: %v: %s", account, err, stderr.String())
	}
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("statement %s: %v: %s", account, err, out)
	}
	return s
}

func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("=== %s\n%s", filepath.Base(l), tail(string(b), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
