package dnsroute

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// geoNet is a router with the test GeoIP file, a published name "blog" and
// three healthy edges: Frankfurt (127.1.0.1), Tokyo (127.2.0.1) and São
// Paulo (127.3.0.1).
type geoNet struct {
	*testRouter
	origin *fakeOrigin
	edges  map[string]*fakeEdge // by IP
	stop   map[string]func()
}

const beat = 200 * time.Millisecond

func newGeoNet(t *testing.T, cfg Config) *geoNet {
	t.Helper()
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	geo, err := OpenGeoDB(testGeo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() })
	cfg.Origin, cfg.GeoIP = o.srv.URL, geo
	tr := startRouter(t, cfg)
	g := &geoNet{testRouter: tr, origin: o, edges: map[string]*fakeEdge{}, stop: map[string]func(){}}
	for _, ip := range []string{"127.1.0.1", "127.2.0.1", "127.3.0.1"} {
		e := newFakeEdge(t, ip, o)
		g.edges[ip] = e
		g.stop[ip] = e.beat(t, tr.http.URL, beat)
	}
	testkit.WaitFor(t, 5*time.Second, "3 healthy edges", func() bool { return tr.healthyEdges() == 3 })
	return g
}

func TestAnswers(t *testing.T) {
	g := newGeoNet(t, Config{})
	cid := "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answers int    // records in the answer section
		first   string // the first answer's text, or "" to skip
		soa     bool   // an SOA in the authority section
	}{
		{"apex SOA", "", dns.TypeSOA, dns.RcodeSuccess, 1, "", false},
		{"apex NS", "", dns.TypeNS, dns.RcodeSuccess, 1, "ns1." + testZone, false},
		{"apex A", "", dns.TypeA, dns.RcodeSuccess, 1, "127.0.0.1", false},
		{"apex AAAA is NODATA", "", dns.TypeAAAA, dns.RcodeSuccess, 0, "", true},
		{"name server", "ns1", dns.TypeA, dns.RcodeSuccess, 1, "127.0.0.1", false},
		{"site A", "blog", dns.TypeA, dns.RcodeSuccess, 2, "127.1.0.1", false},
		{"site A, mixed case", "BLoG.CDN.test.", dns.TypeA, dns.RcodeSuccess, 2, "127.1.0.1", false},
		{"site AAAA is NODATA (edges have no IPv6)", "blog", dns.TypeAAAA, dns.RcodeSuccess, 0, "", true},
		{"site MX is NODATA", "blog", dns.TypeMX, dns.RcodeSuccess, 0, "", true},
		{"dnslink TXT", "_dnslink.blog", dns.TypeTXT, dns.RcodeSuccess, 1, "dnslink=/ipns/k51", false},
		{"dnslink A is NODATA", "_dnslink.blog", dns.TypeA, dns.RcodeSuccess, 0, "", true},
		{"unknown name", "nope", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"dnslink of unknown name", "_dnslink.nope", dns.TypeTXT, dns.RcodeNameError, 0, "", true},
		{"below a site", "www.blog", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"CID subdomain", cid + ".ipfs", dns.TypeA, dns.RcodeSuccess, 2, "127.1.0.1", false},
		{"not a CID", "bafyNOPE.ipfs", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"CIDv0 does not fit a label", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG.ipfs", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"ipfs is an empty non-terminal", "ipfs", dns.TypeA, dns.RcodeSuccess, 0, "", true},
		{"IPNS key subdomain", g.origin.names[0].IPNS + ".ipns", dns.TypeA, dns.RcodeSuccess, 2, "127.1.0.1", false},
		{"IPNS key subdomain, in capitals", strings.ToUpper(g.origin.names[0].IPNS) + ".ipns", dns.TypeA, dns.RcodeSuccess, 2, "127.1.0.1", false},
		{"IPNS key subdomain AAAA is NODATA", g.origin.names[0].IPNS + ".ipns", dns.TypeAAAA, dns.RcodeSuccess, 0, "", true},
		{"a CID that is no key under ipns", cid + ".ipns", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"not an IPNS key", "k51nope.ipns", dns.TypeA, dns.RcodeNameError, 0, "", true},
		{"ipns is an empty non-terminal", "ipns", dns.TypeA, dns.RcodeSuccess, 0, "", true},
		{"outside the zone", "example.com.", dns.TypeA, dns.RcodeRefused, 0, "", false},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				r := g.query(t, network, "", newQuery(tc.qname, tc.qtype))
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if len(r.Answer) != tc.answers {
					t.Fatalf("%d answers, want %d: %v", len(r.Answer), tc.answers, r.Answer)
				}
				if tc.first != "" && !strings.Contains(r.Answer[0].String(), tc.first) {
					t.Errorf("first answer %q, want it to hold %q", r.Answer[0], tc.first)
				}
				hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
				if hasSOA != tc.soa {
					t.Errorf("authority %v, want SOA: %v", r.Ns, tc.soa)
				}
				if tc.rcode != dns.RcodeRefused && !r.Authoritative {
					t.Error("AA not set")
				}
				if len(r.Answer) > 0 && r.Answer[0].Header().Name != r.Question[0].Name {
					t.Errorf("owner %q, want the question's %q", r.Answer[0].Header().Name, r.Question[0].Name)
				}
			})
		}
	}
}

