package dnsroute

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"go.uber.org/zap/zaptest"
)

// testValue is a well-formed challenge value; testValues makes more.
const testValue = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

// testValues returns n distinct well-formed challenge values.
func testValues(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%042d", i) + "A"
	}
	return out
}

// acmeRouter is a router that is never run, with a settable clock, whose
// edges a test puts straight into its state (see addEdge).
type acmeRouter struct {
	*Router
	reg *prometheus.Registry
	at  time.Time
}

func newACMERouter(t *testing.T, cfg Config) *acmeRouter {
	t.Helper()
	a := &acmeRouter{reg: prometheus.NewRegistry(), at: time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)}
	cfg.Zone, cfg.Origin, cfg.Registry, cfg.Logger = "cdn.test", "http://127.0.0.1:1", a.reg, zaptest.NewLogger(t)
	cfg.ContentProbeInterval = -1
	cfg.now = func() time.Time { return a.at }
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Router = r
	return a
}

// addEdge registers the edge of key as a heartbeat and a probe would,
// healthy or not; its heartbeats are kept fresh by advance.
func (a *acmeRouter) addEdge(key *identity.Key, healthy bool) *edge {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := &edge{hb: &dnsrouteapi.CheckedHeartbeat{Heartbeat: dnsrouteapi.Heartbeat{Peer: key.ID.String(), Addrs: []string{"127.1.0.1"},
		URL: "http://127.1.0.1:8080", IntervalMS: (10 * time.Minute).Milliseconds(), Time: a.at}, PeerID: key.ID,
		IPs: []netip.Addr{netip.MustParseAddr("127.1.0.1")}},
		lastSeen: a.at, probeOK: healthy, contentOK: true, verified: []netip.Addr{netip.MustParseAddr("127.1.0.1")},
		nextProbe: a.at.Add(24 * time.Hour), stats: &edgeStats{counter: a.metrics.answers.WithLabelValues(key.ID.String())}}
	if !healthy {
		e.probeErr = "not probed yet"
	}
	a.edges[key.ID] = e
	a.updateHealthLocked(e, a.at)
	a.rebuildLocked()
	return e
}

// advance moves the clock by d, with every edge's heartbeats kept fresh,
// and runs the router's periodic check.
func (a *acmeRouter) advance(d time.Duration) {
	a.mu.Lock()
	a.at = a.at.Add(d)
	for _, e := range a.edges {
		e.lastSeen = a.at
	}
	a.mu.Unlock()
	a.checkEdges(context.Background())
}

// post sends a challenge signed by key to the router's HTTP API with
// method and returns the answer.
func (a *acmeRouter) post(t *testing.T, method string, key *identity.Key, ch dnsrouteapi.Challenge) *httptest.ResponseRecorder {
	t.Helper()
	if ch.Peer == "" {
		ch.Peer = key.ID.String()
	}
	if ch.Time.IsZero() {
		ch.Time = a.at
	}
	env, err := key.Sign(dnsrouteapi.TypeChallenge, ch)
	if err != nil {
		t.Fatal(err)
	}
	return a.postEnv(t, method, env)
}

func (a *acmeRouter) postEnv(t *testing.T, method string, env *identity.Envelope) *httptest.ResponseRecorder {
	t.Helper()
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, httptest.NewRequest(method, dnsrouteapi.ChallengePath, bytes.NewReader(body)))
	return w
}

// txt returns the TXT values answer gives for name.
func (a *acmeRouter) txt(t *testing.T, name string) []string {
	t.Helper()
	m, _ := a.answer(context.Background(), a.snap.Load(), newQuery(name, dns.TypeTXT), netip.MustParseAddr("127.0.0.1"))
	if m.Rcode != dns.RcodeSuccess {
		t.Fatalf("TXT %s: %s", name, dns.RcodeToString[m.Rcode])
	}
	return txtValues(m)
}

// txtValues lists the TXT values of an answer, sorted.
func txtValues(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	slices.Sort(out)
	return out
}

