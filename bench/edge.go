package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/topcdn/topcdn/internal/proc"
)

// edgeHost is the Host header of every benchmark request: the site
// "bench" under the edge's domain cdn.test. The other servers ignore it.
const edgeHost = "bench.cdn.test"

// edgeObject is one object every server serves.
type edgeObject struct {
	label string // column heading, e.g. "1KiB"
	name  string // file name under objs/, and URL path
	size  int
}

var edgeObjects = []edgeObject{
	{"1KiB", "obj-1k.bin", 1 << 10},
	{"64KiB", "obj-64k.bin", 64 << 10},
	{"1MiB", "obj-1m.bin", 1 << 20},
}

// Server keys, in the order they are measured and printed.
const (
	srvEdgeHit   = "edge-hit"
	srvFileSrv   = "caddy-file_server"
	srvRespond   = "caddy-respond"
	srvNginx     = "nginx"
	srvEdgeMiss  = "edge-miss"
	srvRevProxy  = "caddy-reverse_proxy"
	edgeMissSize = "1B" // memory_cache of the miss edge: no block fits
)

var edgeServers = []struct{ key, what string }{
	{srvEdgeHit, "topcdn edge, memory_cache 256MiB, warmed (cache hits)"},
	{srvFileSrv, "caddy run: root + file_server"},
	{srvRespond, "caddy run: respond with a static ASCII body of the same size"},
	{srvNginx, "nginx: root, sendfile on, worker_processes auto"},
	{srvEdgeMiss, "topcdn edge, memory_cache " + edgeMissSize + " (every block fetched from the origin)"},
	{srvRevProxy, "caddy run: reverse_proxy to " + srvFileSrv},
	{srvEdgeHitTLS, "the edge-hit process's HTTPS site (tls cert key, ECDSA P-256), keep-alive"},
	{srvFileSrvTLS, "the caddy-file_server process's HTTPS site (tls cert key, ECDSA P-256), keep-alive"},
}

// wrkResult is what one wrk run reported.
type wrkResult struct {
	RPS        float64
	Avg, P99   time.Duration
	Requests   int64
	Non2xx     int64
	SocketErrs int64
	// CPUPerReq is the server's CPU time (user + system, its child
	// processes included) per request over the run, 0 if unknown.
	CPUPerReq time.Duration
}

// edgeCell is every run of one server at one object size.
type edgeCell struct{ runs []wrkResult }

// runsOrNil returns the cell's runs in the order they were measured.
func (c *edgeCell) runsOrNil() []wrkResult {
	if c == nil {
		return nil
	}
	return c.runs
}