func TestNearestEdge(t *testing.T) {
	g := newGeoNet(t, Config{})
	tests := []struct {
		name  string
		laddr string // source address of the query
		ecs   string // client subnet option, or ""
		want  []string
		scope uint8
	}{
		{"by source: Frankfurt", "127.1.0.9", "", []string{"127.1.0.1", "127.2.0.1"}, 0},
		{"by source: Tokyo", "127.2.0.5", "", []string{"127.2.0.1", "127.1.0.1"}, 0},
		{"by source: São Paulo", "127.3.0.5", "", []string{"127.3.0.1", "127.1.0.1"}, 0},
		{"by ECS: Tokyo, from Frankfurt", "127.1.0.9", "127.2.5.0/24", []string{"127.2.0.1", "127.1.0.1"}, 24},
		{"by ECS: São Paulo /16", "127.0.0.1", "127.3.0.0/16", []string{"127.3.0.1", "127.1.0.1"}, 16},
		{"ECS /0: by source", "127.2.0.5", "0.0.0.0/0", []string{"127.2.0.1", "127.1.0.1"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQuery("blog", dns.TypeA)
			if tc.ecs != "" {
				q = withECS(q, tc.ecs)
			}
			for range 3 { // the second and third come from the response cache
				r := g.query(t, "udp", tc.laddr, q)
				if got := addrs(r); !slices.Equal(got, tc.want) {
					t.Fatalf("answer %v, want %v", got, tc.want)
				}
				if tc.ecs == "" {
					continue
				}
				var echo *dns.EDNS0_SUBNET
				if opt := r.IsEdns0(); opt != nil {
					for _, o := range opt.Option {
						if e, ok := o.(*dns.EDNS0_SUBNET); ok {
							echo = e
						}
					}
				}
				if echo == nil {
					t.Fatal("ECS option not echoed")
				}
				if echo.SourceScope != tc.scope || echo.SourceNetmask != q.IsEdns0().Option[0].(*dns.EDNS0_SUBNET).SourceNetmask {
					t.Errorf("echoed source /%d scope /%d, want scope /%d", echo.SourceNetmask, echo.SourceScope, tc.scope)
				}
			}
		})
	}
}

// ecsOctets packs an A query for blog with ECS 127.2.5.0/24 whose address
// has the octets extra added after its 3 (or, for a single -1, its last
// removed), the option and OPT lengths set to match.
func ecsOctets(t testing.TB, extra ...int) []byte {
	t.Helper()
	b, err := withECS(newQuery("blog", dns.TypeA), "127.2.5.0/24").Pack()
	if err != nil {
		t.Fatal(err)
	}
	// The packet ends with the OPT record: … RDLENGTH(2) CODE(2)
	// LENGTH(2) FAMILY(2) SOURCE(1) SCOPE(1) ADDRESS(3).
	d := len(extra)
	if d == 1 && extra[0] < 0 {
		b, d = b[:len(b)-1], -1
	} else {
		for _, x := range extra {
			b = append(b, byte(x))
		}
	}
	end := len(b) - 7 - d // end of LENGTH
	binary.BigEndian.PutUint16(b[end-2:], uint16(7+d))
	binary.BigEndian.PutUint16(b[end-6:], uint16(11+d))
	return b
}

