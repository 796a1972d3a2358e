package dnsroute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// answeredBy asks for blog A from Tokyo and returns the addresses.
func (g *geoNet) answeredBy(t *testing.T) []string {
	t.Helper()
	return addrs(g.query(t, "udp", "127.2.0.5", newQuery("blog", dns.TypeA)))
}

func TestEdgeLeavesAndReturns(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(g *geoNet)
		recover func(t *testing.T, g *geoNet)
	}{
		{"heartbeats stop", func(g *geoNet) { g.stop["127.2.0.1"]() },
			func(t *testing.T, g *geoNet) { g.stop["127.2.0.1"] = g.edges["127.2.0.1"].beat(t, g.http.URL, beat) }},
		{"probe fails", func(g *geoNet) { g.edges["127.2.0.1"].sick.Store(true) },
			func(t *testing.T, g *geoNet) { g.edges["127.2.0.1"].sick.Store(false) }},
		{"edge process dies", func(g *geoNet) { g.stop["127.2.0.1"](); g.edges["127.2.0.1"].srv.Close() }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGeoNet(t, Config{})
			if got := g.answeredBy(t); !slices.Equal(got, []string{"127.2.0.1", "127.1.0.1"}) {
				t.Fatalf("before: %v", got)
			}
			tc.fail(g)
			failed := time.Now()
			// Within 3 intervals, plus the router's tick and, for scheduling
			// under the race detector and parallel test binaries, one more
			// interval (still short of the 4th missed heartbeat plus that).
			limit := missedBeats*beat + tick + beat
			testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool {
				return !slices.Contains(g.answeredBy(t), "127.2.0.1")
			})
			if took := time.Since(failed); took > limit {
				t.Errorf("the edge left after %s, want at most %s", took, limit)
			}
			if got := g.answeredBy(t); !slices.Equal(got, []string{"127.1.0.1", "127.3.0.1"}) {
				t.Errorf("after: %v", got)
			}
			var list []dnsrouteapi.EdgeInfo
			testkit.GetJSON(t, g.http.URL+dnsrouteapi.EdgesPath, &list)
			for _, e := range list {
				if e.Addrs[0] == "127.2.0.1" && e.Healthy {
					t.Errorf("edges lists the Tokyo edge as healthy: %+v", e)
				}
			}
			if tc.recover == nil {
				return
			}
			tc.recover(t, g)
			testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to return", func() bool {
				return slices.Equal(g.answeredBy(t), []string{"127.2.0.1", "127.1.0.1"})
			})
		})
	}
}

func TestEdgesList(t *testing.T) {
	g := newGeoNet(t, Config{})
	for range 3 {
		g.answeredBy(t)
	}
	var list []dnsrouteapi.EdgeInfo
	testkit.GetJSON(t, g.http.URL+dnsrouteapi.EdgesPath, &list)
	if len(list) != 3 {
		t.Fatalf("%d edges, want 3", len(list))
	}
	want := map[string]struct {
		city    string
		answers uint64
	}{"127.1.0.1": {"Frankfurt am Main", 3}, "127.2.0.1": {"Tokyo", 3}, "127.3.0.1": {"São Paulo", 0}}
	for _, e := range list {
		w := want[e.Addrs[0]]
		if e.City != w.city || e.Answers != w.answers || !e.Healthy || e.Lat == nil || e.Capacity != 1000 ||
			e.URL != g.edges[e.Addrs[0]].srv.URL || e.LastHeartbeat.IsZero() {
			t.Errorf("edge %+v, want city %q with %d answers, healthy, located", e, w.city, w.answers)
		}
	}
	// The metrics count the same.
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var handed float64
	for _, mf := range mfs {
		if mf.GetName() == "topcdn_dnsroute_answers_total" {
			for _, m := range mf.GetMetric() {
				handed += m.GetCounter().GetValue()
			}
		}
	}
	if handed != 6 {
		t.Errorf("topcdn_dnsroute_answers_total sums to %v, want 6", handed)
	}
}

