package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
)

// edgeDomain is the domain of the simulated edges' URLs: edge i is
// http://eNNNNN.edges.test:PORT, a host name of its own.
const edgeDomain = ".edges.test"

// edgeRegions are the /16s the drill's edges and clients sit in, each a
// city in devnet/geo.mmdb: Frankfurt, Tokyo, São Paulo, Ashburn.
var edgeRegions = [4]byte{1, 2, 3, 4}

// edgeAddr is the public address of edge i when k addresses are shared
// by the edges: edges are dealt round-robin over the four regions, and
// within a region over k/4 addresses 127.R.X.Y (Y from 1 to 250).
func edgeAddr(i, k int) netip.Addr {
	per := max(k/len(edgeRegions), 1)
	r := edgeRegions[i%len(edgeRegions)]
	j := (i / len(edgeRegions)) % per
	return netip.AddrFrom4([4]byte{127, r, byte(j / 250), byte(j%250 + 1)})
}

// simEdgeHost is the host name in edge i's URL.
func simEdgeHost(i int) string { return fmt.Sprintf("e%05d%s", i, edgeDomain) }

// edgeIndex is the inverse of simEdgeHost, without the port.
func edgeIndex(host string) (int, bool) {
	s, ok := strings.CutSuffix(host, edgeDomain)
	if !ok || len(s) < 2 || s[0] != 'e' {
		return 0, false
	}
	i, err := strconv.Atoi(s[1:])
	return i, err == nil && i >= 0
}

// scaleEdges are n simulated edges: keys from seeds, and a child process
// (this program again, see serveScaleEdges) whose one HTTP server answers
// every edge's health probe, on each of the edges' shared addresses at one
// port, naming the edge by the request's Host. The server runs apart so
// that its connections and their buffers are not in the heap measured as
// the router's, nor its garbage collected by the router's runtime.
type scaleEdges struct {
	keys  []*identity.Key
	addrs []netip.Addr // edge i's public address
	port  int
	child *edgeServer
}

// newScaleEdges makes n edges over k addresses and starts their server.
func newScaleEdges(ctx context.Context, n, k int) (*scaleEdges, error) {
	e := &scaleEdges{addrs: make([]netip.Addr, n)}
	keys, err := seedKeys("edge", n)
	if err != nil {
		return nil, err
	}
	e.keys = keys
	for i := range n {
		e.addrs[i] = edgeAddr(i, k)
	}
	if e.child, err = startEdgeServer(ctx, n, k); err != nil {
		return nil, fmt.Errorf("simulated edges: %w", err)
	}
	e.port = e.child.port
	return e, nil
}

// seedKeys derives keys 0 … n-1 of a kind (see seedKey) on every core.
func seedKeys(kind string, n int) ([]*identity.Key, error) {
	keys := make([]*identity.Key, n)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for w := range runtime.NumCPU() {
		wg.Go(func() {
			for i := w; i < n; i += runtime.NumCPU() {
				key, err := seedKey(kind, i)
				if err != nil {
					firstErr.Store(&err)
					return
				}
				keys[i] = key
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return keys, nil
}

// probes is how many health probes the edges have answered.
func (e *scaleEdges) probes() int64 {
	n, err := e.child.probes()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: simulated edges: %v\n", err)
		return -1
	}
	return n
}

func (e *scaleEdges) close() { e.child.close() }

// scaleEdgesEnv, set to "n,k" in the environment, makes `bench scale`
// the simulated edges' health server instead (serveScaleEdges).
const scaleEdgesEnv = "TOPCDN_BENCH_SCALE_EDGES"

// edgeServer is the child process serving the simulated edges' health
// probes. It writes its port on its stdout, then answers each line
// "probes" on its stdin with the count of probes answered, and exits when
// its stdin closes.
type edgeServer struct {
	cmd  *exec.Cmd
	port int
	mu   sync.Mutex
	in   io.WriteCloser
	out  *bufio.Reader
}

// startEdgeServer starts the health server of n edges over k addresses.
func startEdgeServer(ctx context.Context, n, k int) (*edgeServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "scale")
	cmd.Env = append(os.Environ(), scaleEdgesEnv+"="+strconv.Itoa(n)+","+strconv.Itoa(k))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &edgeServer{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line := make(chan string, 1)
	go func() {
		l, _ := s.out.ReadString('\n')
		line <- l
	}()
	var first string
	select {
	case first = <-line:
	case <-ctx.Done():
	case <-time.After(2 * time.Minute):
	}
	if _, err := fmt.Sscanf(first, "port %d", &s.port); err != nil || s.port == 0 {
		s.close()
		return nil, fmt.Errorf("the edges' health server did not start (said %q)", strings.TrimSpace(first))
	}
	return s, nil
}

func (s *edgeServer) probes() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.in, "probes\n"); err != nil {
		return 0, fmt.Errorf("asking the health server: %w", err)
	}
	l, err := s.out.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the health server: %w", err)
	}
	return strconv.ParseInt(strings.TrimSpace(l), 10, 64)
}

