package devnet

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/internal/testkit"
)

// TestResolver: the devnet's resolver answers names in the zone with the
// router's answer, over UDP and TCP (pebble asks over TCP), a long one
// truncated over UDP and whole over TCP, and refuses names outside the
// zone.
func TestResolver(t *testing.T) {
	// A stand-in router: one TXT for a short name, 40 for a long answer.
	mux := dns.NewServeMux()
	mux.HandleFunc("cdn.test.", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		n := 1
		if strings.HasPrefix(q.Question[0].Name, "_acme-challenge.") {
			n = 40
		}
		for range n {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT,
				Class: dns.ClassINET, Ttl: 10}, Txt: []string{strings.Repeat("v", 43)}})
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncate(udpSize(q))
		}
		w.WriteMsg(m)
	})
	router := serveDNS(t, mux)
	n := &network{cfg: Config{Zone: "cdn.test"}, at: listenAddrs{dns: router, resolver: freeAddr(t)}}
	if err := n.startResolver(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.resolver.stop()

	tests := []struct {
		name, net, qname string
		rcode, answers   int
		truncated        bool
	}{
		{name: "in zone, UDP", net: "udp", qname: "blog.cdn.test.", answers: 1},
		{name: "in zone, TCP", net: "tcp", qname: "BLOG.cdn.test.", answers: 1},
		{name: "long answer, UDP", net: "udp", qname: "_acme-challenge.cdn.test.", answers: 8, truncated: true}, // what fits 512 bytes
		{name: "long answer, TCP", net: "tcp", qname: "_acme-challenge.cdn.test.", answers: 40},
		{name: "the zone's apex", net: "tcp", qname: "cdn.test.", answers: 1},
		{name: "outside the zone", net: "udp", qname: "example.org.", rcode: dns.RcodeRefused},
		{name: "a zone that ends alike", net: "udp", qname: "xcdn.test.", rcode: dns.RcodeRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion(tc.qname, dns.TypeTXT)
			r, _, err := (&dns.Client{Net: tc.net, Timeout: 2 * time.Second}).Exchange(q, n.at.resolver)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode || len(r.Answer) != tc.answers || r.Truncated != tc.truncated || r.Id != q.Id {
				t.Fatalf("rcode %s, %d answers, truncated %v, id %d (want %s, %d, %v, %d)", dns.RcodeToString[r.Rcode],
					len(r.Answer), r.Truncated, r.Id, dns.RcodeToString[tc.rcode], tc.answers, tc.truncated, q.Id)
			}
		})
	}
}

// serveDNS serves h on UDP and TCP at one free loopback address until t
// ends, and returns it.
func serveDNS(t *testing.T, h dns.Handler) string {
	t.Helper()
	addr := freeAddr(t)
	for _, netw := range []string{"udp", "tcp"} {
		started := make(chan struct{})
		srv := &dns.Server{Addr: addr, Net: netw, Handler: h, NotifyStartedFunc: func() { close(started) }}
		go srv.ListenAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return addr
}

// freeAddr returns a loopback address whose port is free on UDP and TCP,
// as far as one can tell.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port on UDP and TCP")
	return ""
}

// TestResolverLocalZone: the resolver answers example.test from its zone
// file, chasing CNAMEs into the router's zone (the chain and the router's
// answer), answers a CNAME question with the CNAME alone, says NXDOMAIN or
// NODATA with the SOA, and reads the file again when it changes.
func TestResolverLocalZone(t *testing.T) {
	mux := dns.NewServeMux()
	mux.HandleFunc("cdn.test.", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		switch qq := q.Question[0]; {
		case qq.Name == "notes.cdn.test." && qq.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.IPv4(127, 1, 0, 1)})
		case qq.Name == "www.example.test._acme.cdn.test." && qq.Qtype == dns.TypeTXT:
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 10}, Txt: []string{"token"}})
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	router := serveDNS(t, mux)
	site, bad := ipnsName(t, 1), ipnsName(t, 2)
	zoneFile := filepath.Join(t.TempDir(), "example.test.zone")
	if err := os.WriteFile(zoneFile, []byte(exampleZoneFile("cdn.test", site, bad)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &network{cfg: Config{Zone: "cdn.test"}, at: listenAddrs{dns: router, resolver: freeAddr(t)}, exampleZone: zoneFile}
	if err := n.startResolver(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.resolver.stop()
	ask := func(t *testing.T, name string, qt uint16) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, qt)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 2 * time.Second}).Exchange(q, n.at.resolver)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name, qname string
		qtype       uint16
		rcode       int
		answer      []string // each RR's type and data
		soa         bool     // the SOA in the authority section
	}{
		{name: "A through the CNAME into the router's zone", qname: "www.example.test.", qtype: dns.TypeA,
			answer: []string{"CNAME notes.cdn.test.", "A 127.1.0.1"}},
		{name: "the DNSLink", qname: "_dnslink.WWW.example.test.", qtype: dns.TypeTXT, answer: []string{`TXT "dnslink=/ipns/` + site.String() + `"`}},
		{name: "the challenge through the delegation", qname: "_acme-challenge.www.example.test.", qtype: dns.TypeTXT,
			answer: []string{"CNAME www.example.test._acme.cdn.test.", `TXT "token"`}},
		{name: "the delegation itself", qname: "_acme-challenge.www.example.test.", qtype: dns.TypeCNAME,
			answer: []string{"CNAME www.example.test._acme.cdn.test."}},
		{name: "the apex SOA", qname: "example.test.", qtype: dns.TypeSOA, answer: []string{"SOA"}},
		{name: "a name that does not exist", qname: "nope.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "no data of that type", qname: "_dnslink.www.example.test.", qtype: dns.TypeA, soa: true},
		{name: "an empty non-terminal", qname: "_acme-challenge.example.test.", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soa: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, tc.qname, tc.qtype)
			var got []string
			for _, rr := range r.Answer {
				f := strings.Fields(rr.String())
				s := strings.Join(f[3:], " ")
				if rr.Header().Rrtype == dns.TypeSOA {
					s = "SOA"
				}
				got = append(got, s)
			}
			if r.Rcode != tc.rcode || strings.Join(got, "|") != strings.Join(tc.answer, "|") || (len(r.Ns) == 1) != tc.soa {
				t.Fatalf("%s, answer %q, %d in authority; want %s, %q, SOA %v", dns.RcodeToString[r.Rcode], got, len(r.Ns),
					dns.RcodeToString[tc.rcode], tc.answer, tc.soa)
			}
		})
	}
	// The publisher removes the DNSLink.
	b, err := os.ReadFile(zoneFile)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "_dnslink.www ") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(zoneFile, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, "_dnslink.www.example.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Fatalf("after the removal: %v", r)
	}
}

// ipnsName returns the IPNS name of the key made from seed.
func ipnsName(t *testing.T, seed byte) ipns.Name {
	return ipns.NameFromPeer(testkit.Key(t, seed).ID)
}
