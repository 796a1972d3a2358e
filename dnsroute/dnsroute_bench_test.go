package dnsroute

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkAnswer measures the full query path without the response
// cache: decode, answer (rank edges, locate nothing), encode.
func BenchmarkAnswer(b *testing.B) {
	r, s := pureRouter(b)
	pkt, _ := newQuery("blog", dns.TypeA).Pack()
	src := netip.MustParseAddr("127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		q, err := unpack(pkt)
		if err != nil {
			b.Fatal(err)
		}
		m, _ := r.answer(context.Background(), s, q, src)
		if _, err := m.Pack(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheHit measures a UDP query answered from the response cache,
// without the socket: key, lookup, copy, counters.
func BenchmarkCacheHit(b *testing.B) {
	r, s := pureRouter(b)
	r.snap.Store(s)
	r.rrl = nil // measured by dnsperf with rate limiting off too
	u := &UDPServer{r: r}
	pkt, _ := newQuery("blog", dns.TypeA).Pack()
	ap := netip.MustParseAddrPort("127.0.0.1:5353")
	m, handed := r.answer(context.Background(), s, newQuery("blog", dns.TypeA), ap.Addr())
	resp, _ := m.Pack()
	var key []byte
	sub := subnet(ap.Addr()).As16()
	key = append(append(key, pkt[2:]...), sub[:]...)
	s.cache.put(key, &cachedResp{b: resp, handed: handed, queries: r.metrics.queries.WithLabelValues("A", "NOERROR")})
	buf := make([]byte, 0, ednsSize)
	b.ReportAllocs()
	for b.Loop() {
		if out := u.handle(pkt, ap, &key, buf[:0]); len(out) != len(resp) {
			b.Fatalf("got %d bytes, want %d", len(out), len(resp))
		}
	}
}
