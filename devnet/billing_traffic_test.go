package devnet

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// siteFiles are the files of examples/site a client fetches: each is in
// every version of the site the billing test publishes, and each answers
// 200 (no redirect, no 404 body, which billing does not pay).
var siteFiles = []string{
	"/", "/about.html", "/css/style.css", "/img/logo.png", "/img/pattern.svg", "/blog/",
	"/blog/2026/hello-world.html", "/docs/", "/docs/getting-started.html", "/docs/manual.txt",
}

// clients are the devnet's honest clients: each round is one session of a
// client in its own /24, which resolves the site with the DNS router and
// fetches a few of its files from the edge the router answered, as a
// browser would.
type clients struct {
	dnsAddr string // the router, host:port
	host    string // the site's host, e.g. blog.cdn.test
	port    string // the edges' HTTP port
	zone    string
	rng     *rand.Rand

	mu       sync.Mutex
	n        int              // rounds run, which also numbers the source /24s
	cidHost  string           // when set, 1 round in 10 asks for this CID.ipfs.ZONE host
	received map[string]int64 // body bytes received, per edge address
	rounds   map[string]int   // sessions, per edge address
	byCID    int              // rounds that fetched the old root by CID
	oldRoot  string           // the superseded root, once the site is updated
	stale    [2]int64         // responses by name from oldRoot after the update, and their bytes
	failures []error
}

// newClients returns clients of host on the devnet whose router listens
// at dnsAddr and whose edges serve HTTP on port.
func newClients(dnsAddr, host, port, zone string, seed uint64) *clients {
	return &clients{dnsAddr: dnsAddr, host: host, port: port, zone: zone, rng: rand.New(rand.NewPCG(seed, 1)),
		received: map[string]int64{}, rounds: map[string]int{}}
}

// fetchByCID makes 1 round in 10 from now on ask for root, the root the
// site's name pointed to before an update, as ROOT.ipfs.ZONE (the
// router's key cid:ROOT) instead of the site's name; responses by name
// still from root are counted as stale.
func (c *clients) fetchByCID(root string) error {
	r, err := cid.Decode(root)
	if err != nil {
		return fmt.Errorf("root %q: %w", root, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cidHost = cid.NewCidV1(r.Type(), r.Hash()).String() + ".ipfs." + c.zone
	c.oldRoot = root
	return nil
}

// run runs rounds one after the other, pause apart, until ctx ends.
func (c *clients) run(ctx context.Context, pause time.Duration) {
	for ctx.Err() == nil {
		if err := c.round(ctx); err != nil && ctx.Err() == nil {
			c.mu.Lock()
			c.failures = append(c.failures, err)
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// round is one session: a client at 127.C.I.5 (C = 1..3 in turn, so each
// city's edge gets its share; I = 1.. so no two rounds share a /24 and
// none is an edge's 127.C.0.0/24) resolves the host with the router, then
// fetches 1 to 4 distinct files from the first address of the answer (in
// 1 round of 10, the second), connecting from 127.0.0.1 to the answered
// address as `curl --resolve` does, without Accept-Encoding so that the
// bytes received are the bytes the edge counts.
func (c *clients) round(ctx context.Context) error {
	c.mu.Lock()
	n := c.n
	c.n++
	host := c.host
	if c.cidHost != "" && c.rng.IntN(10) == 0 {
		host = c.cidHost
	}
	second := c.rng.IntN(10) == 0
	files := make([]string, 1+c.rng.IntN(4))
	for i, j := range c.rng.Perm(len(siteFiles))[:len(files)] {
		files[i] = siteFiles[j]
	}
	c.mu.Unlock()
	src := net.IPv4(127, byte(1+n%3), byte(1+n/3%250), 5)
	ips, err := Resolve(ctx, c.dnsAddr, host, src)
	if err != nil {
		return fmt.Errorf("round %d: %w", n, err)
	}
	if len(ips) == 0 {
		return fmt.Errorf("round %d: the router answered no edge for %s from %s", n, host, src)
	}
	addr := ips[0].String()
	if second && len(ips) > 1 {
		addr = ips[1].String()
	}
	tr := &http.Transport{
		DisableCompression: true, // no Accept-Encoding: bytes as the edge counts them
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
			return d.DialContext(ctx, network, net.JoinHostPort(addr, c.port))
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var got int64
	for _, f := range files {
		body, roots, err := fetch(ctx, hc, "http://"+net.JoinHostPort(host, c.port)+f)
		got += body
		if err != nil {
			return fmt.Errorf("round %d from %s via %s: %w", n, src, addr, err)
		}
		c.mu.Lock()
		if host == c.host && c.oldRoot != "" && strings.HasPrefix(roots, c.oldRoot) {
			c.stale[0]++
			c.stale[1] += body
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.received[addr] += got
	c.rounds[addr]++
	if host != c.host {
		c.byCID++
	}
	c.mu.Unlock()
	return nil
}

// fetch GETs url with hc and returns the body bytes read and the
// response's X-Ipfs-Roots (the site root first); anything but a whole 200
// answer is an error.
func fetch(ctx context.Context, hc *http.Client, url string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, "", fmt.Errorf("GET %s: body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return n, resp.Header.Get("X-Ipfs-Roots"), nil
}

// summary says what the clients did, for the test's log.
func (c *clients) summary() (rounds int, received int64, perEdge string, failures []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for a, n := range c.received {
		fmt.Fprintf(&b, " %s:%d rounds/%d B", a, c.rounds[a], n)
		received += n
	}
	return c.n, received, strings.TrimSpace(b.String()), c.failures
}
