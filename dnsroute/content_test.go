package dnsroute

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// probeConfig makes content probes frequent and quick to give up, for
// tests.
func probeConfig() Config {
	return Config{ContentProbeInterval: 50 * time.Millisecond, ContentProbeTimeout: 300 * time.Millisecond}
}

// metricValue returns the value of the counter or gauge name whose label
// (if not empty) has value, or 0 if there is none.
func metricValue(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || lp.GetName() == label && lp.GetValue() == value
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// edgeInfo returns what GET /api/v1/edges says of the edge on ip.
func (g *geoNet) edgeInfo(t *testing.T, ip string) dnsrouteapi.EdgeInfo {
	t.Helper()
	var list []dnsrouteapi.EdgeInfo
	testkit.GetJSON(t, g.http.URL+dnsrouteapi.EdgesPath, &list)
	for _, e := range list {
		if e.Addrs[0] == ip {
			return e
		}
	}
	t.Fatalf("GET %s does not list %s", dnsrouteapi.EdgesPath, ip)
	return dnsrouteapi.EdgeInfo{}
}

// healthProbes waits until the router has probed the health of every
// edge n more times: it had that many chances to let an edge back.
func (g *geoNet) healthProbes(t *testing.T, n int) {
	t.Helper()
	from := metricValue(t, g.reg, "topcdn_dnsroute_probes_total", "result", "ok")
	want := from + float64(n*len(g.edges))
	testkit.WaitFor(t, 5*time.Second, strconv.Itoa(n)+" more rounds of health probes", func() bool {
		return metricValue(t, g.reg, "topcdn_dnsroute_probes_total", "result", "ok") >= want
	})
}

const tokyo = "127.2.0.1"

func TestContentProbes(t *testing.T) {
	tests := []struct {
		name  string
		fault func(e *fakeEdge) *atomic.Bool // sets the edge's fault, returns the switch that clears it
		lies  bool
	}{
		{"honest edge", nil, false},
		{"serves a tampered block", func(e *fakeEdge) *atomic.Bool { return &e.tamper }, true},
		{"stalls past the timeout", func(e *fakeEdge) *atomic.Bool { return &e.stall }, false},
		{"answers 502", func(e *fakeEdge) *atomic.Bool { return &e.failing }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGeoNet(t, probeConfig())
			for _, name := range []string{"docs", "wiki", "shop"} {
				g.origin.publish(t, name)
			}
			testkit.WaitFor(t, 5*time.Second, "4 roots to probe", func() bool {
				g.mu.Lock()
				defer g.mu.Unlock()
				return len(g.roots) == 4
			})
			e := g.edges[tokyo]
			if tc.fault == nil {
				// The edge is asked for several roots, and stays.
				testkit.WaitFor(t, 5*time.Second, "content probes of 2 roots or more", func() bool { return len(e.askedFor()) >= 2 })
				for c := range e.askedFor() {
					if _, ok := g.origin.block(c); !ok {
						t.Errorf("probed %s, not a published root", c)
					}
				}
				if got := g.answeredBy(t); !slices.Equal(got, []string{tokyo, "127.1.0.1"}) {
					t.Errorf("answers %v, want the Tokyo edge first", got)
				}
				if ei := g.edgeInfo(t, tokyo); !ei.Healthy || ei.ContentError != "" || ei.Quarantine != "" {
					t.Errorf("edge %+v, want healthy", ei)
				}
				if lied := metricValue(t, g.reg, "topcdn_dnsroute_content_probes_total", "result", "lied"); lied != 0 {
					t.Errorf("content_probes_total{result=lied} = %v, want 0", lied)
				}
				return
			}
			fault := tc.fault(e)
			fault.Store(true)
			testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool { return !slices.Contains(g.answeredBy(t), tokyo) })
			if got := g.answeredBy(t); !slices.Equal(got, []string{"127.1.0.1", "127.3.0.1"}) {
				t.Errorf("answers %v, want Frankfurt and São Paulo", got)
			}
			ei := g.edgeInfo(t, tokyo)
			if ei.Healthy || ei.ContentError == "" || (ei.Quarantine != "") != tc.lies || (ei.QuarantinedUntil != nil) != tc.lies {
				t.Fatalf("edge %+v, want unhealthy with a content error, quarantined: %v", ei, tc.lies)
			}
			if tc.lies && time.Until(*ei.QuarantinedUntil) < 59*time.Minute {
				t.Errorf("quarantined until %s, want about an hour from now", ei.QuarantinedUntil)
			}
			wantLied := 0.0
			if tc.lies {
				wantLied = 1
			}
			for _, m := range []struct{ name, label, value string }{
				{"topcdn_dnsroute_content_probes_total", "result", "lied"},
				{"topcdn_dnsroute_quarantines_total", "source", "probe"},
				{"topcdn_dnsroute_quarantined_edges", "", ""},
			} {
				if got := metricValue(t, g.reg, m.name, m.label, m.value); got != wantLied {
					t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, wantLied)
				}
			}

			fault.Store(false)
			if !tc.lies {
				// A failure is not a lie: the edge is back once it answers.
				testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to return", func() bool {
					return slices.Equal(g.answeredBy(t), []string{tokyo, "127.1.0.1"})
				})
				return
			}
			// A liar stays out, though it answers right again and keeps
			// sending heartbeats…
			g.healthProbes(t, 3)
			if slices.Contains(g.answeredBy(t), tokyo) {
				t.Fatal("the Tokyo edge is back in the answers during its quarantine")
			}
			if ei := g.edgeInfo(t, tokyo); ei.Quarantine == "" {
				t.Fatalf("edge %+v, want still quarantined after fresh heartbeats", ei)
			}
			// … and when the router forgets it and it registers anew.
			g.mu.Lock()
			delete(g.Router.edges, e.key.ID)
			g.mu.Unlock()
			testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to register anew", func() bool {
				g.mu.Lock()
				defer g.mu.Unlock()
				return g.Router.edges[e.key.ID] != nil
			})
			g.healthProbes(t, 3)
			if slices.Contains(g.answeredBy(t), tokyo) {
				t.Fatal("the Tokyo edge is back in the answers after registering anew")
			}
			if ei := g.edgeInfo(t, tokyo); ei.Healthy || ei.Quarantine == "" {
				t.Errorf("edge %+v, want quarantined", ei)
			}
		})
	}
}

