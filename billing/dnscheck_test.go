package billing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// edgeList is a fixed EdgeDirectory.
type edgeList struct {
	edges []dnsrouteapi.EdgeInfo
	err   error
}

func (e edgeList) Edges(ctx context.Context) ([]witness.EdgeInfo, error) {
	return wrapEdges(e.edges), e.err
}

// wrapEdges turns the router's edge list into what a directory returns,
// with nothing tracked yet.
func wrapEdges(es []dnsrouteapi.EdgeInfo) []witness.EdgeInfo {
	out := make([]witness.EdgeInfo, len(es))
	for i, e := range es {
		out[i] = witness.EdgeInfo{EdgeInfo: e}
	}
	return out
}

func TestDNSCheck(t *testing.T) {
	ctx := context.Background()
	pub, edge := testkit.Key(t, 50), testkit.Key(t, 51)
	e0 := t0.Unix() - 60
	big := func(seq uint64) []billingapi.Record { // 100 MiB in 100 responses of 1 MiB
		var rs []billingapi.Record
		for i := range 100 {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", 1<<20, e0))
		}
		return rs
	}
	const MiB = 1 << 20
	// hb lists the edge with heartbeats reporting bytes, its last one at
	// t0+after (epoch e0 ends at t0), every 2 s.
	hb := func(answers uint64, bytes uint64, after time.Duration, rate float64) *hbDir {
		return &hbDir{edges: []witness.EdgeInfo{{EdgeInfo: dnsrouteapi.EdgeInfo{Peer: edge.ID.String(), Healthy: true, Answers: answers,
			IntervalMS: 2000, LastHeartbeat: t0.Add(after), Bytes: bytes}, ByteRate: rate}}}
	}
	const keep = 1
	restarted := hb(3, 1*MiB, 6*time.Second, 0)
	restarted.edges[0].MaxBytes = 150 * MiB
	noTime := hb(3, 1*MiB, 0, 0)
	noTime.edges[0].LastHeartbeat = time.Time{}
	tests := []struct {
		name string
		dns  EdgeDirectory
		now  time.Duration // the clock, after t0
		recs []billingapi.Record
		// resend: the batch is deferred first; 10 s later, after another
		// heartbeat reporting resend bytes (keep: as before), it is sent
		// again.
		resend    uint64
		want      billingapi.Reason
		transient bool
		metric    string
	}{
		{"unconfigured", nil, 0, big(1), 0, "", false, "unconfigured"},
		{"handed out", edgeList{edges: []dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Healthy: true, Answers: 3}}}, 0, big(2), 0, "", false, "ok"},
		{"never handed out, little", edgeList{}, 0, big(3)[:10], 0, "", false, "ok"},
		{"never handed out, much", edgeList{edges: []dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Answers: 0}}}, 0, big(4), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"unlisted, much", edgeList{}, 0, big(5), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"router down", edgeList{err: errors.New("down")}, 0, big(6), 0, "", false, "skipped"},

		// Heartbeats: 100 MiB claimed for epoch e0 (which ends at t0).
		{"heartbeats report more", hb(3, 200*MiB, 6*time.Second, 0), 7 * time.Second, big(7), 0, "", false, "ok"},
		{"heartbeats report less by exactly 1 MiB", hb(3, 99*MiB, 6*time.Second, 0), 7 * time.Second, big(8), 0, "", false, "ok"},
		{"heartbeats report less by 1 MiB and a byte", hb(3, 99*MiB-1, 6*time.Second, 0), 7 * time.Second, big(9), keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		{"heartbeats report 1 MiB", hb(3, 1*MiB, 6*time.Second, 0), 7 * time.Second, big(10), keep, billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		{"never handed out, heartbeats report 1 MiB", hb(0, 1*MiB, 6*time.Second, 0), 7 * time.Second, big(11)[:10], keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		// Last heartbeat 1 s before the epoch ended, 1 s ago, 2 s apart at
		// 1 MiB/s: slack 2 × 1 MiB/s × (1 s + 2 s) + 1 MiB = 7 MiB.
		{"staleness slack: within", hb(3, 93*MiB, -time.Second, MiB), 0, big(12), 0, "", false, "ok"},
		{"staleness slack: beyond: deferred", hb(3, 92*MiB, -time.Second, MiB), 0, big(13), 0, "", true, "deferred"},
		{"staleness slack: beyond, the next heartbeat counts it", hb(3, 92*MiB, -time.Second, MiB), 0, big(14), 100 * MiB, "", false, "ok"},
		{"staleness slack grows with the heartbeat's age", hb(3, 92*MiB, -time.Second, MiB), time.Second, big(15), 0, "", false, "ok"},
		{"restarted edge: its high-water mark counts", restarted, 7 * time.Second, big(16), 0, "", false, "ok"},
		{"edge never reported a byte: skipped", hb(3, 0, 6*time.Second, 0), 7 * time.Second, big(17), 0, "", false, "ok"},
		{"router without heartbeat times: skipped", noTime, 7 * time.Second, big(18), 0, "", false, "ok"},
		// Two records of 2^62 bytes (refused later as inflated) must not
		// wrap the claimed total below the limits.
		{"never handed out, much, total wrapped by huge records", edgeList{}, 0, wrapping(big(19)), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"heartbeats report 1 MiB, total wrapped by huge records", hb(3, 1*MiB, 6*time.Second, 0), 7 * time.Second, wrapping(big(20)), keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestLedger(t, "", Config{DNS: tc.dns})
			tl.setNow(t0.Add(tc.now))
			tl.content.publish("blog", pub.ID, map[string]int64{"big": 1 << 20})
			env := signBatch(t, edge, e0, 1, tc.recs)
			res, err := tl.IngestBatch(ctx, env, netip.Addr{})
			if tc.resend != 0 {
				if !errors.Is(err, errTransient) || reasonOf(err) != "" || counter(tl.metrics.dnsCheck.WithLabelValues("deferred")) != 1 {
					t.Fatalf("first send: %v, want it deferred", err)
				}
				now := t0.Add(tc.now + 10*time.Second)
				tl.setNow(now)
				tc.dns.(*hbDir).beat(now.Add(-time.Second), tc.resend)
				res, err = tl.IngestBatch(ctx, env, netip.Addr{})
			}
			switch {
			case tc.transient:
				if !errors.Is(err, errTransient) || reasonOf(err) != "" {
					t.Fatalf("err %v, want a transient error", err)
				}
			case reasonOf(err) != tc.want || (tc.want == "" && err != nil):
				t.Fatalf("err %v, want reason %q", err, tc.want)
			case err == nil && res.Accepted != len(tc.recs):
				t.Fatalf("accepted %+v", res)
			}
			if got := counter(tl.metrics.dnsCheck.WithLabelValues(tc.metric)); got != 1 {
				t.Fatalf("dns check %s counted %v times", tc.metric, got)
			}
			st, err := tl.Statement(ctx, edge.ID.String())
			switch {
			case tc.want != "" && (err != nil || len(st.Rejected) != 1 || st.Rejected[0].Reason != tc.want || st.Rejected[0].Bytes != claimed(tc.recs)):
				t.Fatalf("statement %+v, %v", st, err)
			case tc.want == "" && err == nil && len(st.Rejected) != 0: // a deferral is no refusal
				t.Fatalf("statement %+v", st)
			}
		})
	}
}

