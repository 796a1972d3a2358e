package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestScaleParseSizes(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "1000,10000", want: []int{1000, 10000}},
		{in: "100_000", want: []int{100000}},
		{in: " 5 , 7", want: []int{5, 7}},
		{in: "0", wantErr: true},
		{in: "10,", wantErr: true},
		{in: "ten", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSizes(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("parseSizes(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestScalePercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{0, time.Millisecond},
	}
	for _, tc := range tests {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile sorted its input")
	}
	if got := medianOf([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("medianOf = %v, want 2.5", got)
	}
}

// TestScaleEdgeAddr: edges are dealt over the four regions of the geo
// database, sharing k addresses, and every address is a usable loopback
// address in its region's /16.
func TestScaleEdgeAddr(t *testing.T) {
	const k = 1024
	seen := map[netip.Addr]int{}
	for i := range 10000 {
		a := edgeAddr(i, k)
		b := a.As4()
		if b[0] != 127 || b[1] != edgeRegions[i%4] || b[3] == 0 || b[3] > 250 {
			t.Fatalf("edgeAddr(%d) = %v", i, a)
		}
		seen[a]++
	}
	if len(seen) != k {
		t.Fatalf("%d distinct addresses, want %d", len(seen), k)
	}
	if edgeAddr(3, 4) != netip.MustParseAddr("127.4.0.1") || edgeAddr(4, 8) != netip.MustParseAddr("127.1.0.2") {
		t.Fatalf("edgeAddr(3, 4) = %v, edgeAddr(4, 8) = %v", edgeAddr(3, 4), edgeAddr(4, 8))
	}
}

func TestScaleEdgeHost(t *testing.T) {
	for _, i := range []int{0, 7, 9999, 123456} {
		if got, ok := edgeIndex(simEdgeHost(i)); !ok || got != i {
			t.Errorf("edgeIndex(simEdgeHost(%d)) = %d, %v", i, got, ok)
		}
	}
	for _, h := range []string{"127.0.0.1", "e.edges.test", "x00001.edges.test", "e00001.edges.test.evil", "e-1.edges.test"} {
		if _, ok := edgeIndex(h); ok {
			t.Errorf("edgeIndex(%q) took it", h)
		}
	}
}

// TestScaleECSQuery: the load's queries carry the subnet asked for, and a
// response counts as answered only for the query's ID, NOERROR and an
// answer.
func TestScaleECSQuery(t *testing.T) {
	sub := ecsSubnet(6) // region 2 (Tokyo), second subnet
	if sub != netip.MustParseAddr("127.3.1.0") {
		t.Fatalf("ecsSubnet(6) = %v", sub)
	}
	raw, err := ecsQuery("s000001.cdn.test.", 42, sub)
	if err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil {
		t.Fatal(err)
	}
	e, ok := q.IsEdns0().Option[0].(*dns.EDNS0_SUBNET)
	if !ok || e.SourceNetmask != 24 || !e.Address.Equal(sub.AsSlice()) || q.Id != 42 {
		t.Fatalf("query %v", q)
	}
	reply := func(rcode int, answers int) []byte {
		m := new(dns.Msg)
		m.SetRcode(q, rcode)
		for range answers {
			rr, _ := dns.NewRR("s000001.cdn.test. 30 IN A 127.3.0.1")
			m.Answer = append(m.Answer, rr)
		}
		b, _ := m.Pack()
		return b
	}
	tests := []struct {
		name string
		resp []byte
		id   uint16
		want bool
	}{
		{"answer", reply(dns.RcodeSuccess, 2), 42, true},
		{"other ID", reply(dns.RcodeSuccess, 2), 43, false},
		{"nodata", reply(dns.RcodeSuccess, 0), 42, false},
		{"servfail", reply(dns.RcodeServerFailure, 0), 42, false},
		{"short", []byte{0, 42}, 42, false},
	}
	for _, tc := range tests {
		if got := answered(tc.resp, tc.id); got != tc.want {
			t.Errorf("%s: answered = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestScaleFirstA: the geo check reads the first answer's address, past
// the question and a compressed owner name, and nothing from a response
// without an A record first.
func TestScaleFirstA(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("s000001.cdn.test.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(q)
	for _, s := range []string{"s000001.cdn.test. 30 IN A 127.3.0.7", "s000001.cdn.test. 30 IN A 127.1.0.2"} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	for _, compress := range []bool{true, false} {
		m.Compress = compress
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := firstA(b); !ok || a != netip.MustParseAddr("127.3.0.7") {
			t.Fatalf("firstA (compressed %v) = %v, %v", compress, a, ok)
		}
		// Cut short of the first record's address, nothing.
		end := bytes.Index(b, []byte{127, 3, 0, 7}) + 4
		for cut := range end {
			if a, ok := firstA(b[:cut]); ok {
				t.Fatalf("firstA of %d of %d bytes = %v", cut, len(b), a)
			}
		}
	}
	if !sameRegion(netip.MustParseAddr("127.3.0.7"), ecsSubnet(6)) || sameRegion(netip.MustParseAddr("127.1.0.2"), ecsSubnet(6)) {
		t.Fatal("sameRegion")
	}
	aaaa, _ := dns.NewRR("s000001.cdn.test. 30 IN AAAA ::1")
	m.Answer = []dns.RR{aaaa}
	b, _ := m.Pack()
	if a, ok := firstA(b); ok {
		t.Fatalf("firstA of an AAAA answer = %v", a)
	}
	m.Answer = nil
	b, _ = m.Pack()
	if a, ok := firstA(b); ok {
		t.Fatalf("firstA of no answer = %v", a)
	}
}

func TestScaleGrowth(t *testing.T) {
	if got := growth(2, 5); got != "×2.50" {
		t.Errorf("growth(2, 5) = %q", got)
	}
	if got := growth(0, 5); got != "" {
		t.Errorf("growth(0, 5) = %q", got)
	}
}

// TestScaleEdgeSites: each edge serves sitesPerEdge distinct sites.
func TestScaleEdgeSites(t *testing.T) {
	for _, i := range []int{0, 1, 199, 9999} {
		seen := map[int]bool{}
		for j := range sitesPerEdge {
			s := edgeSite(i, j)
			if s < 0 || s >= scaleSites || seen[s] {
				t.Fatalf("edge %d: site %d", i, s)
			}
			seen[s] = true
		}
	}
}

// TestScaleScheduleBeats: ramp edges join per interval, each then beats once
// per interval, and the beats come in time order, spread over each
// interval.
func TestScaleScheduleBeats(t *testing.T) {
	const iv = 10 * time.Second
	beats := scheduleBeats(10, 4, 4, iv)
	perRound := map[int]int{}
	perEdge := map[int]int{}
	for j, b := range beats {
		off := b.at.Sub(time.Time{})
		perRound[int(off/iv)]++
		perEdge[b.edge]++
		if j > 0 && b.at.Before(beats[j-1].at) {
			t.Fatalf("beat %d at %v before beat %d at %v", j, off, j-1, beats[j-1].at.Sub(time.Time{}))
		}
		if want := time.Duration(b.edge) * iv / 10; off%iv != want {
			t.Fatalf("edge %d beats at %v into its interval, want %v", b.edge, off%iv, want)
		}
	}
	if want := map[int]int{0: 4, 1: 8, 2: 10, 3: 10}; !maps.Equal(perRound, want) {
		t.Fatalf("beats per round %v, want %v", perRound, want)
	}
	if perEdge[0] != 4 || perEdge[9] != 2 {
		t.Fatalf("beats per edge %v", perEdge)
	}
}

// TestMain lets the test binary serve the simulated edges' health probes
// when the drill starts it as their child process (startEdgeServer runs
// this program again).
func TestMain(m *testing.M) {
	if spec := os.Getenv(scaleEdgesEnv); spec != "" {
		if err := serveScaleEdges(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestScaleDrillSmall runs the whole drill at a few edges and names: every
// heartbeat signed, sent over loopback and accepted, every DNS query
// answered with an edge of the client's region first, the names polled and
// streamed, and (where PostgreSQL is installed) the billing epoch paid in
// full. About a minute.
func TestScaleDrillSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale drill takes about a minute")
	}
	cfg := &scaleConfig{edges: []int{8, 16}, names: 60, claimWorkers: 1, apiRuns: 2, duration: 2 * time.Second,
		inflight: 8, dnsInflight: 4, addrs: 8, polls: 2, coldRounds: 3, ramp: 0, namesInterval: 2 * time.Second,
		records: 10, epoch: 3 * time.Second, billingWorkers: 2, billing: true, timeout: 5 * time.Minute}
	if pgBin("initdb") == "" || pgBin("pg_ctl") == "" {
		t.Log("PostgreSQL not installed: the origin on SQLite, no billing epoch")
		cfg.originSQLite, cfg.billing = true, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	rep, err := scaleDrill(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Names.Names != cfg.names || rep.Names.ClaimsPerSec <= 0 || rep.Names.APIBytes == 0 {
		t.Errorf("names: %+v", rep.Names)
	}
	if len(rep.Runs) != len(cfg.edges) {
		t.Fatalf("%d runs, want %d", len(rep.Runs), len(cfg.edges))
	}
	for _, run := range rep.Runs {
		r := run.Router
		if r.FailedAll != 0 || r.DNSFailed != 0 {
			t.Errorf("%d edges: %d heartbeats not accepted, %d DNS queries failed", run.Edges, r.FailedAll, r.DNSFailed)
		}
		if want := float64(run.Edges) / scaleHeartbeatInterval.Seconds(); r.AcceptedPerSec < want/2 {
			t.Errorf("%d edges: %.1f heartbeats/s accepted, want about %.1f", run.Edges, r.AcceptedPerSec, want)
		}
		if r.DNSPerSec <= 0 || r.DNSInRegion < 0.99 {
			t.Errorf("%d edges: %.0f answers/s, %.3f first in the client's region", run.Edges, r.DNSPerSec, r.DNSInRegion)
		}
		if len(r.NamesPollMs) != cfg.polls || len(r.NameChangeMs) != cfg.polls || r.BurstPerSec <= 0 || r.BurstFailed != 0 || r.LivePerEdgeBytes <= 0 {
			t.Errorf("%d edges: router %+v", run.Edges, r)
		}
		if cfg.billing && (run.Billing == nil || run.Billing.Paid != run.Billing.Claimed || run.Billing.RecordsPerSec <= 0) {
			t.Errorf("%d edges: billing %+v", run.Edges, run.Billing)
		}
	}
	var buf bytes.Buffer
	printScale(&buf, cfg, rep)
	for _, want := range []string{"8 edges", "16 edges", "growth", "heartbeats accepted/s", "DNS first edge in the client's region %"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the tables lack %q:\n%s", want, buf.String())
		}
	}
}

// TestScalePrintRows: a table has a column per run and the growth, and a
// failed phase shows as failed, without a growth.
func TestScalePrintRows(t *testing.T) {
	rows := []scaleRow{{"accepted/s", "%.0f", func(r scaleRun) float64 { return r.Router.AcceptedPerSec }}}
	has := func(r scaleRun) bool { return r.Router != nil }
	var buf bytes.Buffer
	printRows(&buf, []scaleRun{{Edges: 1000, Router: &routerResult{AcceptedPerSec: 100}}, {Edges: 10000, Router: &routerResult{AcceptedPerSec: 1000}}}, has, rows)
	if got := buf.String(); !strings.Contains(got, "1000 edges") || !strings.Contains(got, "10000 edges") || !strings.Contains(got, "×10.00") {
		t.Errorf("table:\n%s", got)
	}
	buf.Reset()
	printRows(&buf, []scaleRun{{Edges: 1000, Router: &routerResult{AcceptedPerSec: 100}}, {Edges: 10000, RouterError: "cold start"}}, has, rows)
	if got := buf.String(); !strings.Contains(got, "failed") || strings.Contains(got, "×") {
		t.Errorf("table with a failed run:\n%s", got)
	}
}