// pid is the health server's process ID.
func (s *edgeServer) pid() int { return s.cmd.Process.Pid }

// close ends the health server: its stdin closed, it exits; killed if it
// has not within 10 s.
func (s *edgeServer) close() {
	s.in.Close()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// serveScaleEdges is the child process of startEdgeServer: spec is "n,k".
func serveScaleEdges(spec string) error {
	var n, k int
	if _, err := fmt.Sscanf(spec, "%d,%d", &n, &k); err != nil || n < 1 || k < 1 {
		return fmt.Errorf("%s=%q: want n,k", scaleEdgesEnv, spec)
	}
	raiseFileLimit(1 << 18)
	keys, err := seedKeys("edge", n)
	if err != nil {
		return err
	}
	h := &healthServer{bodies: make([][]byte, n)}
	distinct := map[netip.Addr]bool{}
	for i, key := range keys {
		h.bodies[i], _ = json.Marshal(map[string]string{"peer": key.ID.String()})
		distinct[edgeAddr(i, k)] = true
	}
	listen := slices.SortedFunc(maps.Keys(distinct), netip.Addr.Compare)
	lns, err := listenAllOnOnePort(listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	for _, ln := range lns {
		go srv.Serve(ln)
	}
	fmt.Printf("port %d\n", lns[0].Addr().(*net.TCPAddr).Port)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "probes" {
			fmt.Println(h.probes.Load())
		}
	}
	srv.Close()
	return nil
}

// healthServer answers the health probes of the edges whose health
// bodies it has ({"peer":ID} of edge i).
type healthServer struct {
	bodies [][]byte
	probes atomic.Int64
}

func (h *healthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	i, ok := edgeIndex(host)
	if !ok || i >= len(h.bodies) || r.URL.Path != dnsrouteapi.HealthPath {
		http.NotFound(w, r)
		return
	}
	h.probes.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.Write(h.bodies[i])
}

// listenAllOnOnePort listens on every address at one port (an edge's URL
// and its address share the port), trying a few ports.
func listenAllOnOnePort(addrs []netip.Addr) ([]net.Listener, error) {
	var lastErr error
	for range 10 {
		first, err := net.Listen("tcp", netip.AddrPortFrom(addrs[0], 0).String())
		if err != nil {
			return nil, err
		}
		port := uint16(first.Addr().(*net.TCPAddr).Port)
		lns := []net.Listener{first}
		for _, a := range addrs[1:] {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				lastErr = err
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(addrs) {
			return lns, nil
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	return nil, fmt.Errorf("no port free on all %d addresses: %w", len(addrs), lastErr)
}

// routerClient is the router's HTTP client: the stock one (Go's default
// transport and pooling, a 5 s timeout), but an edge's host name resolves
// to the edge's address, as DNS would; every other host is dialled as is.
// Its timeout is max(5 s, timeout): the stock 5 s also bounds the router's
// fetch of the whole names list, which at 100,000 names (40 MB) took
// longer than that on a loaded 2-core machine, so the drill's router may
// take as long as its names interval (see bench/README.md). Health probes
// keep their own deadline (at most 5 s).
func (e *scaleEdges) routerClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	d := &net.Dialer{Timeout: 5 * time.Second}
	t.DialContext = func(ctx context.Context, network, hostport string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return nil, err
		}
		if i, ok := edgeIndex(host); ok {
			if i >= len(e.addrs) {
				return nil, fmt.Errorf("no simulated edge %s", host)
			}
			hostport = net.JoinHostPort(e.addrs[i].String(), port)
		}
		return d.DialContext(ctx, network, hostport)
	}
	return &http.Client{Timeout: max(5*time.Second, timeout), Transport: t}
}

// heartbeat is edge i's heartbeat made at t with load (of a capacity of
// 1000), sent every interval.
func (e *scaleEdges) heartbeat(i int, t time.Time, load float64, interval time.Duration) dnsrouteapi.Heartbeat {
	return dnsrouteapi.Heartbeat{Peer: e.keys[i].ID.String(), Addrs: []string{e.addrs[i].String()},
		URL: "http://" + simEdgeHost(i) + ":" + strconv.Itoa(e.port), Capacity: 1000, Load: load,
		IntervalMS: interval.Milliseconds(), Time: t.UTC()}
}

// baseLoad is edge i's usual load: 0 to 27% of its capacity.
func baseLoad(i int) float64 { return float64(i%10) * 30 }

// beat is one heartbeat to send: by edge, made at t with load, sent at at
// (zero: as soon as possible), and its signed envelope as JSON.
type beat struct {
	edge int
	t    time.Time
	load float64
	at   time.Time
	body []byte
}

// signBeats signs the heartbeats of beats (edge, t and load set) on every
// core.
func (e *scaleEdges) signBeats(beats []beat, interval time.Duration) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for firstErr.Load() == nil {
				j := int(next.Add(1)) - 1
				if j >= len(beats) {
					return
				}
				b := &beats[j]
				env, err := e.keys[b.edge].Sign(dnsrouteapi.TypeHeartbeat, e.heartbeat(b.edge, b.t, b.load, interval))
				if err == nil {
					b.body, err = json.Marshal(env)
				}
				if err != nil {
					firstErr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("signing heartbeats: %w", *p)
	}
	return nil
}

// sent is one heartbeat sent: when it was due (its schedule's time, or
// when a worker took it), when the router answered, and its refusal.
type sent struct {
	due, done time.Time
	err       error
}

// What becomes of a scheduled heartbeat that a real edge would not have
// sent, or would have given up on: its heartbeat loop sends one at a time,
// each with a timeout of one interval, and skips the ticks that come while
// one is out.
var (
	errSkipped  = errors.New("skipped: the edge's previous heartbeat was still out")
	errTimedOut = errors.New("timed out: no answer within one interval")
)

// beatStats sums up heartbeats: the accepted ones' latencies (from when
// each was due), those the router refused (with the first few errors),
// those that timed out and those skipped.
type beatStats struct {
	lat      []time.Duration
	refused  int
	timedOut int
	skipped  int
	errs     []string
}

// statsOf sums up the heartbeats of ss due in [from, to) (zero times: no
// bound).
func statsOf(ss []sent, from, to time.Time) beatStats {
	var st beatStats
	for _, s := range ss {
		if s.due.IsZero() || !from.IsZero() && s.due.Before(from) || !to.IsZero() && !s.due.Before(to) {
			continue // not sent, or out of the window
		}
		switch {
		case s.err == nil:
			st.lat = append(st.lat, s.done.Sub(s.due))
		case errors.Is(s.err, errSkipped):
			st.skipped++
		case errors.Is(s.err, errTimedOut):
			st.timedOut++
		default:
			st.refused++
			if len(st.errs) < 3 {
				st.errs = append(st.errs, s.err.Error())
			}
		}
	}
	return st
}

// failed counts the heartbeats not accepted.
func (st beatStats) failed() int { return st.refused + st.timedOut + st.skipped }

// errSummary formats what was not accepted, or "" if nothing.
func (st beatStats) errSummary() string {
	if st.failed() == 0 {
		return ""
	}
	s := fmt.Sprintf("%d refused, %d timed out, %d skipped", st.refused, st.timedOut, st.skipped)
	if len(st.errs) > 0 {
		s += "; e.g. " + strings.Join(st.errs, "; ")
	}
	return s
}

// heartbeatSender posts heartbeats to a router over a pool of keep-alive
// connections, as many as requests in flight (the edges' own connections
// would be one each: at 10,000 edges, 20,000 descriptors in this one
// process).
type heartbeatSender struct {
	client   *http.Client
	url      string
	inflight int
}

func newHeartbeatSender(routerURL string, inflight int) *heartbeatSender {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost, t.MaxConnsPerHost = inflight, inflight
	return &heartbeatSender{client: &http.Client{Timeout: time.Minute, Transport: t},
		url: strings.TrimSuffix(routerURL, "/") + dnsrouteapi.HeartbeatPath, inflight: inflight}
}

// post sends one heartbeat; the router answers 204 when it accepts it.
func (s *heartbeatSender) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// send posts beats and records what became of beats[j] in out[j]
// (len(beats) long; a beat not due before ctx ended keeps a zero entry).
// out and the per-edge state are the caller's, so that sending allocates
// nothing that outlives it (the router's heap is measured meanwhile).
// Without a schedule (at zero) it keeps inflight requests going as fast
// as the router takes them. With one, each is sent at its time, and its
// latency runs from then, so that a router falling behind shows in it;
// and as a real edge would, an edge sends one at a time: a heartbeat due
// while the edge's previous one is still out is skipped, and one not
// answered within the interval (waiting for a connection here counts) is
// given up.
func (s *heartbeatSender) send(ctx context.Context, beats []beat, interval time.Duration, out []sent, pending []atomic.Bool) {
	// At most one heartbeat per edge is out (without a schedule, the
	// caller sends one per edge).
	jobs := make(chan int, len(pending))
	var wg sync.WaitGroup
	for range s.inflight {
		wg.Go(func() {
			for j := range jobs {
				b := &beats[j]
				due := b.at
				if due.IsZero() {
					due = time.Now()
				} else if time.Since(due) > interval {
					out[j] = sent{due: due, done: time.Now(), err: errTimedOut}
					pending[b.edge].Store(false)
					continue
				}
				rctx, cancel := context.WithDeadline(ctx, due.Add(interval))
				err := s.post(rctx, b.body)
				cancel()
				pending[b.edge].Store(false)
				switch {
				case err != nil && ctx.Err() != nil:
					return // stopped, not refused
				case err != nil && rctx.Err() != nil:
					err = errTimedOut
				}
				out[j] = sent{due: due, done: time.Now(), err: err}
			}
		})
	}
	for j, b := range beats {
		if !b.at.IsZero() {
			if d := time.Until(b.at); d > time.Millisecond {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
			if ctx.Err() == nil && pending[b.edge].Load() {
				out[j] = sent{due: b.at, done: b.at, err: errSkipped}
				continue
			}
			pending[b.edge].Store(true)
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- j
	}
	close(jobs)
	wg.Wait()
}

// sendAll is send with its own records, for a burst.
func (s *heartbeatSender) sendAll(ctx context.Context, beats []beat, interval time.Duration) []sent {
	out := make([]sent, len(beats))
	edges := 0
	for _, b := range beats {
		edges = max(edges, b.edge+1)
	}
	s.send(ctx, beats, interval, out, make([]atomic.Bool, edges))
	return out
}

// warm opens the sender's connections to the router (GET /healthz on
// each), so that they are not counted in the router's heap.
func (s *heartbeatSender) warm(ctx context.Context) {
	u := strings.TrimSuffix(s.url, dnsrouteapi.HeartbeatPath) + "/healthz"
	var wg sync.WaitGroup
	for range s.inflight {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return
			}
			if resp, err := s.client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
}

// wallOf is the time from the first heartbeat due to the last answered.
func wallOf(ss []sent) time.Duration {
	var first, last time.Time
	for _, s := range ss {
		if s.due.IsZero() {
			continue
		}
		if first.IsZero() {
			first, last = s.due, s.done
		}
		if s.due.Before(first) {
			first = s.due
		}
		if s.done.After(last) {
			last = s.done
		}
	}
	return last.Sub(first)
}