// wrapping appends to rs two records of 2^62 bytes each, whose sum
// overflows an int64.
func wrapping(rs []billingapi.Record) []billingapi.Record {
	last := rs[len(rs)-1]
	for i := range 2 {
		r := last
		r.Serial += uint64(i + 1)
		r.Bytes = 1 << 62
		rs = append(rs, r)
	}
	return rs
}

// hbDir is an EdgeDirectory whose edges send heartbeats (beat).
type hbDir struct {
	mu    sync.Mutex
	edges []witness.EdgeInfo
}

func (d *hbDir) Edges(ctx context.Context) ([]witness.EdgeInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.edges), nil
}

// beat records a heartbeat of every edge at at, reporting bytes (1: the
// same as before) and keeping the highest bytes seen.
func (d *hbDir) beat(at time.Time, bytes uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.edges {
		e := &d.edges[i]
		e.LastHeartbeat = at
		if bytes > 1 {
			e.Bytes = bytes
		}
		e.MaxBytes = max(e.MaxBytes, e.Bytes)
	}
}

// newPartsLedger is a ledger whose DNS router saw edge (key seed
// edgeSeed) answered 3 times and reporting 100 MiB served by t0+6s, with
// the clock at t0+7s and a 1 MiB object "big" of "blog" published by key
// pubSeed. part(n, seq) signs part n (sequence seq) of the edge's batch
// for epoch e0: 60 records of 1 MiB.
func newPartsLedger(t *testing.T, pubSeed, edgeSeed byte) (tl *testLedger, dns *hbDir, edge *identity.Key, e0 int64,
	part func(n int, seq uint64) *identity.Envelope) {
	t.Helper()
	pub := testkit.Key(t, pubSeed)
	edge = testkit.Key(t, edgeSeed)
	e0 = t0.Unix() - 60
	dns = &hbDir{edges: wrapEdges([]dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Healthy: true, Answers: 3, IntervalMS: 2000,
		LastHeartbeat: t0.Add(6 * time.Second), Bytes: 100 << 20}})}
	tl = newTestLedger(t, "", Config{DNS: dns})
	tl.setNow(t0.Add(7 * time.Second))
	tl.content.publish("blog", pub.ID, map[string]int64{"big": 1 << 20})
	part = func(n int, seq uint64) *identity.Envelope {
		var rs []billingapi.Record
		for i := range 60 {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", 1<<20, e0))
		}
		b := mustOpen(t, signBatch(t, edge, e0, seq, rs))
		b.Part = n
		return mustSign(t, edge, billingapi.TypeBatch, b)
	}
	return tl, dns, edge, e0, part
}