func (c *edgeCell) median() wrkResult {
	if c == nil || len(c.runs) == 0 {
		return wrkResult{}
	}
	rs := slices.Clone(c.runs)
	slices.SortFunc(rs, func(a, b wrkResult) int { return cmpFloat(a.RPS, b.RPS) })
	m := rs[len(rs)/2]
	for _, r := range c.runs {
		m.Non2xx = max(m.Non2xx, r.Non2xx)
		m.SocketErrs = max(m.SocketErrs, r.SocketErrs)
	}
	return m
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// edgeBench is the state of one `bench edge` invocation.
type edgeBench struct {
	work, objDir string
	wrk, nginx   string
	topcdn, cady string
	procs        erasureCluster // every process started, to stop them all
	ports        map[string]int
	metricsPorts map[string]int // the edges' Caddy `metrics` sites
	edgeCounts   map[string]map[string]float64
	svcs         map[string]*service
	cert         *benchCert                      // the HTTPS servers' certificate
	handshakes   map[string][]handshakeResult    // HTTPS server → each run's handshakes
	respond      map[string][]byte               // the respond server's body per object
	want         map[string][]byte               // the objects' bytes
	cells        map[string]map[string]*edgeCell // server → object → runs
	problems     []string
	// serverCPUs and clientCPUs are taskset CPU lists for the servers
	// (origin included) and for wrk; empty: not pinned.
	serverCPUs, clientCPUs string
}

// pinned returns the command that runs bin with args on cpus (a taskset
// CPU list), or bin and args themselves if cpus is empty.
func pinned(cpus, bin string, args ...string) (string, []string) {
	if cpus == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", cpus, bin}, args...)
}

// splitCPUs gives the servers the last allowed CPU and wrk the others,
// as taskset CPU lists; empty if there are fewer than two CPUs or no
// taskset.
func splitCPUs() (server, client string) {
	cpus := allowedCPUs()
	if len(cpus) < 2 {
		return "", ""
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "", ""
	}
	var cl []string
	for _, c := range cpus[:len(cpus)-1] {
		cl = append(cl, strconv.Itoa(c))
	}
	return strconv.Itoa(cpus[len(cpus)-1]), strings.Join(cl, ",")
}

// runEdge implements `bench edge`.
func runEdge(ctx context.Context, args []string) error {
	fset := newFlagSet("edge",
		"Serves 1 KiB, 64 KiB and 1 MiB objects from topcdn's edge (cache hits and",
		"misses), Caddy (file_server, respond, reverse_proxy) and nginx, all on",
		"127.0.0.1, and loads each with `wrk -t1 -c64`. Needs wrk and nginx",
		"(apt-get install -y wrk nginx).",
	)
	duration := fset.Duration("duration", 10*time.Second, "length of each wrk run")
	runs := fset.Int("runs", 1, "wrk runs per server and object size (the median is reported)")
	conns := fset.Int("connections", 64, "wrk connections (-c)")
	threads := fset.Int("threads", 1, "wrk threads (-t)")
	hsConns := fset.Int("handshake-conns", 16, "concurrent connections of the TLS handshake load")
	only := fset.String("only", "", "comma-separated `servers` to load (default: all; e.g. "+srvEdgeHitTLS+","+srvFileSrvTLS+");\n"+
		"every server is still started and checked, and handshakes are measured when both HTTPS servers are loaded")
	topcdnBin := fset.String("topcdn", "", "use this prebuilt topcdn `binary` instead of building ./cmd/topcdn")
	caddyBin := fset.String("caddy", "", "use this prebuilt `binary` of ./cmd/caddy instead of building it")
	pin := fset.Bool("pin", false, "run the servers on the last CPU and wrk on the others (taskset), so that the load\n"+
		"generator never takes the measured server's core; needs 2 CPUs and taskset")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	if *duration < time.Second || *runs < 1 || *conns < 1 || *threads < 1 || *threads > *conns || *hsConns < 1 {
		return errors.New("edge: -duration must be ≥ 1s; -runs, -connections, -threads and -handshake-conns positive; -threads ≤ -connections")
	}
	servers, err := selectServers(*only)
	if err != nil {
		return err
	}
	b := &edgeBench{ports: map[string]int{}, metricsPorts: map[string]int{}, edgeCounts: map[string]map[string]float64{}, svcs: map[string]*service{}, respond: map[string][]byte{},
		want: map[string][]byte{}, cells: map[string]map[string]*edgeCell{}, handshakes: map[string][]handshakeResult{}}
	if b.wrk, b.nginx, err = edgeTools(); err != nil {
		return err
	}
	if *pin {
		if b.serverCPUs, b.clientCPUs = splitCPUs(); b.serverCPUs == "" {
			return errors.New("edge: -pin needs at least 2 CPUs and taskset (util-linux); -pin=false runs unpinned")
		}
	}
	cleanup, err := b.setUp(ctx, "edge-work-", *topcdnBin)
	if err != nil {
		return err
	}
	defer cleanup()
	if b.cady = *caddyBin; b.cady == "" {
		if b.cady, err = buildCaddy(ctx, b.work); err != nil {
			return err
		}
	}
	if err := b.writeObjects(); err != nil {
		return err
	}
	if err := b.startAll(ctx); err != nil {
		return fmt.Errorf("edge: %w%s", err, b.procs.logTails())
	}
	if err := b.verifyAll(ctx, "warm-up"); err != nil {
		return fmt.Errorf("edge: %w", err)
	}

	hs := slices.Contains(servers, srvEdgeHitTLS) && slices.Contains(servers, srvFileSrvTLS)
	total := *runs * len(edgeObjects) * len(servers)
	hsTotal := 0
	if hs {
		hsTotal = *runs * len(handshakeServers)
	}
	fmt.Fprintf(os.Stderr, "%d wrk runs and %d handshake runs of %s each (about %s)\n", total, hsTotal, *duration,
		(time.Duration(total+hsTotal) * (*duration + 500*time.Millisecond)).Round(time.Second))
	for run := 1; run <= *runs; run++ {
		for _, o := range edgeObjects {
			for _, s := range edgeServers {
				if !slices.Contains(servers, s.key) {
					continue
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				before := b.edgeMetrics(ctx, s.key)
				r, err := b.runWrk(ctx, s.key, o, *duration, *conns, *threads)
				if err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("edge: interrupted: %w", ctx.Err())
					}
					return fmt.Errorf("edge: %s %s: %w%s", s.key, o.label, err, b.procs.logTails())
				}
				b.countEdge(s.key, o.name, before, b.edgeMetrics(ctx, s.key), r.Requests)
				fmt.Fprintf(os.Stderr, "  run %d %-20s %-6s %10.0f req/s  avg %-9s p99 %-9s%s\n", run, s.key, o.label,
					r.RPS, r.Avg, r.P99, errNote(r))
				b.cell(s.key, o.name).runs = append(b.cell(s.key, o.name).runs, r)
				time.Sleep(500 * time.Millisecond) // let TIME_WAIT and GC settle
			}
		}
		if !hs {
			continue
		}
		for _, k := range handshakeServers {
			r, err := b.runHandshakeLoad(ctx, k, *duration, *hsConns)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("edge: interrupted: %w", ctx.Err())
				}
				return fmt.Errorf("edge: %s handshakes: %w%s", k, err, b.procs.logTails())
			}
			note := ""
			if r.Errors > 0 {
				note = fmt.Sprintf("  (%d errors, first: %s)", r.Errors, r.FirstErr)
			}
			fmt.Fprintf(os.Stderr, "  run %d %-24s %10.0f handshakes/s  %s%s\n", run, k, r.Rate, r.Proto, note)
			b.handshakes[k] = append(b.handshakes[k], r)
			time.Sleep(time.Second) // let TIME_WAIT settle
		}
	}
	if err := b.verifyAll(ctx, "after load"); err != nil {
		b.problems = append(b.problems, err.Error())
	}
	rss := map[string]string{}
	for _, k := range []string{srvEdgeHit, srvEdgeMiss, srvFileSrv, srvRespond, srvRevProxy} {
		rss[k] = procStatus(b.svcs[k].PID(), "VmHWM")
	}
	b.procs.stop()

	b.print(os.Stdout, *duration, *runs, *conns, *threads, rss)
	b.printHandshakes(os.Stdout, *duration, *hsConns)
	b.printEdgeCounts(os.Stdout)
	for _, k := range []string{srvEdgeHit, srvEdgeMiss} {
		b.reportLog(os.Stdout, k)
	}
	for _, k := range handshakeServers {
		for _, r := range b.handshakes[k] {
			if r.Errors > 0 {
				b.problems = append(b.problems, fmt.Sprintf("%s: %d failed handshakes (first: %s)", k, r.Errors, r.FirstErr))
				break
			}
		}
	}
	var bad int64
	for srv, byObj := range b.cells {
		for obj, c := range byObj {
			if m := c.median(); m.Non2xx > 0 {
				bad += m.Non2xx
				b.problems = append(b.problems, fmt.Sprintf("%s %s: %d non-2xx responses", srv, obj, m.Non2xx))
			}
		}
	}
	if len(b.problems) > 0 {
		slices.Sort(b.problems)
		return fmt.Errorf("edge: correctness problems:\n\t%s", strings.Join(b.problems, "\n\t"))
	}
	return nil
}

