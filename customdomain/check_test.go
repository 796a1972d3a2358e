package customdomain

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
)

// zone is a fake resolver's data: owner name (fully qualified, lower
// case) → its records. A name with no records is NXDOMAIN; a name in
// fail makes the resolver fail.
type zone struct {
	rrs   map[string][]dns.RR
	fail  map[string]bool
	asked []string
}

// Exchange answers m from z as a recursive resolver would: the CNAMEs
// from the question's name, then the records of the type asked at the
// name they end at (a CNAME question stops at the first).
func (z *zone) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	q := m.Question[0]
	name := strings.ToLower(q.Name)
	z.asked = append(z.asked, name)
	if z.fail[name] {
		return nil, errors.New("timeout")
	}
	ans := new(dns.Msg)
	ans.SetReply(m)
	for range 10 {
		rrs, ok := z.rrs[name]
		if !ok {
			ans.Rcode = dns.RcodeNameError
			return ans, nil
		}
		next := ""
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				ans.Answer = append(ans.Answer, rr)
			} else if c, ok := rr.(*dns.CNAME); ok {
				ans.Answer = append(ans.Answer, rr)
				next = c.Target
			}
		}
		if next == "" || q.Qtype == dns.TypeCNAME {
			return ans, nil
		}
		name = next
	}
	return ans, nil
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newKey returns a new IPNS name.
func newKey(t *testing.T) ipns.Name {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ipns.NameFromPeer(id)
}

func TestCheck(t *testing.T) {
	key, other := newKey(t), newKey(t)
	link := `"dnslink=/ipns/` + key.String() + `"`
	deleg := "_acme-challenge.www.example.org. 300 IN CNAME www.example.org._acme.cdn.test."
	tests := []struct {
		name    string
		host    string
		records []string
		fail    []string
		want    error // nil: allowed, with key
		ttl     time.Duration
		asks    int // questions asked: the cheap refusals ask none
	}{
		{name: "ok", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link, deleg}, ttl: 120 * time.Second, asks: 2},
		{name: "ok, upper case and a trailing dot", host: "WWW.Example.ORG.", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link, deleg}, ttl: 120 * time.Second, asks: 2},
		{name: "ok, other TXT values beside", host: "www.example.org", records: []string{"_dnslink.www.example.org. 60 IN TXT \"v=spf1 -all\"",
			"_dnslink.www.example.org. 120 IN TXT " + link, deleg}, ttl: 60 * time.Second, asks: 2},
		{name: "ok, TXT split in strings", host: "www.example.org", records: []string{`_dnslink.www.example.org. 120 IN TXT "dnslink=/ipns/" "` + key.String() + `"`, deleg}, ttl: 120 * time.Second, asks: 2},
		{name: "ok, _dnslink a CNAME", host: "www.example.org", records: []string{"_dnslink.www.example.org. 30 IN CNAME _dnslink.notes.cdn.test.",
			"_dnslink.notes.cdn.test. 120 IN TXT " + link, deleg}, ttl: 30 * time.Second, asks: 2},
		{name: "IP address", host: "192.0.2.1", want: ErrBadHost},
		{name: "IPv6 address", host: "2001:db8::1", want: ErrBadHost},
		{name: "one label", host: "localhost", want: ErrBadHost},
		{name: "underscore", host: "_x.example.org", want: ErrBadHost},
		{name: "empty label", host: "www..example.org", want: ErrBadHost},
		{name: "hyphen first", host: "-www.example.org", want: ErrBadHost},
		{name: "too long", host: strings.Repeat("a.", 120) + "example.org", want: ErrBadHost},
		{name: "the zone", host: "cdn.test", want: ErrInZone},
		{name: "in the zone", host: "x.blog.CDN.test", want: ErrInZone},
		{name: "no _dnslink name", host: "www.example.org", records: []string{deleg}, want: ErrNoDNSLink, asks: 1},
		{name: "no dnslink= value", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT \"hello\"", deleg}, want: ErrNoDNSLink, asks: 1},
		{name: "two dnslink= values", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link,
			"_dnslink.www.example.org. 120 IN TXT \"dnslink=/ipns/" + other.String() + "\"", deleg}, want: ErrNoDNSLink, asks: 1},
		{name: "an /ipfs/ path", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT \"dnslink=/ipfs/bafkqaaa\"", deleg}, want: ErrNoDNSLink, asks: 1},
		{name: "a DNSLink chain", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT \"dnslink=/ipns/example.com\"", deleg}, want: ErrNoDNSLink, asks: 1},
		{name: "no delegation", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link}, want: ErrNoDelegation, asks: 2},
		{name: "delegated elsewhere", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link,
			"_acme-challenge.www.example.org. 300 IN CNAME www.example.org._acme.other.test."}, want: ErrNoDelegation, asks: 2},
		{name: "delegated for another host", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link,
			"_acme-challenge.www.example.org. 300 IN CNAME example.org._acme.cdn.test."}, want: ErrNoDelegation, asks: 2},
		{name: "challenge name a TXT, not a CNAME", host: "www.example.org", records: []string{"_dnslink.www.example.org. 120 IN TXT " + link,
			"_acme-challenge.www.example.org. 300 IN TXT \"x\""}, want: ErrNoDelegation, asks: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := &zone{rrs: map[string][]dns.RR{}}
			for _, s := range tc.records {
				r := rr(t, s)
				n := strings.ToLower(r.Header().Name)
				z.rrs[n] = append(z.rrs[n], r)
			}
			got, err := Check(context.Background(), z, tc.host, "cdn.test")
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if got.Key != key || got.TTL != tc.ttl {
				t.Fatalf("link %s %s, want %s %s", got.Key, got.TTL, key, tc.ttl)
			}
			if len(z.asked) != tc.asks {
				t.Fatalf("asked %d questions (%v), want %d", len(z.asked), z.asked, tc.asks)
			}
		})
	}
}

// TestCheckResolverFails: a resolver that gives no answer is no verdict
// on the host: the error is none of the sentinels.
func TestCheckResolverFails(t *testing.T) {
	key := newKey(t)
	for _, failing := range []string{"_dnslink.www.example.org.", "_acme-challenge.www.example.org."} {
		z := &zone{rrs: map[string][]dns.RR{"_dnslink.www.example.org.": {rr(t, `_dnslink.www.example.org. 60 IN TXT "dnslink=/ipns/`+key.String()+`"`)}},
			fail: map[string]bool{failing: true}}
		_, err := Check(context.Background(), z, "www.example.org", "cdn.test")
		if err == nil {
			t.Fatalf("%s failing: no error", failing)
		}
		for _, s := range []error{ErrBadHost, ErrInZone, ErrNoDNSLink, ErrNoDelegation} {
			if errors.Is(err, s) {
				t.Fatalf("%s failing: %v is %v", failing, err, s)
			}
		}
	}
}

func TestChallengeTarget(t *testing.T) {
	tests := []struct{ host, zone, want string }{
		{"www.example.org", "cdn.test", "www.example.org._acme.cdn.test."},
		{"WWW.Example.org.", "CDN.test.", "www.example.org._acme.cdn.test."},
	}
	for _, tc := range tests {
		got := ChallengeTarget(tc.host, tc.zone)
		if got != tc.want {
			t.Errorf("ChallengeTarget(%q, %q) = %q, want %q", tc.host, tc.zone, got, tc.want)
		}
	}
}
