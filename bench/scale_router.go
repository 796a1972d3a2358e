package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsroute"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
)

// scaleHeartbeatInterval is the simulated edges' heartbeat interval: the
// default an edge runs with.
const scaleHeartbeatInterval = dnsrouteapi.DefaultHeartbeatInterval

// routerResult is what the router phase measured at one edge count.
type routerResult struct {
	Edges int `json:"edges"`
	// Start: the edges join a router that knows none (and no names yet),
	// -ramp of them per 10 s, each heartbeating every 10 s from then on:
	// until the router probed every edge healthy, and the heartbeats'
	// latency and failures meanwhile.
	Ramp           int     `json:"ramp_edges_per_interval"`
	HealthySeconds float64 `json:"cold_all_healthy_seconds"`
	ColdP99Ms      float64 `json:"cold_heartbeat_p99_ms"`
	// ColdFailed counts the heartbeats not accepted meanwhile: refused,
	// timed out or skipped (see heartbeatSender.send).
	ColdFailed int `json:"cold_heartbeats_failed"`
	// Heap in use after GC (and live bytes): what N edges and then the
	// names added.
	HeapPerEdgeBytes float64 `json:"heap_per_edge_bytes"`
	HeapPerNameBytes float64 `json:"heap_per_name_bytes"`
	LivePerEdgeBytes float64 `json:"live_per_edge_bytes"`
	LivePerNameBytes float64 `json:"live_per_name_bytes"`
	// HeapTotalBytes and LiveTotalBytes are what the edges and the names
	// took together: robust where the per-edge and per-name split is not
	// (work in flight when a sample is read).
	HeapTotalBytes int64 `json:"heap_total_bytes"`
	LiveTotalBytes int64 `json:"live_total_bytes"`
	// NamesPollMs are full polls of the names list, from the router's
	// request to the snapshot that has them (fetch, parse, rebuild).
	NamesPollMs []float64 `json:"names_poll_ms"`
	// NameChangeMs are new names claimed at the origin, from ClaimName's
	// return to the router's first A answer for them (the stream).
	NameChangeMs []float64 `json:"name_change_ms"`
	// AcceptHeartbeat called in process: p50 of heartbeats that change
	// nothing answers read, and of heartbeats that re-rank the edge
	// (load moved by a 5% step), each of which rebuilds the snapshot.
	AcceptPlainUs   float64 `json:"accept_plain_us"`
	AcceptRebuildMs float64 `json:"accept_rebuild_ms"`
	// AcceptRebuildEdgesMs is the re-ranking heartbeat's p50 before the
	// router has names (at the end of the start): the rebuild's share
	// that grows with the edges, which every registration and probe
	// verdict of an edge pays during the start.
	AcceptRebuildEdgesMs float64 `json:"accept_rebuild_edges_only_ms"`
	// Sustained: every edge every 10 s, spread, with every name served,
	// while the DNS load runs.
	OfferedPerSec  float64 `json:"heartbeats_offered_per_sec"`
	AcceptedPerSec float64 `json:"heartbeats_accepted_per_sec"`
	HeartbeatP50Ms float64 `json:"heartbeat_p50_ms"`
	HeartbeatP99Ms float64 `json:"heartbeat_p99_ms"`
	Failed         int     `json:"heartbeats_failed"`
	// FailedAll counts the heartbeats not accepted over the whole phase.
	FailedAll int `json:"heartbeats_failed_all"`
	// Burst: one more heartbeat per edge, 64 in flight, no schedule.
	BurstPerSec float64 `json:"burst_heartbeats_per_sec"`
	BurstP99Ms  float64 `json:"burst_p99_ms"`
	// BurstFailed counts the burst's heartbeats not accepted: refused,
	// timed out (a minute each) or not sent when the burst's two minutes
	// ran out.
	BurstFailed int `json:"burst_failed"`
	// DNS: A queries with ECS over UDP during the sustained phase.
	DNSPerSec   float64 `json:"dns_answers_per_sec"`
	DNSP50Ms    float64 `json:"dns_p50_ms"`
	DNSP99Ms    float64 `json:"dns_p99_ms"`
	DNSFailed   int     `json:"dns_failed"`
	DNSCacheHit float64 `json:"dns_cache_hit_share"`
	// DNSInRegion is the share of answers whose first edge sits in the
	// client's region (the ECS subnet's city): geo selection checked.
	DNSInRegion float64 `json:"dns_first_in_region_share"`
	// CPUShare is this process's CPU time over the sustained phase, as a
	// share of all cores: the router, the heartbeat senders, the DNS load
	// and the (idle) origin together.
	CPUShare float64 `json:"cpu_share"`
	// EdgesCPUShare is the simulated edges' health server's (a process of
	// its own), likewise.
	EdgesCPUShare float64 `json:"edges_cpu_share"`
	// ProbesPerSec is the health probes the edges answered per second in
	// the sustained window.
	ProbesPerSec float64 `json:"probes_per_sec"`
}