func TestHeartbeatRejected(t *testing.T) {
	o := newFakeOrigin(t)
	tr := startRouter(t, Config{Origin: o.srv.URL, HeartbeatSkew: 5 * time.Second})
	e := newFakeEdge(t, "127.1.0.1", o)
	other, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	good := e.heartbeat(time.Second)
	good.Time = now
	if err := dnsrouteapi.SendHeartbeat(context.Background(), http.DefaultClient, tr.http.URL, e.key, good); err != nil {
		t.Fatalf("a good heartbeat: %v", err)
	}
	post := func(t *testing.T, body []byte) int {
		resp, err := http.Post(tr.http.URL+dnsrouteapi.HeartbeatPath, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	signed := func(k *identity.Key, hb dnsrouteapi.Heartbeat) []byte {
		env, err := k.Sign(dnsrouteapi.TypeHeartbeat, hb)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(env)
		return b
	}
	with := func(f func(*dnsrouteapi.Heartbeat)) dnsrouteapi.Heartbeat {
		hb := good
		hb.Time = now.Add(time.Millisecond)
		f(&hb)
		return hb
	}
	lat, badLat := 1.0, 91.0
	tests := []struct {
		name   string
		body   []byte
		status int
	}{
		{"signed by another key", signed(other, with(func(*dnsrouteapi.Heartbeat) {})), http.StatusForbidden},
		{"signature does not verify", func() []byte {
			env, _ := e.key.Sign(dnsrouteapi.TypeHeartbeat, with(func(*dnsrouteapi.Heartbeat) {}))
			env.Sig[0] ^= 1
			b, _ := json.Marshal(env)
			return b
		}(), http.StatusForbidden},
		{"another message type", func() []byte {
			env, _ := e.key.Sign("topcdn/storage/heartbeat/v1", with(func(*dnsrouteapi.Heartbeat) {}))
			b, _ := json.Marshal(env)
			return b
		}(), http.StatusBadRequest},
		{"replayed", signed(e.key, good), http.StatusConflict},
		{"older than the last", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Time = now.Add(-time.Second) })), http.StatusConflict},
		{"stale", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Time = now.Add(-time.Minute) })), http.StatusUnprocessableEntity},
		{"from the future", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Time = now.Add(time.Minute) })), http.StatusUnprocessableEntity},
		{"addr not an IP", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Addrs = []string{"edge.example"} })), http.StatusBadRequest},
		{"no addr", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Addrs = nil })), http.StatusBadRequest},
		{"unspecified addr", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Addrs = []string{"0.0.0.0"} })), http.StatusBadRequest},
		{"url not http", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.URL = "ftp://127.1.0.1" })), http.StatusBadRequest},
		{"lat without lon", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Lat = &lat })), http.StatusBadRequest},
		{"latitude out of range", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Lat, h.Lon = &badLat, &lat })), http.StatusBadRequest},
		{"negative load", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Load = -1 })), http.StatusBadRequest},
		{"no interval", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.IntervalMS = 0 })), http.StatusBadRequest},
		{"epoch bytes without an epoch", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.EpochBytes = 1 })), http.StatusBadRequest},
		{"closed epoch after the open one", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Epoch, h.PrevEpoch = 60, 120 })), http.StatusBadRequest},
		{"negative epoch", signed(e.key, with(func(h *dnsrouteapi.Heartbeat) { h.Epoch = -60 })), http.StatusBadRequest},
		{"unknown field", []byte(`{"type":"` + dnsrouteapi.TypeHeartbeat + `","signer":"x","body":"e30=","sig":""}`), http.StatusBadRequest},
		{"not JSON", []byte("hello"), http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := post(t, tc.body); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
		})
	}
	// SendHeartbeat reports the rejection.
	if err := dnsrouteapi.SendHeartbeat(context.Background(), http.DefaultClient, tr.http.URL, e.key, good); err == nil {
		t.Error("SendHeartbeat of a replay: no error")
	}
}

func TestAllowedEdges(t *testing.T) {
	o := newFakeOrigin(t)
	allowed := newFakeEdge(t, "127.1.0.1", o)
	stranger := newFakeEdge(t, "127.1.0.2", o)
	tr := startRouter(t, Config{Origin: o.srv.URL, AllowedEdges: []peer.ID{allowed.key.ID}})
	ctx := context.Background()
	if err := dnsrouteapi.SendHeartbeat(ctx, http.DefaultClient, tr.http.URL, allowed.key, allowed.heartbeat(time.Second)); err != nil {
		t.Errorf("allowed edge: %v", err)
	}
	err := dnsrouteapi.SendHeartbeat(ctx, http.DefaultClient, tr.http.URL, stranger.key, stranger.heartbeat(time.Second))
	if err == nil {
		t.Error("an edge not on the allow list was accepted")
	}
	if err := tr.AcceptHeartbeat(ctx, mustSign(t, stranger.key, stranger.heartbeat(time.Second))); !errors.Is(err, dnsrouteapi.ErrEdgeNotAllowed) {
		t.Errorf("AcceptHeartbeat: %v, want ErrEdgeNotAllowed", err)
	}
}