// TestQuarantineEnds moves the router's clock past a quarantine: the edge
// returns after a good content probe.
func TestQuarantineEnds(t *testing.T) {
	var skew atomic.Int64
	cfg := probeConfig()
	cfg.Quarantine = 10 * time.Minute
	cfg.HeartbeatSkew = time.Hour // the edges' clocks stay behind
	cfg.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	g := newGeoNet(t, cfg)
	e := g.edges[tokyo]
	e.tamper.Store(true)
	testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool { return !slices.Contains(g.answeredBy(t), tokyo) })
	e.tamper.Store(false)
	g.healthProbes(t, 2)
	if slices.Contains(g.answeredBy(t), tokyo) {
		t.Fatal("the Tokyo edge is back in the answers during its quarantine")
	}
	probed := e.contents.Load()
	skew.Store(int64(cfg.Quarantine + time.Minute))
	testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to return", func() bool {
		return slices.Equal(g.answeredBy(t), []string{tokyo, "127.1.0.1"})
	})
	if e.contents.Load() == probed {
		t.Error("the edge returned without a content probe")
	}
	if ei := g.edgeInfo(t, tokyo); ei.Quarantine != "" || ei.QuarantinedUntil != nil {
		t.Errorf("edge %+v, want no quarantine", ei)
	}
	if got := metricValue(t, g.reg, "topcdn_dnsroute_quarantined_edges", "", ""); got != 0 {
		t.Errorf("quarantined_edges = %v, want 0", got)
	}
}

// TestContentProbeDisabled checks that a negative interval turns content
// probes off: a lying edge then stays in the answers.
func TestContentProbeDisabled(t *testing.T) {
	g := newGeoNet(t, Config{ContentProbeInterval: -1})
	g.edges[tokyo].tamper.Store(true)
	g.healthProbes(t, 3)
	if got := g.answeredBy(t); !slices.Equal(got, []string{tokyo, "127.1.0.1"}) {
		t.Errorf("answers %v, want the Tokyo edge first", got)
	}
	if n := g.edges[tokyo].contents.Load(); n != 0 {
		t.Errorf("%d content probes, want none", n)
	}
}