// TestHeartbeatCheckSumsParts: the parts of an (edge, epoch) are judged
// together against the heartbeats.
func TestHeartbeatCheckSumsParts(t *testing.T) {
	ctx := context.Background()
	tl, dns, edge, e0, part := newPartsLedger(t, 52, 53)
	if res, err := tl.IngestBatch(ctx, part(0, 1), netip.Addr{}); err != nil || res.Accepted != 60 {
		t.Fatalf("part 0: %+v, %v", res, err)
	}
	// 60 MiB more would be 120 MiB for the epoch: more than 100 MiB + 1 MiB.
	// Deferred until a heartbeat after it, then refused.
	p1 := part(1, 2)
	if _, err := tl.IngestBatch(ctx, p1, netip.Addr{}); !errors.Is(err, errTransient) {
		t.Fatalf("part 1: %v, want it deferred", err)
	}
	tl.setNow(t0.Add(17 * time.Second))
	dns.beat(t0.Add(16*time.Second), 1)
	if _, err := tl.IngestBatch(ctx, p1, netip.Addr{}); reasonOf(err) != billingapi.ReasonImplausibleHeartbeats {
		t.Fatalf("part 1: %v, want %s", err, billingapi.ReasonImplausibleHeartbeats)
	}
	// Another epoch is judged alone.
	other := signBatch(t, edge, e0-60, 3, []billingapi.Record{rec(5000, "blog", "big", 1<<20, e0-60)})
	if res, err := tl.IngestBatch(ctx, other, netip.Addr{}); err != nil || res.Accepted != 1 {
		t.Fatalf("other epoch: %+v, %v", res, err)
	}
}

// barrierContent is a fakeContent whose Object waits (up to a second) until
// n lookups are in flight: concurrent ingests all pass the checks before
// any of them stores.
type barrierContent struct {
	*fakeContent
	arrive chan struct{}
	n      int
}

func (b *barrierContent) Object(ctx context.Context, name, root, c string) (witness.Object, error) {
	select {
	case b.arrive <- struct{}{}:
	default:
	}
	deadline := time.After(time.Second)
	for len(b.arrive) < b.n {
		select {
		case <-deadline:
			return b.fakeContent.Object(ctx, name, root, c)
		case <-time.After(time.Millisecond):
		}
	}
	return b.fakeContent.Object(ctx, name, root, c)
}