func TestMalformedQueries(t *testing.T) {
	g := newGeoNet(t, Config{})
	ecs := func(patch func(b []byte)) []byte {
		q := withECS(newQuery("blog", dns.TypeA), "127.2.5.0/24")
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		patch(b[len(b)-7:]) // the option: family(2) source(1) scope(1) address(3)
		return b
	}
	tests := []struct {
		name  string
		pkt   []byte
		rcode int // -1: no answer expected
	}{
		{"ECS bits past the source prefix", ecs(func(o []byte) { o[2] = 20 }), dns.RcodeFormatError},
		{"ECS scope set in a query", ecs(func(o []byte) { o[3] = 24 }), dns.RcodeFormatError},
		{"ECS unknown family", ecs(func(o []byte) { o[1] = 7 }), dns.RcodeFormatError},
		{"ECS /24 with 4 octets, bits set past the prefix", ecsOctets(t, 0x09), dns.RcodeFormatError},
		{"ECS /24 with 4 octets, the last zero", ecsOctets(t, 0), dns.RcodeFormatError},
		{"ECS IPv4 /24 with 5 octets, bits set past the family's length", ecsOctets(t, 0, 0xff), dns.RcodeFormatError},
		{"ECS /24 with 2 octets", ecsOctets(t, -1), dns.RcodeFormatError},
		{"ECS /24 with its 3 octets", ecsOctets(t), dns.RcodeSuccess},
		{"truncated question", ecs(func([]byte) {})[:20], dns.RcodeFormatError},
		{"two questions", func() []byte {
			q := newQuery("blog", dns.TypeA)
			q.Question = append(q.Question, q.Question[0])
			b, _ := q.Pack()
			return b
		}(), dns.RcodeFormatError},
		{"not a query opcode", func() []byte {
			q := newQuery("blog", dns.TypeA)
			q.Opcode = dns.OpcodeUpdate
			b, _ := q.Pack()
			return b
		}(), dns.RcodeNotImplemented},
		{"header only", []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, dns.RcodeFormatError},
		{"short of a header", []byte{1, 2, 3}, -1},
		{"a response", func() []byte {
			q := newQuery("blog", dns.TypeA)
			q.Response = true
			b, _ := q.Pack()
			return b
		}(), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("udp", g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if tc.rcode < 0 {
				if err == nil {
					t.Fatalf("got a %d-byte answer, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			var r dns.Msg
			if err := r.Unpack(buf[:n]); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode || !r.Response || r.Id != uint16(tc.pkt[0])<<8|uint16(tc.pkt[1]) {
				t.Errorf("rcode %s, QR %v, ID %d; want %s to query %d", dns.RcodeToString[r.Rcode], r.Response, r.Id,
					dns.RcodeToString[tc.rcode], uint16(tc.pkt[0])<<8|uint16(tc.pkt[1]))
			}
		})
	}
	// The router still answers.
	if r := g.query(t, "udp", "", newQuery("blog", dns.TypeA)); len(r.Answer) != 2 {
		t.Errorf("after malformed queries: %v", r)
	}
}

func TestTruncationAndTCPFallback(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	tr := startRouter(t, Config{Origin: o.srv.URL, Edges: 40})
	for i := range 40 {
		e := newFakeEdge(t, "127.1.1."+strconv.Itoa(i+1), o)
		// A 5 s interval gives each health probe 5 s: on a loaded machine
		// one of 40 probes a second could miss a 1 s bound, and the edge
		// would leave the answers this test counts.
		e.beat(t, tr.http.URL, 5*time.Second)
	}
	testkit.WaitFor(t, 10*time.Second, "40 healthy edges", func() bool { return tr.healthyEdges() == 40 })

	tests := []struct {
		name      string
		network   string
		edns      uint16 // 0: no EDNS0
		truncated bool
		answers   int
	}{
		{"UDP 512", "udp", 0, true, 40}, // 40 A records need 652+ bytes
		{"UDP EDNS 1232", "udp", 1232, false, 40},
		{"UDP EDNS 4096 is capped at 1232", "udp", 4096, false, 40},
		{"TCP", "tcp", 0, false, 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQuery("blog", dns.TypeA)
			if tc.edns > 0 {
				q.SetEdns0(tc.edns, false)
			}
			r := tr.query(t, tc.network, "", q)
			if r.Truncated != tc.truncated {
				t.Errorf("TC %v, want %v", r.Truncated, tc.truncated)
			}
			if !tc.truncated && len(r.Answer) != tc.answers {
				t.Errorf("%d answers, want %d", len(r.Answer), tc.answers)
			}
			if tc.truncated && len(r.Answer) >= tc.answers {
				t.Errorf("%d answers in a truncated response", len(r.Answer))
			}
		})
	}
	// The miekg client retries over TCP when it sees TC, as resolvers do.
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(newQuery("blog", dns.TypeA), tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated {
		rt, _, err := (&dns.Client{Net: "tcp", Timeout: 2 * time.Second}).Exchange(newQuery("blog", dns.TypeA), tr.addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(rt.Answer) != 40 {
			t.Errorf("TCP fallback gave %d answers, want 40", len(rt.Answer))
		}
	} else {
		t.Error("no TC over UDP without EDNS0")
	}
	// Truncated answers do not count as handing an edge out: each edge was
	// in the 4 full answers above.
	for _, e := range tr.Edges() {
		if e.Answers != 4 {
			t.Errorf("edge %s handed out %d times, want 4", e.Addrs[0], e.Answers)
		}
	}
}

// TestSiblingRouters runs two routers for one zone, each with its own
// state from the origin and the heartbeats: they give the same answers.
func TestSiblingRouters(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	geo, err := OpenGeoDB(testGeo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() }) // after the routers stop
	ns := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	a := startRouter(t, Config{Origin: o.srv.URL, GeoIP: geo, NSAddrs: ns})
	b := startRouter(t, Config{Origin: o.srv.URL, GeoIP: geo, NSAddrs: ns})
	for _, ip := range []string{"127.1.0.1", "127.2.0.1", "127.3.0.1"} {
		e := newFakeEdge(t, ip, o)
		e.beat(t, a.http.URL, beat)
		e.beat(t, b.http.URL, beat)
	}
	for _, r := range []*testRouter{a, b} {
		testkit.WaitFor(t, 5*time.Second, "3 healthy edges", func() bool { return r.healthyEdges() == 3 })
	}
	tests := []struct {
		name  string
		laddr string
		q     *dns.Msg
	}{
		{"Tokyo A", "127.2.0.5", newQuery("blog", dns.TypeA)},
		{"São Paulo A", "127.3.0.5", newQuery("blog", dns.TypeA)},
		{"NS", "", newQuery("", dns.TypeNS)},
		{"NXDOMAIN", "", newQuery("nope", dns.TypeA)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ra, rb := a.query(t, "udp", tc.laddr, tc.q), b.query(t, "udp", tc.laddr, tc.q)
			if ra.Rcode != rb.Rcode || len(ra.Answer) != len(rb.Answer) || len(ra.Extra) != len(rb.Extra) {
				t.Fatalf("sibling answers differ:\n%v\n%v", ra, rb)
			}
			for i := range ra.Answer {
				if ra.Answer[i].String() != rb.Answer[i].String() {
					t.Errorf("answer %d: %s vs %s", i, ra.Answer[i], rb.Answer[i])
				}
			}
		})
	}
}

// TestAAAAByIPv6Subnet checks AAAA answers and IPv6 client subnets.
func TestAAAAByIPv6Subnet(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	geo, err := OpenGeoDB(testGeo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() }) // after the routers stop
	// The edges' IPv6 addresses are made up (nothing here listens on
	// them), so they are taken unprobed.
	tr := startRouter(t, Config{Origin: o.srv.URL, GeoIP: geo, trustAddrs: true})
	for ip, v6 := range map[string]string{"127.1.0.1": "fd00:1::1", "127.2.0.1": "fd00:2::1", "127.3.0.1": "fd00:3::1"} {
		e := newFakeEdge(t, ip, o)
		hb := e.heartbeat(time.Second)
		hb.Addrs = []string{v6, ip} // located by the first: the IPv6 one
		if err := dnsrouteapi.SendHeartbeat(context.Background(), http.DefaultClient, tr.http.URL, e.key, hb); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "3 healthy edges", func() bool { return tr.healthyEdges() == 3 })
	tests := []struct {
		ecs   string
		qtype uint16
		want  []string
		scope uint8
	}{
		{"fd00:2:abcd::/48", dns.TypeAAAA, []string{"fd00:2::1", "fd00:1::1"}, 48},
		{"fd00:3::/64", dns.TypeAAAA, []string{"fd00:3::1", "fd00:1::1"}, 56},
		{"fd00:3::/64", dns.TypeA, []string{"127.3.0.1", "127.1.0.1"}, 56},
	}
	for _, tc := range tests {
		t.Run(tc.ecs+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			r := tr.query(t, "udp", "", withECS(newQuery("blog", tc.qtype), tc.ecs))
			if got := addrs(r); !slices.Equal(got, tc.want) {
				t.Errorf("%v, want %v", got, tc.want)
			}
			if e := r.IsEdns0().Option[0].(*dns.EDNS0_SUBNET); e.SourceScope != tc.scope {
				t.Errorf("scope /%d, want /%d", e.SourceScope, tc.scope)
			}
		})
	}
}