// selectServers returns the keys of -only's servers in measuring order,
// or every server's if only is empty.
func selectServers(only string) ([]string, error) {
	var all, out []string
	for _, s := range edgeServers {
		all = append(all, s.key)
	}
	if only == "" {
		return all, nil
	}
	want := map[string]bool{}
	for _, k := range strings.Split(only, ",") {
		if k = strings.TrimSpace(k); !slices.Contains(all, k) {
			return nil, fmt.Errorf("edge: -only: unknown server %q (servers: %s)", k, strings.Join(all, ", "))
		}
		want[k] = true
	}
	for _, k := range all {
		if want[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

func errNote(r wrkResult) string {
	var s []string
	if r.Non2xx > 0 {
		s = append(s, fmt.Sprintf("%d non-2xx", r.Non2xx))
	}
	if r.SocketErrs > 0 {
		s = append(s, fmt.Sprintf("%d socket errors", r.SocketErrs))
	}
	if len(s) == 0 {
		return ""
	}
	return "  (" + strings.Join(s, ", ") + ")"
}

func (b *edgeBench) cell(srv, obj string) *edgeCell {
	if b.cells[srv] == nil {
		b.cells[srv] = map[string]*edgeCell{}
	}
	if b.cells[srv][obj] == nil {
		b.cells[srv][obj] = &edgeCell{}
	}
	return b.cells[srv][obj]
}

// edgeTools finds wrk and nginx, or says how to install them.
func edgeTools() (wrk, nginx string, err error) {
	wrk, err1 := exec.LookPath("wrk")
	nginx, err2 := exec.LookPath("nginx")
	if err2 != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				nginx, err2 = p, nil
				break
			}
		}
	}
	var missing []string
	if err1 != nil {
		missing = append(missing, "wrk")
	}
	if err2 != nil {
		missing = append(missing, "nginx")
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("edge: %s not found; install with: apt-get install -y wrk nginx (Debian/Ubuntu)",
			strings.Join(missing, " and "))
	}
	return wrk, nginx, nil
}

