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
	// Registration: every edge's first heartbeat, as fast as the router
	// takes them, then until the router has probed every edge healthy.
	RegisterPerSec float64 `json:"register_per_sec"`
	RegisterP99Ms  float64 `json:"register_p99_ms"`
	HealthySeconds float64 `json:"all_healthy_seconds"`
	// Heap in use after GC: what N edges and then the names added.
	HeapPerEdgeBytes float64 `json:"heap_per_edge_bytes"`
	HeapPerNameBytes float64 `json:"heap_per_name_bytes"`
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
	// Sustained: every edge every 10 s, spread, while the DNS load runs.
	OfferedPerSec  float64 `json:"heartbeats_offered_per_sec"`
	AcceptedPerSec float64 `json:"heartbeats_accepted_per_sec"`
	HeartbeatP50Ms float64 `json:"heartbeat_p50_ms"`
	HeartbeatP99Ms float64 `json:"heartbeat_p99_ms"`
	Refused        int     `json:"heartbeats_refused"`
	// Burst: one more heartbeat per edge, 64 in flight, no schedule.
	BurstPerSec float64 `json:"burst_heartbeats_per_sec"`
	BurstP99Ms  float64 `json:"burst_p99_ms"`
	// DNS: A queries with ECS over UDP during the sustained phase.
	DNSPerSec   float64 `json:"dns_answers_per_sec"`
	DNSP50Ms    float64 `json:"dns_p50_ms"`
	DNSP99Ms    float64 `json:"dns_p99_ms"`
	DNSFailed   int     `json:"dns_failed"`
	DNSCacheHit float64 `json:"dns_cache_hit_share"`
	// CPUShare is this process's CPU time over the sustained phase, as a
	// share of all cores (router, simulated parties and origin together).
	CPUShare float64 `json:"cpu_share"`
	// Probes is how many health probes the edges answered in the phase.
	Probes int64 `json:"probes"`
}

// routerPhase is one router and its simulated edges.
type routerPhase struct {
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
	edges, err := newScaleEdges(n, cfg.addrs)
	if err != nil {
		return nil, err
	}
	p := &routerPhase{cfg: cfg, so: so, edges: edges, gate: &namesGate{origin: so.o.Handler()}, reg: prometheus.NewRegistry()}
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
	p.r, err = dnsroute.New(dnsroute.Config{Zone: dnsZone, Origin: gateURL, GeoIP: geo, Client: edges.routerClient(),
		Registry: p.reg, RRLRate: -1, ContentProbeInterval: -1, MaxEdges: n + 16})
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
	stops = append(stops, func() { cancel(); wg.Wait() })
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

// heapInUse is the heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// run measures the phase; extra are names to claim during it (one per
// timed names poll and name change).
func (p *routerPhase) run(ctx context.Context, extra []scaleName) (*routerResult, error) {
	n := len(p.edges.keys)
	res := &routerResult{Edges: n}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "scale: [%d edges] "+format+"\n", append([]any{n}, args...)...)
	}
	sender := newHeartbeatSender(p.url, p.cfg.inflight)

	// Registration, names held back.
	reg := make([]beat, n)
	now := time.Now()
	for i := range reg {
		reg[i] = beat{edge: i, t: now, load: baseLoad(i)}
	}
	if err := p.edges.signBeats(reg, scaleHeartbeatInterval); err != nil {
		return nil, err
	}
	h0 := heapInUse()
	logf("registering the edges (%d heartbeats in flight)", p.cfg.inflight)
	t0 := time.Now()
	br := sender.send(ctx, reg)
	if br.refused > 0 {
		return nil, fmt.Errorf("registration: %s", br.errSummary())
	}
	res.RegisterPerSec = float64(n) / br.wall.Seconds()
	res.RegisterP99Ms = msOf(percentile(br.lat, 0.99))
	if err := p.waitHealth(ctx, 5*time.Minute, fmt.Sprintf("%d healthy edges", n), func(h routerHealth) bool { return h.healthy == n }); err != nil {
		return nil, err
	}
	res.HealthySeconds = time.Since(t0).Seconds()
	h1 := heapInUse()
	runtime.KeepAlive(reg)
	reg = nil
	res.HeapPerEdgeBytes = float64(int64(h1)-int64(h0)) / float64(n)
	logf("all healthy after %.1f s; registration %.0f/s", res.HealthySeconds, res.RegisterPerSec)

	// Names polls: the list let through, the stream not yet.
	names := len(p.so.names)
	p.gate.state.Store(gatePolling)
	d, err := p.timeNamesPoll(ctx, names)
	if err != nil {
		return nil, err
	}
	res.NamesPollMs = append(res.NamesPollMs, msOf(d))
	h2 := heapInUse()
	res.HeapPerNameBytes = float64(int64(h2)-int64(h1)) / float64(names)
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

	if err := p.timeAccept(ctx, res); err != nil {
		return nil, err
	}
	logf("AcceptHeartbeat p50 %.0f µs, with a rebuild %.1f ms", res.AcceptPlainUs, res.AcceptRebuildMs)
	if err := p.sustained(ctx, res); err != nil {
		return nil, err
	}
	return res, p.burst(ctx, sender, res)
}