// TestChallenge: each row posts one challenge to a router in a given
// state and asserts the status, the metric's result and whether the TXT
// then answers.
func TestChallenge(t *testing.T) {
	edgeKey, otherKey := testkit.Key(t, 1), testkit.Key(t, 2)
	add := dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test.", Value: testValue}
	with := func(f func(*dnsrouteapi.Challenge)) dnsrouteapi.Challenge {
		c := add
		f(&c)
		return c
	}
	healthy := func(a *acmeRouter) { a.addEdge(edgeKey, true) }
	tests := []struct {
		name    string
		cfg     Config
		setup   func(a *acmeRouter)
		method  string
		key     *identity.Key
		ch      dnsrouteapi.Challenge
		forge   bool // flip a bit of the signature
		status  int
		result  string
		visible string // the name the value must then answer at; "" for none
	}{
		{name: "ok", setup: healthy, ch: add, status: http.StatusNoContent, result: "ok", visible: "_acme-challenge.cdn.test."},
		{name: "ok: the ipfs wildcard, name in upper case without the dot", setup: healthy,
			ch:     with(func(c *dnsrouteapi.Challenge) { c.Name = "_ACME-CHALLENGE.ipfs.CDN.test" }),
			status: http.StatusNoContent, result: "ok", visible: "_acme-challenge.ipfs.cdn.test."},
		{name: "ok: the ipns wildcard", setup: healthy, ch: with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.ipns.cdn.test." }),
			status: http.StatusNoContent, result: "ok", visible: "_acme-challenge.ipns.cdn.test."},
		{name: "ok: admitted by billing", cfg: Config{Billing: "http://127.0.0.1:1"}, setup: func(a *acmeRouter) {
			a.admitted = map[peer.ID]bool{edgeKey.ID: true}
			healthy(a)
		}, ch: add, status: http.StatusNoContent, result: "ok", visible: "_acme-challenge.cdn.test."},

		{name: "forged signature", setup: healthy, ch: add, forge: true, status: http.StatusForbidden, result: "forged"},
		{name: "peer is not the signer", setup: healthy, key: otherKey,
			ch: with(func(c *dnsrouteapi.Challenge) { c.Peer = edgeKey.ID.String() }), status: http.StatusForbidden, result: "forged"},
		{name: "quarantined edge", setup: func(a *acmeRouter) {
			healthy(a)
			a.mu.Lock()
			a.quarantineLocked(edgeKey.ID, a.at, quarantine{until: a.at.Add(time.Hour), reason: "lied", source: "probe"}, "test")
			a.mu.Unlock()
		}, ch: add, status: http.StatusForbidden, result: "refused"},
		{name: "not admitted by billing", cfg: Config{Billing: "http://127.0.0.1:1"}, setup: func(a *acmeRouter) {
			a.admitted = map[peer.ID]bool{otherKey.ID: true}
			healthy(a)
		}, ch: add, status: http.StatusForbidden, result: "refused"},
		{name: "not an allowed edge", cfg: Config{AllowedEdges: []peer.ID{otherKey.ID}}, setup: healthy, ch: add,
			status: http.StatusForbidden, result: "refused"},
		{name: "name outside the zone", setup: healthy, ch: with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.example.com." }),
			status: http.StatusForbidden, result: "out_of_zone"},
		{name: "a custom domain, on a router without a resolver", setup: healthy,
			ch:     with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.www.example.org." }),
			status: http.StatusForbidden, result: "out_of_zone"},
		{name: "a site's own name (the wildcard covers it)", setup: healthy,
			ch:     with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.blog.cdn.test." }),
			status: http.StatusForbidden, result: "out_of_zone"},
		{name: "a name below a wildcard's", setup: healthy,
			ch:     with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.x.ipfs.cdn.test." }),
			status: http.StatusForbidden, result: "out_of_zone"},
		{name: "a name ending like the zone", setup: healthy,
			ch:     with(func(c *dnsrouteapi.Challenge) { c.Name = "_acme-challenge.evilcdn.test." }),
			status: http.StatusForbidden, result: "out_of_zone"},

		{name: "not probed yet", setup: func(a *acmeRouter) { a.addEdge(edgeKey, false) }, ch: add,
			status: http.StatusServiceUnavailable, result: "not_ready"},
		{name: "no heartbeat yet", ch: add, status: http.StatusServiceUnavailable, result: "not_ready"},
		{name: "billing's admitted list not read yet", cfg: Config{Billing: "http://127.0.0.1:1"}, setup: healthy, ch: add,
			status: http.StatusServiceUnavailable, result: "not_ready"},

		{name: "bad value", setup: healthy, ch: with(func(c *dnsrouteapi.Challenge) { c.Value = "not a digest" }),
			status: http.StatusBadRequest, result: "invalid"},
		{name: "time off the clock", setup: healthy, ch: with(func(c *dnsrouteapi.Challenge) { c.Time = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC) }),
			status: http.StatusBadRequest, result: "invalid"},
		{name: "an add sent as DELETE", setup: healthy, method: http.MethodDelete, ch: add, status: http.StatusBadRequest, result: "invalid"},
		{name: "9th live record of an edge", setup: func(a *acmeRouter) {
			healthy(a)
			for _, v := range testValues(8) {
				if w := a.post(t, http.MethodPost, edgeKey, with(func(c *dnsrouteapi.Challenge) { c.Value = v })); w.Code != http.StatusNoContent {
					t.Fatalf("record %s: %d %s", v, w.Code, w.Body)
				}
			}
		}, ch: add, status: http.StatusTooManyRequests, result: "limited"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newACMERouter(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(a)
			}
			key := cmpKey(tc.key, edgeKey)
			ch := tc.ch
			if ch.Peer == "" {
				ch.Peer = key.ID.String()
			}
			ch.Time = cmpTime(ch.Time, a.at)
			env, err := key.Sign(dnsrouteapi.TypeChallenge, ch)
			if err != nil {
				t.Fatal(err)
			}
			if tc.forge {
				env.Sig[0] ^= 1
			}
			w := a.postEnv(t, cmpMethod(tc.method), env)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := metricValue(t, a.reg, "topcdn_dnsroute_acme_challenges_total", "result", tc.result); got < 1 {
				t.Errorf("topcdn_dnsroute_acme_challenges_total{result=%q} = %v, want 1", tc.result, got)
			}
			if tc.status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
				t.Error("a 503 without Retry-After")
			}
			for _, name := range a.acme.fixed {
				got := slices.Contains(a.txt(t, name), testValue)
				if got != (name == tc.visible) {
					t.Errorf("%s answers the value: %v, want %v", name, got, name == tc.visible)
				}
			}
		})
	}
}