// TestContentProbeVerdicts checks how one content probe judges answers,
// without DNS.
func TestContentProbeVerdicts(t *testing.T) {
	data := []byte("a root block")
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	honest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer honest.Close()
	tests := []struct {
		name  string
		serve http.HandlerFunc
		want  error // nil, errWrongContent, or errAny: an error that is not a lie
	}{
		{"right bytes", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/ipfs/"+c.String() || r.URL.Query().Get("format") != "raw" || r.Header.Get("Accept") != rawType {
				http.Error(w, "wrong request", http.StatusBadRequest)
				return
			}
			w.Write(data)
		}, nil},
		{"other bytes", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("a root blocK")) }, errWrongContent},
		{"empty 200", func(w http.ResponseWriter, r *http.Request) {}, errWrongContent},
		{"a body over the block limit", func(w http.ResponseWriter, r *http.Request) {
			w.Write(make([]byte, dag.MaxBlockSize+10))
		}, errWrongContent},
		{"404", http.NotFound, errAny},
		{"502", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) }, errAny},
		{"a redirect to an honest server is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, honest.URL+r.URL.String(), http.StatusFound)
		}, errAny},
		{"body cut short", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)+5))
			w.Write(data)
		}, errAny},
		{"too slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, errAny},
	}
	// 2 s: long enough for the 2 MiB answer on a loaded machine under the
	// race detector, short enough for "too slow".
	r, err := New(Config{Zone: testZone, Origin: "http://127.0.0.1:1", ContentProbeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.serve)
			defer srv.Close()
			n, err := r.contentProbe(context.Background(), srv.URL+"/", c)
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.want == nil && n != int64(len(data)):
				t.Errorf("read %d bytes, want the block's %d (the edge bills them)", n, len(data))
			case tc.want == errWrongContent && !errors.Is(err, errWrongContent):
				t.Errorf("error %v, want a lie", err)
			case tc.want == errAny && (err == nil || errors.Is(err, errWrongContent)):
				t.Errorf("error %v, want a failure that is not a lie", err)
			}
			if err != nil && !strings.Contains(err.Error(), "content probe") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}

// errAny stands for any error that is not errWrongContent.
var errAny = errors.New("any error")

// TestProbeRoots checks which published roots content probes may ask for.
func TestProbeRoots(t *testing.T) {
	sum := func(mh uint64) string {
		c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh, MhLength: -1}.Sum([]byte("root"))
		if err != nil {
			t.Fatal(err)
		}
		return c.String()
	}
	sha, id := sum(multihash.SHA2_256), sum(multihash.IDENTITY)
	v0 := "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	names := map[string]nameEntry{
		"a": {cid: sha}, "b": {cid: sha}, "c": {cid: id}, "d": {cid: "not a cid"}, "e": {cid: v0},
	}
	var got []string
	for _, c := range probeRoots(names) {
		got = append(got, c.String())
	}
	slices.Sort(got)
	want := []string{v0, sha}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("roots %v, want %v (distinct, decodable, not identity-hashed)", got, want)
	}
}

// fakeBilling answers billing's suspended publishers (none) and forfeits
// (list, whatever since asks for, which it records).
type fakeBilling struct {
	srv   *httptest.Server
	list  atomic.Pointer[[]Forfeit]
	since atomic.Int64
}

func newFakeBilling(t *testing.T) *fakeBilling {
	t.Helper()
	fb := &fakeBilling{}
	fb.list.Store(&[]Forfeit{})
	fb.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case SuspendedPath:
			json.NewEncoder(w).Encode(Suspended{Publishers: []string{}})
		case ForfeitsPath:
			if q := r.URL.Query().Get("since"); q != "" {
				s, err := strconv.ParseInt(q, 10, 64)
				if err != nil {
					http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
					return
				}
				fb.since.Store(s)
			}
			json.NewEncoder(w).Encode(Forfeits{Forfeits: *fb.list.Load()})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(fb.srv.Close)
	return fb
}