// setUp makes b's work directory (prefix…, in the cache) and finds or
// builds topcdn (given: that binary). cleanup stops b's processes and
// removes the directory.
func (b *edgeBench) setUp(ctx context.Context, prefix, given string) (cleanup func(), err error) {
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	if b.work, err = os.MkdirTemp(cache, prefix); err != nil {
		return nil, fmt.Errorf("creating work dir: %w", err)
	}
	cleanup = func() {
		b.procs.stop()
		os.RemoveAll(b.work)
	}
	if b.topcdn = given; b.topcdn == "" {
		if b.topcdn, err = buildTopcdn(ctx, b.work); err != nil {
			cleanup()
			return nil, err
		}
	}
	return cleanup, nil
}

// buildCaddy compiles ./cmd/caddy (stock Caddy with topcdn's module) into
// outDir and returns the binary's path.
func buildCaddy(ctx context.Context, outDir string) (string, error) {
	return goBuild(ctx, outDir, "caddy", "./cmd/caddy")
}

// edgeObjectBytes returns an object's deterministic, incompressible
// content.
func edgeObjectBytes(o edgeObject) []byte {
	r := rand.NewChaCha8(deriveSeed(datasetSeed, "edge/"+o.name))
	b := make([]byte, o.size)
	r.Read(b)
	return b
}

// respondBody returns an ASCII body of n bytes that a Caddyfile can quote.
func respondBody(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[(i*7+i/len(alphabet))%len(alphabet)]
	}
	return b
}

// writeObjects writes objs/ (the objects and an index.html).
func (b *edgeBench) writeObjects() error {
	b.objDir = filepath.Join(b.work, "objs")
	if err := os.MkdirAll(b.objDir, 0o755); err != nil {
		return err
	}
	var index strings.Builder
	index.WriteString("<!doctype html>\n<title>bench</title>\n<ul>\n")
	for _, o := range edgeObjects {
		data := edgeObjectBytes(o)
		b.want[o.name] = data
		b.respond[o.name] = respondBody(o.size)
		if err := os.WriteFile(filepath.Join(b.objDir, o.name), data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&index, "<li><a href=\"/%s\">%s</a>\n", o.name, o.name)
	}
	index.WriteString("</ul>\n")
	return os.WriteFile(filepath.Join(b.objDir, "index.html"), []byte(index.String()), 0o644)
}

