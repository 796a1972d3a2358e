package devnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver plays the internet's recursive resolver for the devnet's CA
// and edges, in the devnet's own process: it forwards queries for names
// in the zone to the DNS router, as a recursive resolver following the
// zone's delegation would, and refuses the rest. pebble validates DNS-01
// challenges through it (-dnsserver), and the edges check that their
// challenge records are visible through it (tls resolvers).
type resolver struct {
	zone   string // fully qualified, lower case
	router string // the router's DNS address, host:port
	udp    *dns.Server
	tcp    *dns.Server
}

// startResolver serves the resolver on the devnet's resolver address,
// UDP and TCP.
func (n *network) startResolver(context.Context) error {
	rs := &resolver{zone: strings.ToLower(dns.Fqdn(n.cfg.Zone)), router: n.at.dns}
	pc, err := net.ListenPacket("udp", n.at.resolver)
	if err != nil {
		return fmt.Errorf("devnet: resolver: %w", err)
	}
	ln, err := net.Listen("tcp", n.at.resolver)
	if err != nil {
		pc.Close()
		return fmt.Errorf("devnet: resolver: %w", err)
	}
	rs.udp = &dns.Server{PacketConn: pc, Handler: rs}
	rs.tcp = &dns.Server{Listener: ln, Handler: rs, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	go rs.udp.ActivateAndServe()
	go rs.tcp.ActivateAndServe()
	n.resolver = rs
	return nil
}

// stop stops both listeners within 2 s.
func (rs *resolver) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rs.udp.ShutdownContext(ctx)
	rs.tcp.ShutdownContext(ctx)
}

// ServeDNS answers q with the router's answer when it asks for a name in
// the zone, REFUSED otherwise, SERVFAIL when the router does not answer.
func (rs *resolver) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	if len(q.Question) != 1 || !dns.IsSubDomain(rs.zone, strings.ToLower(q.Question[0].Name)) {
		m.SetRcode(q, dns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	r, err := rs.forward(ctx, q)
	if err != nil {
		m.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	r.Id = q.Id
	r.Authoritative = false // a resolver's answer, from cache as far as the client knows
	r.RecursionAvailable = true
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		r.Truncate(udpSize(q))
	}
	w.WriteMsg(r)
}

// forward asks the router, over UDP, and over TCP when the answer was
// truncated.
func (rs *resolver) forward(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	fq := q.Copy()
	fq.RecursionDesired = false
	r, _, err := (&dns.Client{Net: "udp", UDPSize: dns.MaxMsgSize}).ExchangeContext(ctx, fq, rs.router)
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, fq, rs.router)
	}
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("no answer")
	}
	return r, nil
}

// udpSize is the largest UDP answer q's sender takes.
func udpSize(q *dns.Msg) int {
	if o := q.IsEdns0(); o != nil {
		return int(max(o.UDPSize(), dns.MinMsgSize))
	}
	return dns.MinMsgSize
}