func cmpKey(a, b *identity.Key) *identity.Key {
	if a != nil {
		return a
	}
	return b
}

func cmpTime(a, b time.Time) time.Time {
	if !a.IsZero() {
		return a
	}
	return b
}

func cmpMethod(m string) string {
	if m != "" {
		return m
	}
	return http.MethodPost
}

// TestChallengeAnswers: the three wildcards' challenge names answer NODATA
// (with the SOA, so certmagic's SOA walk finds the zone) until a value is
// set; then TXT and ANY give every value, other types NODATA; names
// outside the three stay NXDOMAIN.
func TestChallengeAnswers(t *testing.T) {
	a := newACMERouter(t, Config{})
	k1, k2 := testkit.Key(t, 1), testkit.Key(t, 2)
	a.addEdge(k1, true)
	a.addEdge(k2, true)
	q := func(name string, qt uint16) *dns.Msg {
		m, _ := a.answer(context.Background(), a.snap.Load(), newQuery(name, qt), netip.MustParseAddr("127.0.0.1"))
		return m
	}
	for _, n := range []string{"_acme-challenge", "_acme-challenge.ipfs", "_acme-challenge.ipns"} {
		if m := q(n, dns.TypeTXT); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 || !m.Authoritative {
			t.Errorf("%s TXT before any record: %v", n, m)
		}
	}
	if m := q("_acme-challenge.blog", dns.TypeTXT); m.Rcode != dns.RcodeNameError {
		t.Errorf("_acme-challenge.blog: %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}
	vals := testValues(2)
	for i, k := range []*identity.Key{k1, k2} {
		if w := a.post(t, http.MethodPost, k, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test", Value: vals[i]}); w.Code != http.StatusNoContent {
			t.Fatalf("add: %d %s", w.Code, w.Body)
		}
	}
	m := q("_ACME-challenge", dns.TypeTXT)
	if got := txtValues(m); !slices.Equal(got, vals) || m.Answer[0].Header().Ttl != 10 || m.Answer[0].Header().Name != "_ACME-challenge."+testZone {
		t.Errorf("TXT: %v", m)
	}
	if m := q("_acme-challenge", dns.TypeANY); len(txtValues(m)) != 2 {
		t.Errorf("ANY: %v", m)
	}
	for _, qt := range []uint16{dns.TypeA, dns.TypeSOA, dns.TypeCNAME} {
		if m := q("_acme-challenge", qt); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
			t.Errorf("%s: %v", dns.TypeToString[qt], m)
		}
	}
	// A repeated add renews and adds nothing; a delete removes only the
	// signer's value, and a delete of nothing succeeds.
	if w := a.post(t, http.MethodPost, k1, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test", Value: vals[0]}); w.Code != http.StatusNoContent {
		t.Fatalf("add again: %d %s", w.Code, w.Body)
	}
	if w := a.post(t, http.MethodDelete, k1, dnsrouteapi.Challenge{Op: dnsrouteapi.OpDelete, Name: "_acme-challenge.cdn.test", Value: vals[1]}); w.Code != http.StatusNoContent {
		t.Fatalf("delete another's: %d %s", w.Code, w.Body)
	}
	if got := a.txt(t, "_acme-challenge"); !slices.Equal(got, vals) {
		t.Fatalf("after a delete of another's value: %v", got)
	}
	if w := a.post(t, http.MethodDelete, k1, dnsrouteapi.Challenge{Op: dnsrouteapi.OpDelete, Name: "_acme-challenge.cdn.test"}); w.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
	if got := a.txt(t, "_acme-challenge"); !slices.Equal(got, vals[1:]) {
		t.Fatalf("after k1's delete: %v", got)
	}
	// POST carries deletes too (the op is signed).
	if w := a.post(t, http.MethodPost, k2, dnsrouteapi.Challenge{Op: dnsrouteapi.OpDelete, Name: "_acme-challenge.cdn.test", Value: vals[1]}); w.Code != http.StatusNoContent {
		t.Fatalf("delete by POST: %d %s", w.Code, w.Body)
	}
	if got := a.txt(t, "_acme-challenge"); len(got) != 0 {
		t.Fatalf("after both deletes: %v", got)
	}
	if got := metricValue(t, a.reg, "topcdn_dnsroute_acme_challenge_records", "", ""); got != 0 {
		t.Errorf("records gauge %v, want 0", got)
	}
}

// TestChallengeExpiry: a record answers for 10 minutes after its last
// add, then goes.
func TestChallengeExpiry(t *testing.T) {
	a := newACMERouter(t, Config{})
	k := testkit.Key(t, 1)
	a.addEdge(k, true)
	add := dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test.", Value: testValue}
	if w := a.post(t, http.MethodPost, k, add); w.Code != http.StatusNoContent {
		t.Fatalf("add: %d %s", w.Code, w.Body)
	}
	a.advance(5 * time.Minute)
	if w := a.post(t, http.MethodPost, k, add); w.Code != http.StatusNoContent { // renewed: 10 min from now
		t.Fatalf("add again: %d %s", w.Code, w.Body)
	}
	a.advance(10*time.Minute - time.Second)
	if got := a.txt(t, "_acme-challenge"); len(got) != 1 {
		t.Fatalf("a second before expiry: %v", got)
	}
	if got := metricValue(t, a.reg, "topcdn_dnsroute_acme_challenge_records", "", ""); got != 1 {
		t.Errorf("records gauge %v, want 1", got)
	}
	a.advance(time.Second)
	if got := a.txt(t, "_acme-challenge"); len(got) != 0 {
		t.Fatalf("after expiry: %v", got)
	}
	if got := metricValue(t, a.reg, "topcdn_dnsroute_acme_challenge_records", "", ""); got != 0 {
		t.Errorf("records gauge %v, want 0", got)
	}
}

// TestChallengesLeaveWithTheEdge: an edge's records go as soon as answers
// no longer hand it out (quarantined, unhealthy, no longer admitted), and
// other edges' stay.
func TestChallengesLeaveWithTheEdge(t *testing.T) {
	tests := []struct {
		name  string
		leave func(a *acmeRouter, e *edge, id peer.ID)
	}{
		{"quarantined", func(a *acmeRouter, _ *edge, id peer.ID) {
			a.quarantineLocked(id, a.at, quarantine{until: a.at.Add(time.Hour), reason: "lied", source: "billing"}, "test")
		}},
		{"health probe failed", func(_ *acmeRouter, e *edge, _ peer.ID) { e.probeOK, e.probeErr = false, "HTTP 503" }},
		{"no longer admitted", func(a *acmeRouter, _ *edge, _ peer.ID) { a.admitted = map[peer.ID]bool{} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newACMERouter(t, Config{})
			k1, k2 := testkit.Key(t, 1), testkit.Key(t, 2)
			e1 := a.addEdge(k1, true)
			a.addEdge(k2, true)
			vals := testValues(2)
			for i, k := range []*identity.Key{k1, k2} {
				if w := a.post(t, http.MethodPost, k, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.ipns.cdn.test.", Value: vals[i]}); w.Code != http.StatusNoContent {
					t.Fatalf("add: %d %s", w.Code, w.Body)
				}
			}
			a.mu.Lock()
			tc.leave(a, e1, k1.ID)
			if tc.name == "no longer admitted" {
				a.admitted[k2.ID] = true
			}
			a.mu.Unlock()
			a.advance(tick)
			if got := a.txt(t, "_acme-challenge.ipns"); !slices.Equal(got, vals[1:]) {
				t.Fatalf("after the edge left: %v, want only the other edge's", got)
			}
		})
	}
}

// TestChallengeLimits: an edge has at most 8 live records and 20 adds at
// once, then one a minute; a name at most 32 values; the table at most
// 1024 records (reachable only through the router's own records, as
// edges have three names).
func TestChallengeLimits(t *testing.T) {
	a := newACMERouter(t, Config{})
	k := testkit.Key(t, 1)
	a.addEdge(k, true)
	vals := testValues(40)
	names := []string{"_acme-challenge.cdn.test.", "_acme-challenge.ipfs.cdn.test.", "_acme-challenge.ipns.cdn.test."}
	post := func(k *identity.Key, op, name, v string) int {
		return a.post(t, http.MethodPost, k, dnsrouteapi.Challenge{Op: op, Name: name, Value: v}).Code
	}
	// 20 adds (kept under 8 live by deleting), then the bucket is empty.
	for i := range 20 {
		if st := post(k, dnsrouteapi.OpAdd, names[i%3], vals[i]); st != http.StatusNoContent {
			t.Fatalf("add %d: %d", i, st)
		}
		if i >= 4 {
			post(k, dnsrouteapi.OpDelete, names[(i-4)%3], vals[i-4])
		}
	}
	if st := post(k, dnsrouteapi.OpAdd, names[0], vals[20]); st != http.StatusTooManyRequests {
		t.Fatalf("21st add: %d, want 429", st)
	}
	a.advance(time.Minute)
	if st := post(k, dnsrouteapi.OpAdd, names[0], vals[20]); st != http.StatusNoContent {
		t.Fatalf("an add a minute later: %d", st)
	}
	if st := post(k, dnsrouteapi.OpAdd, names[0], vals[21]); st != http.StatusTooManyRequests {
		t.Fatalf("a second add in that minute: %d, want 429", st)
	}

	// 32 values at a name, from four edges of 8, then no more.
	b := newACMERouter(t, Config{})
	for i := range 5 {
		b.addEdge(testkit.Key(t, byte(10+i)), true)
	}
	for i := range 33 {
		want := http.StatusNoContent
		if i == 32 {
			want = http.StatusTooManyRequests
		}
		ek := testkit.Key(t, byte(10+i/8))
		if st := b.post(t, http.MethodPost, ek, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: names[1], Value: vals[i]}); st.Code != want {
			t.Fatalf("value %d at one name: %d, want %d", i, st.Code, want)
		}
	}
	if got := b.txt(t, "_acme-challenge.ipfs"); len(got) != 32 {
		t.Fatalf("%d values answer, want 32", len(got))
	}
	m, _ := b.answer(context.Background(), b.snap.Load(), newQuery("_acme-challenge.ipfs", dns.TypeTXT), netip.MustParseAddr("127.0.0.1"))
	if buf, err := m.Pack(); err != nil || len(buf) > dns.MaxMsgSize {
		t.Fatalf("32 values pack to %d bytes: %v", len(buf), err)
	}

	// The table: 1024 records of the router's own, then no more.
	c := newACMERouter(t, Config{})
	p := c.Challenges()
	for i := range 1025 {
		_, err := p.AppendRecords(context.Background(), "cdn.test.",
			[]libdns.Record{libdns.RR{Type: "TXT", Name: fmt.Sprintf("_acme-challenge.n%d", i/32), Data: vals[i%32]}})
		if (err == nil) != (i < 1024) {
			t.Fatalf("record %d of the router's own: %v", i, err)
		}
	}
}