// routerPhase is one router and its simulated edges.
type routerPhase struct {
	n       int // edges heartbeating; edge n is timeAccept's
	cfg     *scaleConfig
	so      *scaleOrigin
	edges   *scaleEdges
	gate    *namesGate
	r       *dnsroute.Router
	reg     *prometheus.Registry
	api     http.Handler // the router's HTTP API, in process
	url     string       // the router's HTTP API on loopback
	dnsAddr string       // the router's UDP socket
	stop    func()
}

// startRouterPhase starts a router whose origin is the gate (closed) and
// n edges' health server.
func startRouterPhase(ctx context.Context, cfg *scaleConfig, so *scaleOrigin, geo *dnsroute.GeoDB, n int) (*routerPhase, error) {
	edges, err := newScaleEdges(ctx, n+1, cfg.addrs)
	if err != nil {
		return nil, err
	}
	p := &routerPhase{n: n, cfg: cfg, so: so, edges: edges, gate: &namesGate{origin: so.o.Handler()}, reg: prometheus.NewRegistry()}
	var stops []func()
	p.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	stops = append(stops, edges.close)
	gateURL, closeGate, err := serveLoopback(p.gate)
	if err != nil {
		p.stop()
		return nil, err
	}
	stops = append(stops, closeGate)
	p.r, err = dnsroute.New(dnsroute.Config{Zone: dnsZone, Origin: gateURL, GeoIP: geo, Client: edges.routerClient(cfg.namesInterval),
		Registry: p.reg, RRLRate: -1, ContentProbeInterval: -1, MaxEdges: n + 16, NamesInterval: cfg.namesInterval})
	if err != nil {
		p.stop()
		return nil, err
	}
	p.api = p.r.Handler()
	var closeAPI func()
	if p.url, closeAPI, err = serveLoopback(p.api); err != nil {
		p.stop()
		return nil, err
	}
	stops = append(stops, closeAPI)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		p.stop()
		return nil, err
	}
	udp, err := p.r.NewUDPServer(pc)
	if err != nil {
		pc.Close()
		p.stop()
		return nil, err
	}
	go udp.Serve()
	p.dnsAddr = pc.LocalAddr().String()
	stops = append(stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		udp.ShutdownContext(ctx)
	})
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.r.Run(runCtx) })
	stops = append(stops, func() {
		cancel()
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Minute):
			// Its loops wait for r.mu behind queued probe verdicts, each
			// rebuilding the snapshot: left to finish in the background.
			fmt.Fprintf(os.Stderr, "scale: [%d edges] the router's Run did not return within 2 minutes of its stop; going on\n", n)
		}
	})
	return p, p.waitHealth(ctx, 30*time.Second, "the router's first (empty) names poll", func(h routerHealth) bool { return h.ready })
}

// serveLoopback serves h on a loopback port and returns its URL and a
// function that closes it.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// routerHealth is the router's /healthz.
type routerHealth struct {
	ready   bool
	names   int
	healthy int
}

// health asks the router's /healthz in process (no socket).
func (p *routerPhase) health() routerHealth {
	rec := httptest.NewRecorder()
	p.api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var h struct {
		Ready   bool `json:"names_read"`
		Names   int  `json:"names"`
		Healthy int  `json:"healthy_edges"`
	}
	json.Unmarshal(rec.Body.Bytes(), &h)
	return routerHealth{h.Ready, h.Names, h.Healthy}
}