// startOrigin starts an origin (bin args…) keeping its data in b.work,
// and makes a publisher key there; it returns the origin and the key's
// path.
func (b *edgeBench) startOrigin(ctx context.Context, bin string, args ...string) (*service, string, error) {
	args = append(args, "--data", filepath.Join(b.work, "origin"), "--listen", "127.0.0.1:0")
	origin, err := startService(ctx, "origin", bin, args...)
	b.procs.add(origin)
	if err != nil {
		return nil, "", err
	}
	key := filepath.Join(b.work, "publisher.key")
	if _, err := runTimed(ctx, time.Minute, nil, b.topcdn, "keygen", "--out", key); err != nil {
		return nil, "", err
	}
	return origin, key, nil
}

// startAll starts the origin, publishes objs/ and starts every server.
func (b *edgeBench) startAll(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "starting origin and publishing objs/ ...")
	bin, args := pinned(b.serverCPUs, b.topcdn, "origin", "--no-stripe")
	origin, key, err := b.startOrigin(ctx, bin, args...)
	if err != nil {
		return err
	}
	res, err := runTimed(ctx, 2*time.Minute, nil, b.topcdn, "publish", b.objDir, "--name", "bench",
		"--origin", origin.url, "--key", key, "-Q")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "published %s as bench (root %s)\n", b.objDir, strings.TrimSpace(res.Stdout))

	for _, s := range edgeServers {
		if b.ports[s.key], err = freeLoopbackPort(); err != nil {
			return err
		}
	}
	// Every Caddy runs with the global options of the repository's edge
	// Caddyfile, write_max_chunk included (file_server's sendfile writes
	// in chunks of it too).
	const global = "{\n\tauto_https off\n\tadmin off\n\tpersist_config off\n" +
		"\tservers {\n\t\ttimeouts {\n\t\t\twrite_max_chunk 1MiB\n\t\t}\n\t}\n}\n"
	site := func(key, body string) string {
		return fmt.Sprintf("%shttp://:%d {\n\tbind 127.0.0.1\n%s}\n", global, b.ports[key], body)
	}
	if b.cert, err = makeBenchCert(b.work); err != nil {
		return err
	}
	edgeBlock := func(mem string) string {
		return fmt.Sprintf("\ttopcdn {\n\t\torigin %s\n\t\tdomain cdn.test\n\t\tmemory_cache %s\n\t}\n", origin.url, mem)
	}
	// An edge's Caddyfile also has a `metrics` site on its own port, so
	// the harness can read the edge's counters without touching the
	// benchmarked site's routes.
	edgeSite := func(key, mem string) string {
		return site(key, edgeBlock(mem)) +
			fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n\tmetrics\n}\n", b.metricsPorts[key])
	}
	for _, k := range []string{srvEdgeHit, srvEdgeMiss} {
		if b.metricsPorts[k], err = freeLoopbackPort(); err != nil {
			return err
		}
	}
	fileServer := fmt.Sprintf("\troot * %s\n\tfile_server\n", b.objDir)
	var respond strings.Builder
	for _, o := range edgeObjects {
		fmt.Fprintf(&respond, "\trespond /%s \"%s\" 200\n", o.name, b.respond[o.name])
	}
	configs := []struct {
		key, conf string
		edge      bool
	}{
		// The HTTPS sites' topcdn block is the HTTP site's, so both
		// share one running edge and its caches (caddymodule's instances).
		{srvEdgeHit, edgeSite(srvEdgeHit, "256MiB") + b.cert.httpsSite(b.ports[srvEdgeHitTLS], edgeBlock("256MiB")), true},
		{srvFileSrv, site(srvFileSrv, fileServer) + b.cert.httpsSite(b.ports[srvFileSrvTLS], fileServer), false},
		{srvRespond, site(srvRespond, respond.String()), false},
		{srvEdgeMiss, edgeSite(srvEdgeMiss, edgeMissSize), true},
		{srvRevProxy, site(srvRevProxy, fmt.Sprintf("\treverse_proxy 127.0.0.1:%d\n", b.ports[srvFileSrv])), false},
	}
	// Caddy's data and config dirs go to the work dir, not ~.
	env := []string{"XDG_DATA_HOME=" + filepath.Join(b.work, "xdg-data"), "XDG_CONFIG_HOME=" + filepath.Join(b.work, "xdg-config")}
	for _, c := range configs {
		file := filepath.Join(b.work, c.key+".Caddyfile")
		if err := os.WriteFile(file, []byte(c.conf), 0o644); err != nil {
			return err
		}
		if c.edge {
			err = b.startServer(ctx, c.key, env, b.topcdn, "edge", "--config", file)
		} else {
			err = b.startServer(ctx, c.key, env, b.cady, "run", "--config", file, "--adapter", "caddyfile")
		}
		if err != nil {
			return err
		}
	}
	for tlsKey, key := range edgeTLSServers {
		b.svcs[tlsKey] = b.svcs[key]
		if p, ok := b.metricsPorts[key]; ok {
			b.metricsPorts[tlsKey] = p
		}
		if err := waitListening(ctx, b.svcs[key], b.ports[tlsKey]); err != nil {
			return fmt.Errorf("%s: %w", tlsKey, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(b.work, "nginx-tmp"), 0o755); err != nil {
		return err
	}
	conf := filepath.Join(b.work, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.nginxConf()), 0o644); err != nil {
		return err
	}
	return b.startServer(ctx, srvNginx, nil, b.nginx, "-c", conf, "-p", b.work, "-e", filepath.Join(b.work, "nginx.err"))
}