// TestChallengeOverUDP: three edges of a running router set values at the
// same name concurrently, and a miekg/dns client asking over the router's
// UDP socket (and its ready-response cache) sees all three, then the two
// left after one edge deletes its own.
func TestChallengeOverUDP(t *testing.T) {
	g := newGeoNet(t, Config{})
	ask := func() []string {
		m := g.query(t, "udp", "", newQuery("_acme-challenge", dns.TypeTXT))
		if m.Rcode != dns.RcodeSuccess || !m.Authoritative {
			t.Fatalf("TXT: %v", m)
		}
		return txtValues(m)
	}
	if got := ask(); len(got) != 0 { // and the empty answer is now a ready response
		t.Fatalf("before any challenge: %v", got)
	}
	vals := testValues(3)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var keys []*identity.Key
	for _, ip := range []string{"127.1.0.1", "127.2.0.1", "127.3.0.1"} {
		keys = append(keys, g.edges[ip].key)
	}
	for i, k := range keys {
		wg.Go(func() {
			errs <- dnsrouteapi.SendChallenge(context.Background(), http.DefaultClient, g.http.URL, k,
				dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test.", Value: vals[i]})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := ask(); !slices.Equal(got, vals) {
		t.Fatalf("after three adds: %v, want %v", got, vals)
	}
	if err := dnsrouteapi.SendChallenge(context.Background(), http.DefaultClient, g.http.URL, keys[0],
		dnsrouteapi.Challenge{Op: dnsrouteapi.OpDelete, Name: "_acme-challenge.cdn.test.", Value: vals[0]}); err != nil {
		t.Fatal(err)
	}
	if got := ask(); !slices.Equal(got, vals[1:]) {
		t.Fatalf("after a delete: %v, want %v", got, vals[1:])
	}
	// A forged challenge through the real API is refused.
	err := dnsrouteapi.SendChallenge(context.Background(), http.DefaultClient, g.http.URL, testkit.Key(t, 9),
		dnsrouteapi.Challenge{Peer: keys[0].ID.String(), Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.cdn.test.", Value: testValue})
	if !strings.Contains(fmt.Sprint(err), "403") {
		t.Fatalf("forged: %v, want a 403", err)
	}
}

// TestChallengeProvider: the router's own provider sets TXT records at any
// _acme-challenge name of its zone, as certmagic calls it (a name
// relative to the zone), answers them, and deletes them; other names and
// types are refused.
func TestChallengeProvider(t *testing.T) {
	a := newACMERouter(t, Config{})
	p := a.Challenges()
	ctx := context.Background()
	rec := libdns.RR{Type: "TXT", Name: "_acme-challenge.ns1", Data: testValue}
	got, err := p.AppendRecords(ctx, "cdn.test.", []libdns.Record{rec})
	if err != nil || len(got) != 1 || got[0].RR().Data != testValue || got[0].RR().Name != rec.Name {
		t.Fatalf("AppendRecords: %v, %v", got, err)
	}
	if vals := a.txt(t, "_acme-challenge.ns1"); !slices.Equal(vals, []string{testValue}) {
		t.Fatalf("TXT: %v", vals)
	}
	if del, err := p.DeleteRecords(ctx, "cdn.test.", got); err != nil || len(del) != 1 {
		t.Fatalf("DeleteRecords: %v, %v", del, err)
	}
	m, _ := a.answer(ctx, a.snap.Load(), newQuery("_acme-challenge.ns1", dns.TypeTXT), netip.MustParseAddr("127.0.0.1"))
	if m.Rcode != dns.RcodeNameError {
		t.Fatalf("after the delete: %v", m)
	}
	for _, bad := range []libdns.RR{
		{Type: "TXT", Name: "_acme-challenge.example.com.", Data: testValue},
		{Type: "TXT", Name: "ns1", Data: testValue},
		{Type: "A", Name: "_acme-challenge", Data: "127.0.0.1"},
		{Type: "TXT", Name: "_acme-challenge", Data: "short"},
	} {
		if _, err := p.AppendRecords(ctx, "cdn.test.", []libdns.Record{bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