// waitHealth polls health every 2 ms until ok, at most timeout.
func (p *routerPhase) waitHealth(ctx context.Context, timeout time.Duration, what string, ok func(routerHealth) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		h := p.health()
		if ok(h) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router: waited %s for %s: names %d, healthy edges %d", timeout, what, h.names, h.healthy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// heapSample is the heap after a full collection: in use (spans holding
// objects) and live (the objects' bytes).
type heapSample struct{ inuse, live int64 }

func heapNow() heapSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heapSample{int64(m.HeapInuse), int64(m.HeapAlloc)}
}

// scheduleBeats lays out the heartbeats of n edges over rounds intervals:
// ramp edges join per interval, and each sends one per interval from then
// on, the edges' sends spread evenly over the interval. Each beat's at is
// its offset from the zero time (the caller adds the start).
func scheduleBeats(n, ramp, rounds int, iv time.Duration) []beat {
	var beats []beat
	for k := range rounds {
		for i := range min(n, (k+1)*ramp) {
			off := time.Duration(k)*iv + time.Duration(i)*iv/time.Duration(n)
			beats = append(beats, beat{edge: i, load: baseLoad(i), at: time.Time{}.Add(off)})
		}
	}
	return beats
}

// phaseSlack is the time the schedule leaves, past the cold start and
// before the sustained window, for the timed names polls (each waits for
// the router's next poll, every namesInterval, and takes seconds at
// 100,000 names), the stream to come up (within 15 s) and the timed
// changes.
func phaseSlack(polls int, namesInterval time.Duration) time.Duration {
	return 45*time.Second + time.Duration(polls)*(namesInterval+10*time.Second)
}

