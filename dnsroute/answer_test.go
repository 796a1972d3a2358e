package dnsroute

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// pureRouter is a router that is never run, with one name, two edges and
// ACME challenge values put straight into its snapshot, for testing answer
// without sockets.
func pureRouter(t testing.TB) (*Router, *snapshot) {
	t.Helper()
	r, err := New(Config{Zone: "cdn.test", Origin: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	s := &snapshot{
		names: map[string]nameEntry{"blog": {ipns: "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"}},
		edges: []*edgeView{
			{peer: "a", v4: netip.MustParseAddr("127.1.0.1"), v6: netip.MustParseAddr("fd00:1::1"), stats: &edgeStats{counter: r.metrics.answers.WithLabelValues("a")}},
			{peer: "b", v4: netip.MustParseAddr("127.2.0.1"), stats: &edgeStats{counter: r.metrics.answers.WithLabelValues("b")}},
		},
		cache: newRespCache(),
		challenges: map[string][]string{"_acme-challenge.cdn.test.": {"LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", "000000000000000000000000000000000000000000A"},
			"_acme-challenge.ipfs.cdn.test.": nil},
	}
	return r, s
}

func TestAnswerPure(t *testing.T) {
	r, s := pureRouter(t)
	src := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name    string
		q       func() *dns.Msg
		rcode   int
		answers int
		aa      bool
	}{
		{"A", func() *dns.Msg { return newQuery("blog", dns.TypeA) }, dns.RcodeSuccess, 2, true},
		{"AAAA: only the edge with IPv6", func() *dns.Msg { return newQuery("blog", dns.TypeAAAA) }, dns.RcodeSuccess, 1, true},
		{"ANY: A and AAAA", func() *dns.Msg { return newQuery("blog", dns.TypeANY) }, dns.RcodeSuccess, 3, true},
		{"apex ANY", func() *dns.Msg { return newQuery("", dns.TypeANY) }, dns.RcodeSuccess, 2, true},
		{"class CH", func() *dns.Msg { m := newQuery("blog", dns.TypeA); m.Question[0].Qclass = dns.ClassCHAOS; return m }, dns.RcodeRefused, 0, false},
		{"EDNS version 1", func() *dns.Msg {
			m := newQuery("blog", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
			return m
		}, dns.RcodeBadVers, 0, false},
		{"two OPT records", func() *dns.Msg {
			m := newQuery("blog", dns.TypeA)
			m.SetEdns0(1232, false)
			m.Extra = append(m.Extra, m.Extra[0])
			return m
		}, dns.RcodeFormatError, 0, false},
		{"NOTIFY", func() *dns.Msg { m := newQuery("blog", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m }, dns.RcodeNotImplemented, 0, false},
		{"no question", func() *dns.Msg { m := newQuery("blog", dns.TypeA); m.Question = nil; return m }, dns.RcodeFormatError, 0, false},
		{"ns2 does not exist", func() *dns.Msg { return newQuery("ns2", dns.TypeA) }, dns.RcodeNameError, 0, true},
		{"ns01 is not ns1", func() *dns.Msg { return newQuery("ns01", dns.TypeA) }, dns.RcodeNameError, 0, true},
		{"ACME challenge TXT", func() *dns.Msg { return newQuery("_acme-challenge", dns.TypeTXT) }, dns.RcodeSuccess, 2, true},
		{"ACME challenge name without values", func() *dns.Msg { return newQuery("_acme-challenge.ipfs", dns.TypeTXT) }, dns.RcodeSuccess, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := r.answer(context.Background(), s, tc.q(), src)
			if m.Rcode != tc.rcode || len(m.Answer) != tc.answers || m.Authoritative != tc.aa {
				t.Errorf("rcode %s, %d answers, AA %v; want %s, %d, %v\n%v", dns.RcodeToString[m.Rcode], len(m.Answer), m.Authoritative,
					dns.RcodeToString[tc.rcode], tc.answers, tc.aa, m)
			}
			if _, err := m.Pack(); err != nil {
				t.Errorf("the response does not pack: %v", err)
			}
		})
	}
}

func TestServfailWithoutEdges(t *testing.T) {
	r, s := pureRouter(t)
	s.edges = nil
	m, _ := r.answer(context.Background(), s, newQuery("blog", dns.TypeA), netip.MustParseAddr("127.0.0.1"))
	if m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

// FuzzAnswer feeds arbitrary packets through the query path: unpack,
// answer (with the ECS check on the bytes, ecsWireOK), truncate, pack. It must never panic, and every response must
// pack and fit the UDP size.
func FuzzAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{
		newQuery("blog", dns.TypeA),
		newQuery("_dnslink.blog", dns.TypeTXT),
		withECS(newQuery("blog", dns.TypeAAAA), "127.2.0.0/24"),
		withECS(newQuery("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi.ipfs", dns.TypeA), "fd00:2::/32"),
		newQuery("", dns.TypeNS),
		newQuery("_acme-challenge", dns.TypeTXT),
		newQuery("_acme-challenge.ipfs", dns.TypeSOA),
		newQuery("k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8.ipns", dns.TypeA),
	} {
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(ecsOctets(f, 0, 0xff)) // an ECS address longer than its prefix
	r, s := pureRouter(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		q := new(dns.Msg)
		if err := q.Unpack(pkt); err != nil {
			return
		}
		m, _ := r.answerWire(context.Background(), s, q, pkt, netip.MustParseAddr("127.0.0.1"))
		m.Truncate(udpSize(q))
		b, err := m.Pack()
		if err != nil {
			t.Fatalf("response does not pack: %v\n%v", err, m)
		}
		if len(b) > udpSize(q) {
			t.Fatalf("response of %d bytes over the UDP size %d", len(b), udpSize(q))
		}
		if m.Id != q.Id || !m.Response {
			t.Fatalf("response ID %d QR %v to query %d", m.Id, m.Response, q.Id)
		}
	})
}