// nginxConf returns nginx's configuration: objs/ on its port.
func (b *edgeBench) nginxConf() string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers would run as nobody, who cannot enter root's cache dir.
		user = "user root;\n"
	}
	tmp := filepath.Join(b.work, "nginx-tmp")
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
%serror_log %s;
pid %s;
events {}
http {
	access_log off;
	sendfile on;
	client_body_temp_path %s/body;
	proxy_temp_path %s/proxy;
	fastcgi_temp_path %s/fastcgi;
	uwsgi_temp_path %s/uwsgi;
	scgi_temp_path %s/scgi;
	server {
		listen 127.0.0.1:%d;
		root %s;
	}
}
`, user, filepath.Join(b.work, "nginx.err"), filepath.Join(b.work, "nginx.pid"), tmp, tmp, tmp, tmp, tmp,
		b.ports[srvNginx], b.objDir)
}

// freeLoopbackPort returns a 127.0.0.1 port that was free a moment ago.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts a server process that does not print "listening on"
// (Caddy, nginx, topcdn edge) and waits until its port accepts
// connections. Its output goes to WORK/KEY.log.
func (b *edgeBench) startServer(ctx context.Context, key string, env []string, bin string, args ...string) error {
	bin, args = pinned(b.serverCPUs, bin, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	p, err := proc.Start(cmd, proc.WithName(key), proc.WithLogFile(filepath.Join(b.work, key+".log")))
	if err != nil {
		return err
	}
	s := &service{Process: p}
	b.procs.add(s)
	b.svcs[key] = s
	if err := waitListening(ctx, s, b.ports[key]); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s listening on 127.0.0.1:%d (pid %d)\n", key, b.ports[key], p.PID())
	return nil
}

// waitListening waits until s accepts connections on 127.0.0.1:port.
func waitListening(ctx context.Context, s *service, port int) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(ctx, serviceStartTimeout)
	defer cancel()
	return s.WaitUntil(ctx, "a listener on "+addr, func(ctx context.Context) error {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// url returns the URL of path on a server, https for the HTTPS servers.
func (b *edgeBench) url(key, path string) string {
	scheme := "http"
	if _, ok := edgeTLSServers[key]; ok {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, b.ports[key], path)
}

// get fetches path from a server with the benchmark's Host header.
func (b *edgeBench) get(ctx context.Context, key, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", b.url(key, path), nil)
	if err != nil {
		return 0, nil, err
	}
	req.Host = edgeHost
	tr := &http.Transport{DisableCompression: true, DisableKeepAlives: true}
	if b.cert != nil {
		tr.TLSClientConfig = b.cert.clientConfig()
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// verifyAll fetches every object from every server (which warms the hit
// edge) and checks the bytes.
func (b *edgeBench) verifyAll(ctx context.Context, when string) error {
	var errs []error
	for _, s := range edgeServers {
		for _, o := range edgeObjects {
			want := b.want[o.name]
			if s.key == srvRespond {
				want = b.respond[o.name]
			}
			start := time.Now()
			code, body, err := b.get(ctx, s.key, o.name)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %s %s: %w", when, s.key, o.name, err))
			case code != 200 || !bytes.Equal(body, want):
				errs = append(errs, fmt.Errorf("%s: %s %s: HTTP %d, %d bytes, want 200 and the object's %d bytes (equal: %v)",
					when, s.key, o.name, code, len(body), len(want), bytes.Equal(body, want)))
			case when == "warm-up" && (s.key == srvEdgeHit || s.key == srvEdgeMiss || s.key == srvEdgeHitTLS):
				fmt.Fprintf(os.Stderr, "  %s %s: first fetch %s\n", s.key, o.name, time.Since(start).Round(time.Microsecond))
			}
		}
	}
	return errors.Join(errs...)
}

// runWrk loads one server with one object.
func (b *edgeBench) runWrk(ctx context.Context, key string, o edgeObject, d time.Duration, conns, threads int) (wrkResult, error) {
	url := b.url(key, o.name)
	pid := b.svcs[key].PID()
	cpu0, cpuOK := procTreeCPU(pid)
	bin, args := pinned(b.clientCPUs, b.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second)), "--latency", "-H", "Host: "+edgeHost, url)
	res, err := runTimed(ctx, d+time.Minute, nil, bin, args...)
	if err != nil {
		return wrkResult{}, err
	}
	if s := b.svcs[key]; s.Exited() {
		return wrkResult{}, fmt.Errorf("during the run: %s", s.exitReport())
	}
	r, err := parseWrk(res.Stdout)
	if cpu1, ok := procTreeCPU(pid); err == nil && ok && cpuOK && r.Requests > 0 {
		r.CPUPerReq = (cpu1 - cpu0) / time.Duration(r.Requests)
	}
	return r, err
}

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+Latency\s+(\S+)`)
	wrkP99     = regexp.MustCompile(`(?m)^\s+99%\s+(\S+)`)
	wrkTotal   = regexp.MustCompile(`(?m)^\s+(\d+) requests in`)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocket  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads the results of `wrk --latency` from its output.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk's output:%s", tailOf(out))
	}
	var err error
	if r.RPS, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, err
	}
	if m := wrkLatency.FindStringSubmatch(out); m != nil {
		r.Avg, _ = time.ParseDuration(m[1])
	}
	if m := wrkP99.FindStringSubmatch(out); m != nil {
		r.P99, _ = time.ParseDuration(m[1])
	}
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrs += n
		}
	}
	return r, nil
}

