package customdomain

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// TestNewResolver: the resolver skips a server that does not answer,
// asks the next over UDP, and over TCP when the answer is truncated.
func TestNewResolver(t *testing.T) {
	key := newKey(t)
	var mu sync.Mutex
	var nets []string
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		_, udp := w.RemoteAddr().(*net.UDPAddr)
		mu.Lock()
		nets = append(nets, map[bool]string{true: "udp", false: "tcp"}[udp])
		mu.Unlock()
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{"dnslink=/ipns/" + key.String()}})
		for range 30 { // too long for 1232 bytes: truncated over UDP
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{strings.Repeat("x", 60)}})
		}
		if udp {
			m.Truncate(1232)
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Skipf("no TCP port beside UDP %s: %v", pc.LocalAddr(), err)
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	// A closed port first: nothing answers there.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()

	r, err := NewResolver([]string{deadAddr, pc.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	link, err := LookupDNSLink(context.Background(), r, "www.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if link.Key != key {
		t.Fatalf("key %s, want %s", link.Key, key)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(nets, ",") != "udp,tcp" {
		t.Fatalf("asked over %v, want udp then tcp", nets)
	}
}