// TestHeartbeatCheckConcurrentParts: parts of one epoch posted at once are
// still judged together against the heartbeats; checked side by side, each
// saw none of the others and all were paid.
func TestHeartbeatCheckConcurrentParts(t *testing.T) {
	ctx := context.Background()
	tl, _, _, _, part := newPartsLedger(t, 70, 71)
	const parts = 4
	tl.Ledger.content = &barrierContent{fakeContent: tl.content, arrive: make(chan struct{}, parts), n: parts}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		bytes int64
	)
	for n := range parts {
		env := part(n, uint64(n+1)) // 60 MiB a part; the heartbeats allow 101 MiB
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := tl.IngestBatch(ctx, env, netip.Addr{}); err == nil {
				mu.Lock()
				bytes += res.Bytes
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bytes > 101<<20 {
		t.Fatalf("%d MiB accepted for the epoch, heartbeats allow 101 MiB", bytes>>20)
	}
}

// TestHeartbeatCheckThroughRouter runs the heartbeat check on what a
// DNSDirectory learns from successive polls of a router.
func TestHeartbeatCheckThroughRouter(t *testing.T) {
	ctx := context.Background()
	const MiB = 1 << 20
	pub, edge := testkit.Key(t, 54), testkit.Key(t, 55)
	e0 := t0.Unix() - 60 // ends at t0
	var (
		mu  sync.Mutex
		cur dnsrouteapi.EdgeInfo
	)
	beat := func(bytes uint64, at time.Duration) {
		mu.Lock()
		cur = dnsrouteapi.EdgeInfo{Peer: edge.ID.String(), Healthy: true, Answers: 4, IntervalMS: 2000, Bytes: bytes, LastHeartbeat: t0.Add(at)}
		mu.Unlock()
	}
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode([]dnsrouteapi.EdgeInfo{cur})
	}))
	defer router.Close()
	batch := func(epoch int64, seq uint64, mib int) *identity.Envelope {
		var rs []billingapi.Record
		for i := range mib {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", MiB, epoch))
		}
		return signBatch(t, edge, epoch, seq, rs)
	}
	setup := func() (*testLedger, *witness.DNSDirectory) {
		dir := witness.NewDNSDirectory(router.URL, nil)
		tl := newTestLedger(t, "", Config{DNS: dir})
		tl.content.publish("blog", pub.ID, map[string]int64{"big": MiB})
		return tl, dir
	}

	t.Run("staleness slack from the rate between polls", func(t *testing.T) {
		// Polled 10 s apart, 2 s heartbeats: 8 MiB, then 18 MiB 2 s before
		// the epoch ended: 1 MiB/s. The edge served 2 MiB more before the
		// epoch closed; 20 MiB ≤ 18 MiB + 2 × 1 MiB/s × (2.5 s + 2 s) + 1 MiB.
		tl, dir := setup()
		beat(8*MiB, -12*time.Second)
		if _, err := dir.Edges(ctx); err != nil {
			t.Fatal(err)
		}
		beat(18*MiB, -2*time.Second)
		tl.setNow(t0.Add(500 * time.Millisecond))
		if res, err := tl.IngestBatch(ctx, batch(e0, 1, 20), netip.Addr{}); err != nil || res.Bytes != 20*MiB {
			t.Fatalf("honest claim within the slack: %+v, %v", res, err)
		}
		// Without a rate (a single poll), only 1 MiB of slack: deferred,
		// not refused, until a heartbeat after the batch counts it.
		tl, _ = setup()
		tl.setNow(t0.Add(500 * time.Millisecond))
		env := batch(e0, 1, 20)
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) || reasonOf(err) != "" {
			t.Fatalf("claim beyond the slack, heartbeats behind: %v, want it deferred", err)
		}
		beat(21*MiB, 6*time.Second)
		tl.setNow(t0.Add(7 * time.Second))
		if res, err := tl.IngestBatch(ctx, env, netip.Addr{}); err != nil || res.Bytes != 20*MiB {
			t.Fatalf("resent after the heartbeat counted it: %+v, %v", res, err)
		}
	})

	t.Run("a restarted edge keeps its high-water mark", func(t *testing.T) {
		tl, dir := setup()
		beat(50*MiB, -30*time.Second) // the process that served
		if _, err := dir.Edges(ctx); err != nil {
			t.Fatal(err)
		}
		beat(1*MiB, 6*time.Second) // restarted: its counter starts again
		tl.setNow(t0.Add(7 * time.Second))
		if res, err := tl.IngestBatch(ctx, batch(e0, 1, 40), netip.Addr{}); err != nil || res.Bytes != 40*MiB {
			t.Fatalf("batch of the earlier process: %+v, %v", res, err)
		}
		// More than either process ever counted, sent around the restart:
		// perhaps by the process before, whose last counter billing may not
		// have seen. Deferred, not refused, even after later heartbeats.
		env := batch(e0-60, 2, 52)
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) {
			t.Fatalf("first send: %v, want it deferred", err)
		}
		beat(3*MiB, 19*time.Second)
		tl.setNow(t0.Add(20 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) || reasonOf(err) != "" {
			t.Fatalf("resent around the restart: %v, want it deferred", err)
		}
		// Sent well after the restart: refused once a heartbeat after the
		// batch shows no more.
		env = batch(e0-120, 3, 60)
		beat(4*MiB, 89*time.Second)
		tl.setNow(t0.Add(90 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); !errors.Is(err, errTransient) {
			t.Fatalf("first send: %v, want it deferred", err)
		}
		beat(5*MiB, 99*time.Second)
		tl.setNow(t0.Add(100 * time.Second))
		if _, err := tl.IngestBatch(ctx, env, netip.Addr{}); reasonOf(err) != billingapi.ReasonImplausibleHeartbeats {
			t.Fatalf("resent: %v, want %s", err, billingapi.ReasonImplausibleHeartbeats)
		}
	})
}
