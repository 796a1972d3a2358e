package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/boxo/ipns"
	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// fakeResolver answers from records (owner name, lower case, fully
// qualified → records) and fails for the names in fail.
type fakeResolver struct {
	rrs   map[string][]dns.RR
	fail  map[string]bool
	asked int
}

func (f *fakeResolver) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	f.asked++
	q := m.Question[0]
	if f.fail[strings.ToLower(q.Name)] {
		return nil, errors.New("i/o timeout")
	}
	ans := new(dns.Msg)
	ans.SetReply(m)
	rrs, ok := f.rrs[strings.ToLower(q.Name)]
	if !ok {
		ans.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			ans.Answer = append(ans.Answer, rr)
		}
	}
	return ans, nil
}

func newFakeResolver(t *testing.T, records ...string) *fakeResolver {
	t.Helper()
	f := &fakeResolver{rrs: map[string][]dns.RR{}, fail: map[string]bool{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		f.rrs[n] = append(f.rrs[n], rr)
	}
	return f
}

// TestChallengeCustomDomain: an edge the router hands out may have the
// TXT of a publisher's domain set at HOST._acme.ZONE only when the
// domain's DNSLink names a published key and its _acme-challenge is
// delegated there; each refusal is 403 with its result, a resolver that
// does not answer is 503, and a delete needs no check.
func TestChallengeCustomDomain(t *testing.T) {
	edgeKey, pubKey, otherKey := testkit.Key(t, 1), testkit.Key(t, 2), testkit.Key(t, 3)
	pub, unpub := ipns.NameFromPeer(pubKey.ID), ipns.NameFromPeer(otherKey.ID)
	link := func(host string, k ipns.Name) string {
		return fmt.Sprintf("_dnslink.%s. 60 IN TXT \"dnslink=/ipns/%s\"", host, k)
	}
	deleg := func(host string) string {
		return fmt.Sprintf("_acme-challenge.%s. 60 IN CNAME %s", host, customdomain.ChallengeTarget(host, "cdn.test"))
	}
	records := []string{
		link("www.example.org", pub), deleg("www.example.org"),
		link("bad.example.org", unpub), deleg("bad.example.org"),
		deleg("nolink.example.org"),
		link("nodeleg.example.org", pub),
		link("down.example.org", pub),
	}
	tests := []struct {
		name, host string
		op         string
		noResolver bool
		status     int
		result     string
		visible    bool
	}{
		{name: "delegated, published", host: "www.example.org", status: http.StatusNoContent, result: "ok", visible: true},
		{name: "in upper case", host: "WWW.Example.org", status: http.StatusNoContent, result: "ok", visible: true},
		{name: "unpublished key", host: "bad.example.org", status: http.StatusForbidden, result: "unpublished"},
		{name: "no DNSLink", host: "nolink.example.org", status: http.StatusForbidden, result: "no_dnslink"},
		{name: "no delegation", host: "nodeleg.example.org", status: http.StatusForbidden, result: "no_delegation"},
		{name: "resolver does not answer", host: "down.example.org", status: http.StatusServiceUnavailable, result: "not_ready"},
		{name: "a name in the zone", host: "x.blog.cdn.test", status: http.StatusForbidden, result: "out_of_zone"},
		{name: "the router has no resolver", host: "www.example.org", noResolver: true, status: http.StatusForbidden, result: "out_of_zone"},
		{name: "a delete needs no check", host: "nolink.example.org", op: dnsrouteapi.OpDelete, status: http.StatusNoContent, result: "ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := newFakeResolver(t, records...)
			res.fail["_acme-challenge.down.example.org."] = true
			cfg := Config{Resolver: res}
			if tc.noResolver {
				cfg.Resolver = nil
			}
			a := newACMERouter(t, cfg)
			a.addEdge(edgeKey, true)
			a.mu.Lock()
			a.names["notes"] = nameEntry{ipns: pub.String(), publisher: pubKey.ID}
			a.mu.Unlock()
			op := cmpOp(tc.op)
			w := a.post(t, http.MethodPost, edgeKey, dnsrouteapi.Challenge{Op: op, Name: "_acme-challenge." + tc.host + ".", Value: testValue})
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := metricValue(t, a.reg, "topcdn_dnsroute_acme_challenges_total", "result", tc.result); got != 1 {
				t.Errorf("result %q counted %v times, want 1", tc.result, got)
			}
			owner := customdomain.ChallengeTarget(tc.host, "cdn.test")
			m, _ := a.answer(context.Background(), a.snap.Load(), newQuery(owner, dns.TypeTXT), netip.MustParseAddr("127.0.0.1"))
			if got := slices.Contains(txtValues(m), testValue); got != tc.visible {
				t.Errorf("%s answers the value: %v, want %v", owner, got, tc.visible)
			}
		})
	}
}

// TestChallengeCustomDomainCached: a verdict is kept (one check for
// several posts), and a delete removes the record.
func TestChallengeCustomDomainCached(t *testing.T) {
	edgeKey, pubKey := testkit.Key(t, 1), testkit.Key(t, 2)
	pub := ipns.NameFromPeer(pubKey.ID)
	res := newFakeResolver(t, fmt.Sprintf("_dnslink.www.example.org. 60 IN TXT \"dnslink=/ipns/%s\"", pub),
		"_acme-challenge.www.example.org. 60 IN CNAME www.example.org._acme.cdn.test.")
	a := newACMERouter(t, Config{Resolver: res})
	a.addEdge(edgeKey, true)
	a.mu.Lock()
	a.names["notes"] = nameEntry{ipns: pub.String(), publisher: pubKey.ID}
	a.mu.Unlock()
	for _, v := range testValues(3) {
		if w := a.post(t, http.MethodPost, edgeKey, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd, Name: "_acme-challenge.www.example.org", Value: v}); w.Code != http.StatusNoContent {
			t.Fatalf("add: %d %s", w.Code, w.Body)
		}
	}
	if res.asked != 2 {
		t.Fatalf("%d DNS questions for three adds, want 2 (one check)", res.asked)
	}
	if got := a.txt(t, "www.example.org._acme.cdn.test."); len(got) != 3 {
		t.Fatalf("TXT %v, want 3 values", got)
	}
	if w := a.post(t, http.MethodPost, edgeKey, dnsrouteapi.Challenge{Op: dnsrouteapi.OpDelete, Name: "_acme-challenge.www.example.org"}); w.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
	if m, _ := a.answer(context.Background(), a.snap.Load(), newQuery("www.example.org._acme.cdn.test.", dns.TypeTXT), netip.MustParseAddr("127.0.0.1")); len(m.Answer) != 0 {
		t.Fatalf("answer after the delete: %v", m)
	}
}

func cmpOp(op string) string {
	if op != "" {
		return op
	}
	return dnsrouteapi.OpAdd
}