func mustSign(t *testing.T, k *identity.Key, hb dnsrouteapi.Heartbeat) *identity.Envelope {
	t.Helper()
	if hb.Time.IsZero() {
		hb.Time = time.Now().UTC()
	}
	env, err := k.Sign(dnsrouteapi.TypeHeartbeat, hb)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestEdgeAddressesMustServeTheEdge: browsers are sent to the addresses an
// edge's heartbeat lists, so each must answer the health probe as that
// edge. An address that does not (nothing there, or someone else's host)
// is never handed out, and an edge none of whose addresses serve it stays
// out of answers: no edge can point answers at a host it does not run.
func TestEdgeAddressesMustServeTheEdge(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	tr := startRouter(t, Config{Origin: o.srv.URL})
	send := func(e *fakeEdge, addrs ...string) {
		t.Helper()
		hb := e.heartbeat(10 * time.Second)
		hb.Addrs = addrs
		if err := dnsrouteapi.SendHeartbeat(context.Background(), http.DefaultClient, tr.http.URL, e.key, hb); err != nil {
			t.Fatal(err)
		}
	}
	honest := newFakeEdge(t, "127.1.0.1", o)
	send(honest, "127.1.0.9", "127.1.0.1") // the first is not the edge's
	// Another edge names the honest edge's host, and a host with nothing
	// on it, as its own.
	thief := newFakeEdge(t, "127.2.0.1", o)
	send(thief, "127.1.0.1", "127.2.0.9")
	testkit.WaitFor(t, 5*time.Second, "the honest edge healthy", func() bool { return tr.healthyEdges() == 1 })
	r := tr.query(t, "udp", "", newQuery("blog", dns.TypeA))
	if got := addrs(r); !slices.Equal(got, []string{"127.1.0.1"}) {
		t.Fatalf("answers %v, want only the honest edge's own address 127.1.0.1", got)
	}
	// The thief's probe may still be running (the honest edge's ended
	// first): wait for its verdict, then it must be unhealthy, saying why.
	var thiefInfo dnsrouteapi.EdgeInfo
	testkit.WaitFor(t, 5*time.Second, "the thief's probe", func() bool {
		var list []dnsrouteapi.EdgeInfo
		testkit.GetJSON(t, tr.http.URL+dnsrouteapi.EdgesPath, &list)
		for _, e := range list {
			if e.Peer == thief.key.ID.String() {
				thiefInfo = e
			}
		}
		return thiefInfo.ProbeError != "not probed yet"
	})
	if thiefInfo.Healthy || !strings.Contains(thiefInfo.ProbeError, "no address") {
		t.Fatalf("the edge whose addresses are not its own: %+v, want unhealthy, saying why", thiefInfo)
	}
	// An honest edge that moves to an address it does serve is handed out
	// there once probed.
	send(thief, "127.2.0.1")
	testkit.WaitFor(t, 5*time.Second, "the moved edge healthy", func() bool { return tr.healthyEdges() == 2 })
}

// TestObserveEpochs: the router keeps, per billing epoch an edge's
// heartbeats report, the highest byte count and whether the epoch was
// reported closed; a restarted edge's lower count does not lower it; only
// the newest MaxEpochs are kept.
func TestObserveEpochs(t *testing.T) {
	type hb = dnsrouteapi.Heartbeat
	type eb = dnsrouteapi.EpochBytes
	tests := []struct {
		name  string
		beats []hb
		want  []eb
	}{
		{"no counters", []hb{{}, {}}, nil},
		{"open epoch grows", []hb{{Epoch: 60, EpochBytes: 5}, {Epoch: 60, EpochBytes: 9}}, []eb{{Epoch: 60, Bytes: 9}}},
		{"epoch closes", []hb{{Epoch: 60, EpochBytes: 9}, {Epoch: 120, EpochBytes: 1, PrevEpoch: 60, PrevEpochBytes: 10}},
			[]eb{{Epoch: 60, Bytes: 10, Closed: true}, {Epoch: 120, Bytes: 1}}},
		{"restart counts the epoch again from 0", []hb{{Epoch: 60, EpochBytes: 900}, {Epoch: 60, EpochBytes: 3}},
			[]eb{{Epoch: 60, Bytes: 900}}},
		{"a late open figure does not reopen", []hb{{Epoch: 120, PrevEpoch: 60, PrevEpochBytes: 7}, {Epoch: 60, EpochBytes: 2}},
			[]eb{{Epoch: 60, Bytes: 7, Closed: true}, {Epoch: 120}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []eb
			for i := range tc.beats {
				got = observeEpochs(got, &tc.beats[i])
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("epochs %+v, want %+v", got, tc.want)
			}
		})
	}
	var got []eb
	for e := int64(1); e <= dnsrouteapi.MaxEpochs+5; e++ {
		got = observeEpochs(got, &hb{Epoch: e * 60, EpochBytes: uint64(e)})
	}
	if len(got) != dnsrouteapi.MaxEpochs || got[0].Epoch != 6*60 {
		t.Fatalf("kept %d epochs from %d, want %d from %d", len(got), got[0].Epoch, dnsrouteapi.MaxEpochs, 6*60)
	}
}
