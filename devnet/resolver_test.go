package devnet

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
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