// run measures the phase; extra are names to claim during it (one per
// timed names poll and name change). Every edge heartbeats every 10 s
// throughout, from a schedule signed before it starts.
func (p *routerPhase) run(ctx context.Context, extra []scaleName) (*routerResult, error) {
	n := p.n
	res := &routerResult{Edges: n, Ramp: min(max(p.cfg.ramp, 0), n)}
	if res.Ramp == 0 {
		res.Ramp = n
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "scale: [%d edges] "+format+"\n", append([]any{n}, args...)...)
	}
	iv := scaleHeartbeatInterval
	ramp := p.cfg.ramp
	if ramp <= 0 || ramp > n {
		ramp = n
	}
	joining := (n + ramp - 1) / ramp // rounds until every edge joined
	rounds := joining - 1 + p.cfg.coldRounds + int((phaseSlack(p.cfg.polls, p.cfg.namesInterval)+p.cfg.duration)/iv) + 1
	beats := scheduleBeats(n, ramp, rounds, iv)
	// About 40 µs of a core per heartbeat to sign.
	start := time.Now().Add(time.Duration(len(beats))*40*time.Microsecond/time.Duration(runtime.NumCPU()) + time.Second)
	for j := range beats {
		beats[j].at = start.Add(beats[j].at.Sub(time.Time{}))
		beats[j].t = beats[j].at
	}
	logf("signing %d heartbeats: %d edges joining per %s, each heartbeating every %s, for up to %s",
		len(beats), ramp, iv, iv, time.Duration(rounds)*iv)
	if err := p.edges.signBeats(beats, iv); err != nil {
		return nil, err
	}
	if late := time.Since(start); late > 0 {
		// Signing took longer than planned: shift the schedule, each
		// heartbeat keeping its signed time (within the router's skew).
		for j := range beats {
			beats[j].at = beats[j].at.Add(late + 100*time.Millisecond)
		}
		start = beats[0].at
	}
	end := beats[len(beats)-1].at
	sched := make([]sent, len(beats))
	pending := make([]atomic.Bool, n)
	sender := newHeartbeatSender(p.url, p.cfg.inflight)
	sender.warm(ctx)
	h0 := heapNow()

	schedCtx, stopSched := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sender.send(schedCtx, beats, iv, sched, pending) })
	var once sync.Once
	stopSchedule := func() []sent {
		once.Do(func() { stopSched(); wg.Wait() })
		return sched
	}
	defer stopSchedule()

	// Cold start: names held back, so that registrations and probe
	// verdicts rebuild snapshots of the edges only.
	logf("start: %d edges joining, %d per %s (%d heartbeats in flight)", n, ramp, iv, p.cfg.inflight)
	cold := time.Until(start) + time.Duration(joining-1+p.cfg.coldRounds)*iv
	if err := p.waitHealth(ctx, cold, fmt.Sprintf("%d healthy edges", n), func(h routerHealth) bool { return h.healthy >= n }); err != nil {
		st := statsOf(stopSchedule(), time.Time{}, time.Time{})
		return nil, fmt.Errorf("%w (%d heartbeats answered in time, %s; the router accepted %.0f; %d probes answered)",
			err, len(st.lat), st.errSummary(), counterSum(p.reg, "topcdn_dnsroute_heartbeats_total"), p.edges.probes())
	}
	coldEnd := time.Now()
	res.HealthySeconds = coldEnd.Sub(start).Seconds()
	logf("all healthy after %.1f s", res.HealthySeconds)
	// One interval more, heartbeats flowing, so that the start's probes
	// and requests in flight are over before the heap is read.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(scaleHeartbeatInterval):
	}
	h1 := heapNow()
	res.HeapPerEdgeBytes = float64(h1.inuse-h0.inuse) / float64(n)
	res.LivePerEdgeBytes = float64(h1.live-h0.live) / float64(n)
	logf("heap per edge: in use %.0f bytes, live %.0f", res.HeapPerEdgeBytes, res.LivePerEdgeBytes)
	var err error
	if _, res.AcceptRebuildEdgesMs, err = p.timeAccept(ctx); err != nil {
		return nil, err
	}
	logf("AcceptHeartbeat with a rebuild, no names yet: %.2f ms", res.AcceptRebuildEdgesMs)

	// Names polls: the list let through, the stream not yet.
	names := len(p.so.names)
	p.gate.state.Store(gatePolling)
	d, err := p.timeNamesPoll(ctx, names)
	if err != nil {
		return nil, err
	}
	res.NamesPollMs = append(res.NamesPollMs, msOf(d))
	h2 := heapNow()
	res.HeapPerNameBytes = float64(h2.inuse-h1.inuse) / float64(names)
	res.LivePerNameBytes = float64(h2.live-h1.live) / float64(names)
	res.HeapTotalBytes, res.LiveTotalBytes = h2.inuse-h0.inuse, h2.live-h0.live
	logf("heap per name: in use %.0f bytes, live %.0f", res.HeapPerNameBytes, res.LivePerNameBytes)
	for k := range p.cfg.polls - 1 {
		if _, err := p.so.claim(ctx, extra[k:k+1], 1); err != nil {
			return nil, err
		}
		names++
		if d, err = p.timeNamesPoll(ctx, names); err != nil {
			return nil, err
		}
		res.NamesPollMs = append(res.NamesPollMs, msOf(d))
	}
	extra = extra[p.cfg.polls-1:]
	logf("names polls (fetch, parse, rebuild) %v ms", roundAll(res.NamesPollMs))

	// The stream: new names reach answers within a round trip.
	p.gate.state.Store(gateOpen)
	if err := p.waitStream(ctx); err != nil {
		return nil, err
	}
	for k := range p.cfg.polls {
		if d, err = p.timeNameChange(ctx, extra[k]); err != nil {
			return nil, err
		}
		res.NameChangeMs = append(res.NameChangeMs, msOf(d))
	}
	logf("new names answered after %v ms", roundAll(res.NameChangeMs))

	if res.AcceptPlainUs, res.AcceptRebuildMs, err = p.timeAccept(ctx); err != nil {
		return nil, err
	}
	logf("AcceptHeartbeat p50 %.0f µs, with a rebuild %.1f ms", res.AcceptPlainUs, res.AcceptRebuildMs)

	from := time.Now()
	to := from.Add(p.cfg.duration)
	if to.After(end) {
		return nil, fmt.Errorf("router: the schedule ends at %s, before the sustained window (cold start took %.0f s; raise -cold-rounds)",
			end.Format(time.TimeOnly), res.HealthySeconds)
	}
	if err := p.sustained(ctx, res, to); err != nil {
		return nil, err
	}
	ss := stopSchedule()
	c := statsOf(ss, start, coldEnd)
	res.ColdP99Ms, res.ColdFailed = msOf(percentile(c.lat, 0.99)), c.failed()
	w := statsOf(ss, from, to)
	res.OfferedPerSec = float64(n) / iv.Seconds()
	res.AcceptedPerSec = float64(len(w.lat)) / to.Sub(from).Seconds()
	res.HeartbeatP50Ms, res.HeartbeatP99Ms = msOf(percentile(w.lat, 0.5)), msOf(percentile(w.lat, 0.99))
	res.Failed = w.failed()
	all := statsOf(ss, time.Time{}, time.Time{})
	res.FailedAll = all.failed()
	if all.failed() > 0 {
		logf("heartbeats: %s", all.errSummary())
	}
	logf("sustained: heartbeats %.0f/s (p99 %.1f ms), DNS %.0f answers/s (p99 %.2f ms, %d failed, %.1f%% first in region), CPU %.0f%% (edges' server %.0f%%)",
		res.AcceptedPerSec, res.HeartbeatP99Ms, res.DNSPerSec, res.DNSP99Ms, res.DNSFailed, 100*res.DNSInRegion, 100*res.CPUShare, 100*res.EdgesCPUShare)
	runtime.KeepAlive(beats)
	p.burst(ctx, sender, res)
	return res, nil
}