// TestBillingForfeits checks that edges billing's prober caught serving
// wrong bytes leave the answers, for a quarantine counted from billing's
// verdict.
func TestBillingForfeits(t *testing.T) {
	fb := newFakeBilling(t)
	g := newGeoNet(t, Config{Billing: fb.srv.URL})
	polls := func() float64 { return metricValue(t, g.reg, "topcdn_dnsroute_polls_total", "source", "forfeits") }
	testkit.WaitFor(t, 5*time.Second, "a poll of forfeits", func() bool { return polls() > 0 })
	if d := time.Since(time.Unix(fb.since.Load(), 0)); d < DefaultQuarantine-time.Minute || d > DefaultQuarantine+time.Minute {
		t.Errorf("asked for forfeits since %s ago, want the quarantine (%s)", d, DefaultQuarantine)
	}
	now := time.Now()
	fb.list.Store(&[]Forfeit{
		{Edge: g.edges[tokyo].key.ID.String(), Epoch: 1, Reason: ReasonWrongContent, At: now.Add(-time.Minute)},
		// Too old to count, and another reason: São Paulo and Frankfurt stay.
		{Edge: g.edges["127.3.0.1"].key.ID.String(), Epoch: 2, Reason: ReasonWrongContent, At: now.Add(-2 * DefaultQuarantine)},
		{Edge: g.edges["127.1.0.1"].key.ID.String(), Epoch: 3, Reason: "epoch_settled", At: now},
	})
	testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool { return !slices.Contains(g.answeredBy(t), tokyo) })
	ei := g.edgeInfo(t, tokyo)
	if ei.Healthy || !strings.Contains(ei.Quarantine, "billing") || ei.QuarantinedUntil == nil {
		t.Fatalf("edge %+v, want quarantined by billing", ei)
	}
	if d := ei.QuarantinedUntil.Sub(now); d < DefaultQuarantine-2*time.Minute || d > DefaultQuarantine {
		t.Errorf("quarantined for %s from now, want the quarantine from billing's verdict a minute ago", d)
	}
	// Polled again, the same verdicts quarantine no one else, nor twice.
	p := polls()
	testkit.WaitFor(t, 5*time.Second, "two more polls", func() bool { return polls() >= p+2 })
	if got := g.answeredBy(t); !slices.Equal(got, []string{"127.1.0.1", "127.3.0.1"}) {
		t.Errorf("answers %v, want Frankfurt and São Paulo", got)
	}
	if got := metricValue(t, g.reg, "topcdn_dnsroute_quarantines_total", "source", "billing"); got != 1 {
		t.Errorf("quarantines_total{source=billing} = %v, want 1", got)
	}
	// Billing no longer lists it (or is down): the quarantine stands.
	fb.list.Store(&[]Forfeit{})
	p = polls()
	testkit.WaitFor(t, 5*time.Second, "two more polls", func() bool { return polls() >= p+2 })
	if slices.Contains(g.answeredBy(t), tokyo) {
		t.Error("the Tokyo edge is back once billing stopped listing it")
	}
}

// TestBillingQuarantineEndsWithoutContentProbes: with content probes
// disabled, an edge billing's prober caught returns to the answers when
// its quarantine ends (there is no content probe to wait for).
func TestBillingQuarantineEndsWithoutContentProbes(t *testing.T) {
	var skew atomic.Int64
	fb := newFakeBilling(t)
	list := &fb.list
	cfg := Config{Billing: fb.srv.URL, ContentProbeInterval: -1, Quarantine: 10 * time.Minute, NamesInterval: 50 * time.Millisecond}
	cfg.HeartbeatSkew = time.Hour // the edges' clocks stay behind
	cfg.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	g := newGeoNet(t, cfg)
	list.Store(&[]Forfeit{{Edge: g.edges[tokyo].key.ID.String(), Epoch: 1, Reason: ReasonWrongContent, At: time.Now()}})
	testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool { return !slices.Contains(g.answeredBy(t), tokyo) })
	list.Store(&[]Forfeit{})
	skew.Store(int64(cfg.Quarantine + time.Minute))
	testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to return", func() bool {
		return slices.Equal(g.answeredBy(t), []string{tokyo, "127.1.0.1"})
	})
	if ei := g.edgeInfo(t, tokyo); !ei.Healthy || ei.Quarantine != "" || ei.ContentError != "" {
		t.Errorf("edge %+v, want healthy and not quarantined", ei)
	}
}

// TestContentProbesReachLeaves: content probes walk down from a root
// through the origin's blocks, so an edge that serves roots right and the
// blocks under them wrong is caught and quarantined too, and an honest
// edge is asked for blocks under the roots.
func TestContentProbesReachLeaves(t *testing.T) {
	g := newGeoNet(t, probeConfig())
	leaves := g.origin.publishDAG(t, "site")
	testkit.WaitFor(t, 5*time.Second, "2 roots to probe", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.roots) == 2
	})
	honest := g.edges["127.1.0.1"]
	testkit.WaitFor(t, 10*time.Second, "a leaf asked of the honest edge", func() bool {
		asked := honest.askedFor()
		return slices.ContainsFunc(leaves, func(c string) bool { return asked[c] > 0 })
	})
	e := g.edges[tokyo]
	e.tamperLeaves.Store(true)
	testkit.WaitFor(t, 10*time.Second, "the Tokyo edge quarantined", func() bool { return g.edgeInfo(t, tokyo).Quarantine != "" })
	if ei := g.edgeInfo(t, tokyo); !slices.ContainsFunc(leaves, func(c string) bool { return strings.Contains(ei.Quarantine, c) }) {
		t.Errorf("quarantined for %q, want one of the leaves %v", ei.Quarantine, leaves)
	}
	if ei := g.edgeInfo(t, "127.1.0.1"); !ei.Healthy || ei.Quarantine != "" {
		t.Errorf("the honest edge: %+v", ei)
	}
}