// edgeMetricNames are the edge's counters the benchmark follows, by
// short name.
var edgeMetricNames = map[string]string{
	"topcdn_edge_cache_misses_total":         "upstream blocks",
	"topcdn_edge_cache_hits_total":           "block cache hits",
	"topcdn_edge_response_cache_hits_total":  "response cache hits",
	"topcdn_edge_upstream_fetch_seconds_sum": "upstream seconds",
}

// edgeMetrics returns an edge's counters (summed over their labels) from
// its metrics site, or nil if key is not an edge or they are unavailable.
func (b *edgeBench) edgeMetrics(ctx context.Context, key string) map[string]float64 {
	port, ok := b.metricsPorts[key]
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	return parseEdgeMetrics(resp.Body)
}

// parseEdgeMetrics sums the counters of edgeMetricNames in a Prometheus
// text exposition.
func parseEdgeMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		short, ok := edgeMetricNames[name]
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			out[short] += v
		}
	}
	return out
}

// countEdge adds what an edge's counters moved by during one wrk run.
func (b *edgeBench) countEdge(key, obj string, before, after map[string]float64, requests int64) {
	if before == nil || after == nil {
		return
	}
	k := key + " " + obj
	if b.edgeCounts[k] == nil {
		b.edgeCounts[k] = map[string]float64{}
	}
	for name, v := range after {
		b.edgeCounts[k][name] += v - before[name]
	}
	b.edgeCounts[k]["requests"] += float64(requests)
}

// procStatus returns a field of /proc/PID/status (e.g. "VmHWM"), or "?".
func procStatus(pid int, field string) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}