// timeNamesPoll waits for the router to list want names and returns the
// time from the router's request of the list that brought them.
func (p *routerPhase) timeNamesPoll(ctx context.Context, want int) (time.Duration, error) {
	failed0 := counterWith(p.reg, "topcdn_dnsroute_polls_total", "source", "origin", "result", "error")
	var failed float64
	err := p.waitHealth(ctx, 2*time.Minute, fmt.Sprintf("%d names", want), func(h routerHealth) bool {
		failed = counterWith(p.reg, "topcdn_dnsroute_polls_total", "source", "origin", "result", "error") - failed0
		return h.names == want || failed > 1
	})
	done := time.Now()
	if err == nil && failed > 1 {
		err = fmt.Errorf("router: its names polls fail (twice): the list takes longer than a poll may (the names interval, -names-interval %s, at least 5 s)",
			p.cfg.namesInterval)
	}
	if err != nil {
		return 0, err
	}
	return done.Sub(time.Unix(0, p.gate.lastList.Load())), nil
}

// waitStream waits until the router follows the origin's name-change
// stream, then a second for its first page.
func (p *routerPhase) waitStream(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for gaugeValue(p.reg, "topcdn_dns_name_stream_up") != 1 {
		if time.Now().After(deadline) {
			return fmt.Errorf("router: not following the name-change stream after a minute")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	time.Sleep(time.Second)
	return nil
}

// timeNameChange claims name and returns the time until the router
// answers for it.
func (p *routerPhase) timeNameChange(ctx context.Context, name scaleName) (time.Duration, error) {
	fqdn := name.human + "." + dnsZone + "."
	if _, err := p.so.claim(ctx, []scaleName{name}, 1); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for time.Since(t0) < time.Minute {
		ok, err := askA(p.dnsAddr, fqdn)
		if err != nil {
			return 0, err
		}
		if ok {
			return time.Since(t0), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("router: no answer for the new name %s after a minute", name.human)
}

// timeAccept calls AcceptHeartbeat in process with the heartbeats of an
// edge of its own (the schedule's edges' times must only go up): its
// first (which registers it, the first time), then ones that change nothing, then ones that move its load by
// 30% of capacity back and forth, each a new rank and so a rebuild.
//
// It returns the p50s: µs without a change, ms with a rebuild.
func (p *routerPhase) timeAccept(ctx context.Context) (plainUs, rebuildMs float64, err error) {
	const k = 20
	beats := make([]beat, 2*k+1)
	now := time.Now()
	for j := range beats {
		load := baseLoad(p.n)
		if j > k && j%2 == 1 {
			load += 300
		}
		beats[j] = beat{edge: p.n, t: now.Add(time.Duration(j+1) * time.Millisecond), load: load}
	}
	if err := p.edges.signBeats(beats, scaleHeartbeatInterval); err != nil {
		return 0, 0, err
	}
	var lat [2][]time.Duration
	for j, b := range beats {
		var env identity.Envelope
		if err := json.Unmarshal(b.body, &env); err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := p.r.AcceptHeartbeat(ctx, &env); err != nil {
			return 0, 0, fmt.Errorf("AcceptHeartbeat: %w", err)
		}
		if j > 0 { // the first registers the edge
			lat[(j-1)/k] = append(lat[(j-1)/k], time.Since(t0))
		}
	}
	return float64(percentile(lat[0], 0.5).Microseconds()), msOf(percentile(lat[1], 0.5)), nil
}

// sustained runs the DNS load until to, while the schedule goes on.
func (p *routerPhase) sustained(ctx context.Context, res *routerResult, to time.Time) error {
	fmt.Fprintf(os.Stderr, "scale: [%d edges] sustained: heartbeats every 10 s and DNS (%d queries in flight) for %s\n", p.n, p.cfg.dnsInflight, p.cfg.duration)
	hits0, q0 := counterSum(p.reg, "topcdn_dnsroute_response_cache_hits_total"), counterSum(p.reg, "topcdn_dnsroute_queries_total")
	probes0 := p.edges.probes()
	cpu0, _ := selfCPU()
	ecpu0, _ := procCPU(p.edges.child.pid())
	t0 := time.Now()
	dnsCtx, cancel := context.WithDeadline(ctx, to)
	dres, err := dnsLoad(dnsCtx, p.dnsAddr, p.so.names, dnsZone, p.cfg.dnsInflight)
	cancel()
	if err != nil {
		return fmt.Errorf("dns load: %w", err)
	}
	cpu1, _ := selfCPU()
	ecpu1, _ := procCPU(p.edges.child.pid())
	wall := time.Since(t0)
	res.ProbesPerSec = float64(p.edges.probes()-probes0) / wall.Seconds()
	res.CPUShare = (cpu1 - cpu0).Seconds() / wall.Seconds() / float64(runtime.NumCPU())
	res.EdgesCPUShare = (ecpu1 - ecpu0).Seconds() / wall.Seconds() / float64(runtime.NumCPU())
	res.DNSPerSec = float64(dres.answered) / dres.wall.Seconds()
	res.DNSP50Ms, res.DNSP99Ms = msOf(percentile(dres.lat, 0.5)), msOf(percentile(dres.lat, 0.99))
	res.DNSFailed = dres.failed
	if dres.answered > 0 {
		res.DNSInRegion = float64(dres.inRegion) / float64(dres.answered)
	}
	if q := counterSum(p.reg, "topcdn_dnsroute_queries_total") - q0; q > 0 {
		res.DNSCacheHit = (counterSum(p.reg, "topcdn_dnsroute_response_cache_hits_total") - hits0) / q
	}
	return nil
}

// burst sends one more heartbeat per edge, as fast as the router takes
// them, for at most two minutes: the rate is of those accepted, and
// those not accepted are counted.
func (p *routerPhase) burst(ctx context.Context, sender *heartbeatSender, res *routerResult) {
	n := p.n
	beats := make([]beat, n)
	now := time.Now()
	for i := range beats {
		beats[i] = beat{edge: i, t: now.Add(time.Duration(i) * time.Microsecond), load: baseLoad(i)}
	}
	if err := p.edges.signBeats(beats, scaleHeartbeatInterval); err != nil {
		res.BurstFailed = n
		fmt.Fprintf(os.Stderr, "scale: [%d edges] burst: %v\n", n, err)
		return
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	ss := sender.sendAll(bctx, beats, time.Minute)
	cancel()
	st := statsOf(ss, time.Time{}, time.Time{})
	res.BurstFailed = n - len(st.lat)
	if w := wallOf(ss); w > 0 {
		res.BurstPerSec = float64(len(st.lat)) / w.Seconds()
	}
	res.BurstP99Ms = msOf(percentile(st.lat, 0.99))
	fmt.Fprintf(os.Stderr, "scale: [%d edges] burst %.0f heartbeats/s (p99 %.1f ms), %d not accepted %s\n",
		n, res.BurstPerSec, res.BurstP99Ms, res.BurstFailed, st.errSummary())
}

// gaugeValue reads a gauge from reg (0 if absent).
func gaugeValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// counterSum sums a counter's children in reg.
func counterSum(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// counterWith reads the child of a counter in reg with the given label
// pairs (0 if absent).
func counterWith(reg *prometheus.Registry, name string, labels ...string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// roundAll rounds milliseconds to one decimal, for progress lines.
func roundAll(ms []float64) []float64 {
	out := slices.Clone(ms)
	for i, v := range out {
		out[i] = float64(int(v*10+0.5)) / 10
	}
	return out
}