// timeNamesPoll waits for the router to list want names and returns the
// time from the router's request of the list that brought them.
func (p *routerPhase) timeNamesPoll(ctx context.Context, want int) (time.Duration, error) {
	err := p.waitHealth(ctx, 2*time.Minute, fmt.Sprintf("%d names", want), func(h routerHealth) bool { return h.names == want })
	done := time.Now()
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

// timeAccept calls AcceptHeartbeat in process with edge 0's heartbeats:
// first ones that change nothing, then ones that move its load by 30% of
// capacity back and forth, each a new rank and so a rebuild.
func (p *routerPhase) timeAccept(ctx context.Context, res *routerResult) error {
	const k = 20
	beats := make([]beat, 2*k)
	now := time.Now()
	for j := range beats {
		load := baseLoad(0)
		if j >= k && j%2 == 0 {
			load += 300
		}
		beats[j] = beat{edge: 0, t: now.Add(time.Duration(j+1) * time.Millisecond), load: load}
	}
	if err := p.edges.signBeats(beats, scaleHeartbeatInterval); err != nil {
		return err
	}
	var lat [2][]time.Duration
	for j, b := range beats {
		var env identity.Envelope
		if err := json.Unmarshal(b.body, &env); err != nil {
			return err
		}
		t0 := time.Now()
		if err := p.r.AcceptHeartbeat(ctx, &env); err != nil {
			return fmt.Errorf("AcceptHeartbeat: %w", err)
		}
		lat[j/k] = append(lat[j/k], time.Since(t0))
	}
	res.AcceptPlainUs = float64(percentile(lat[0], 0.5).Microseconds())
	res.AcceptRebuildMs = msOf(percentile(lat[1], 0.5))
	return nil
}

// sustained sends every edge's heartbeat every interval for the phase's
// duration, spread evenly, while the DNS load runs.
func (p *routerPhase) sustained(ctx context.Context, res *routerResult) error {
	n := len(p.edges.keys)
	iv := scaleHeartbeatInterval
	rounds := max(int(p.cfg.duration/iv), 1)
	start := time.Now().Add(time.Second)
	var beats []beat
	for k := range rounds {
		for i := range n {
			at := start.Add(time.Duration(k)*iv + time.Duration(i)*iv/time.Duration(n))
			beats = append(beats, beat{edge: i, t: at, load: baseLoad(i), at: at})
		}
	}
	if err := p.edges.signBeats(beats, iv); err != nil {
		return err
	}
	if d := time.Until(start); d < 0 {
		// Signing took longer than planned: shift the schedule, keeping
		// each heartbeat's signed time (within the router's skew).
		for j := range beats {
			beats[j].at = beats[j].at.Add(-d + 100*time.Millisecond)
		}
	}
	phase := time.Duration(rounds) * iv
	fmt.Fprintf(os.Stderr, "scale: [%d edges] sustained: %d heartbeats over %s and DNS (%d queries in flight)\n", n, len(beats), phase, p.cfg.dnsInflight)
	hits0, q0 := counterSum(p.reg, "topcdn_dnsroute_response_cache_hits_total"), counterSum(p.reg, "topcdn_dnsroute_queries_total")
	probes0 := p.edges.probes.Load()
	cpu0, _ := selfCPU()
	dnsCtx, stopDNS := context.WithCancel(ctx)
	var dres dnsResult
	var derr error
	var wg sync.WaitGroup
	wg.Go(func() { dres, derr = dnsLoad(dnsCtx, p.dnsAddr, p.so.names, dnsZone, p.cfg.dnsInflight) })
	hb := newHeartbeatSender(p.url, p.cfg.inflight).send(ctx, beats)
	stopDNS()
	wg.Wait()
	cpu1, _ := selfCPU()
	if derr != nil {
		return fmt.Errorf("dns load: %w", derr)
	}
	res.Probes = p.edges.probes.Load() - probes0
	res.CPUShare = (cpu1 - cpu0).Seconds() / hb.wall.Seconds() / float64(runtime.NumCPU())
	res.OfferedPerSec = float64(n) / iv.Seconds()
	res.AcceptedPerSec = float64(len(hb.lat)) / hb.wall.Seconds()
	res.HeartbeatP50Ms, res.HeartbeatP99Ms = msOf(percentile(hb.lat, 0.5)), msOf(percentile(hb.lat, 0.99))
	res.Refused = hb.refused
	if hb.refused > 0 {
		fmt.Fprintf(os.Stderr, "scale: [%d edges] heartbeats: %s\n", n, hb.errSummary())
	}
	res.DNSPerSec = float64(dres.answered) / dres.wall.Seconds()
	res.DNSP50Ms, res.DNSP99Ms = msOf(percentile(dres.lat, 0.5)), msOf(percentile(dres.lat, 0.99))
	res.DNSFailed = dres.failed
	if q := counterSum(p.reg, "topcdn_dnsroute_queries_total") - q0; q > 0 {
		res.DNSCacheHit = (counterSum(p.reg, "topcdn_dnsroute_response_cache_hits_total") - hits0) / q
	}
	fmt.Fprintf(os.Stderr, "scale: [%d edges] heartbeats %.0f/s (p99 %.1f ms), DNS %.0f answers/s (p99 %.2f ms, %d failed), CPU %.0f%%\n",
		n, res.AcceptedPerSec, res.HeartbeatP99Ms, res.DNSPerSec, res.DNSP99Ms, res.DNSFailed, 100*res.CPUShare)
	return nil
}

// burst sends one more heartbeat per edge, as fast as the router takes
// them.
func (p *routerPhase) burst(ctx context.Context, sender *heartbeatSender, res *routerResult) error {
	n := len(p.edges.keys)
	beats := make([]beat, n)
	now := time.Now()
	for i := range beats {
		beats[i] = beat{edge: i, t: now.Add(time.Duration(i) * time.Microsecond), load: baseLoad(i)}
	}
	if err := p.edges.signBeats(beats, scaleHeartbeatInterval); err != nil {
		return err
	}
	br := sender.send(ctx, beats)
	if br.refused > 0 {
		return fmt.Errorf("burst: %s", br.errSummary())
	}
	res.BurstPerSec = float64(n) / br.wall.Seconds()
	res.BurstP99Ms = msOf(percentile(br.lat, 0.99))
	fmt.Fprintf(os.Stderr, "scale: [%d edges] burst %.0f heartbeats/s (p99 %.1f ms)\n", n, res.BurstPerSec, res.BurstP99Ms)
	return nil
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

// roundAll rounds milliseconds to one decimal, for progress lines.
func roundAll(ms []float64) []float64 {
	out := slices.Clone(ms)
	for i, v := range out {
		out[i] = float64(int(v*10+0.5)) / 10
	}
	return out
}
