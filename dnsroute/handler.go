package dnsroute

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
)

// Message sizes.
const (
	// ednsSize is the UDP payload size the router advertises and the most
	// it sends over UDP, whatever the client offers (the DNS flag day 2020
	// figure, which avoids IP fragmentation).
	ednsSize = 1232
	// queryTimeout bounds the work on one query.
	queryTimeout = 2 * time.Second
)

// ServeDNS answers one query; it implements dns.Handler. UDP answers are
// truncated (TC set) to the client's EDNS0 buffer size (512 without EDNS0,
// at most 1232), so the client retries over TCP.
func (r *Router) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	start := time.Now()
	src, udp := remoteAddr(w.RemoteAddr())
	transport := "tcp"
	if udp {
		transport = "udp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	s := r.snap.Load()
	uw, fast := w.(*udpWriter)
	var raw []byte
	if fast {
		raw = uw.pkt
	}
	m, handed := r.answerWire(ctx, s, q, raw, src)
	var rrlKey uint64
	if udp {
		m.Truncate(udpSize(q))
		if m.Truncated {
			handed = handout{} // the client asks again over TCP; that one counts
		}
		if r.rrl != nil {
			// Limited per response, so the response comes first (see rrl).
			rrlKey = r.rrl.key(m, r.cfg.Zone)
			if act := r.rrl.check(src, rrlKey, start); act != rrlAllow {
				if fast {
					// Kept unsent: the next such query is a cache hit,
					// limited at the cost of a lookup.
					uw.writeCached(m, s, handed, rrlKey, false)
				}
				if act == rrlSlip {
					w.WriteMsg(slipResponse(q))
				}
				return
			}
		}
	}
	r.count(handed, src, s)
	if fast {
		uw.writeCached(m, s, handed, rrlKey, true)
	} else {
		w.WriteMsg(m)
	}
	r.metrics.queries.WithLabelValues(typeLabel(qtype(q)), rcodeLabel(m.Rcode)).Inc()
	r.metrics.duration.WithLabelValues(transport).Observe(time.Since(start).Seconds())
}

// remoteAddr returns the client's address and whether it came over UDP.
func remoteAddr(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), true
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), false
	}
	return netip.Addr{}, false
}

// udpSize is the largest UDP response q allows.
func udpSize(q *dns.Msg) int {
	if opt := q.IsEdns0(); opt != nil {
		return int(min(max(opt.UDPSize(), dns.MinMsgSize), ednsSize))
	}
	return dns.MinMsgSize
}

func qtype(q *dns.Msg) uint16 {
	if len(q.Question) == 0 {
		return 0
	}
	return q.Question[0].Qtype
}

// slipResponse is the empty, truncated answer rate limiting sends instead
// of a dropped one, so a real client behind a flooded subnet retries over
// TCP.
func slipResponse(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Truncated = true
	return m
}

// query is a question being answered, with who asks.
type query struct {
	name   string // lower case, fully qualified
	qtype  uint16
	client netip.Addr // located client: ECS address or source
	tie    uint64     // tie-break key: the client's subnet
	ecs    *dns.EDNS0_SUBNET
	scope  uint8 // ECS scope to echo when the answer depends on the client
}

// answer builds the response to q from snapshot s, asked by src. It
// returns what it handed out, for the caller to count once the response
// is sent. It never blocks and never fails: problems with q become
// response codes.
func (r *Router) answer(_ context.Context, s *snapshot, q *dns.Msg, src netip.Addr) (*dns.Msg, handout) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = false
	if q.Opcode != dns.OpcodeQuery {
		m.SetRcode(q, dns.RcodeNotImplemented)
		return m, handout{}
	}
	if len(q.Question) != 1 || len(q.Answer) != 0 || len(q.Ns) != 0 {
		m.SetRcode(q, dns.RcodeFormatError)
		return m, handout{}
	}
	qq := query{qtype: q.Question[0].Qtype, client: src}
	opt, ok := r.readEDNS(q, &qq)
	if !ok {
		m.SetRcode(q, dns.RcodeFormatError)
		return m, handout{}
	}
	if opt != nil {
		ro := m.SetEdns0(ednsSize, opt.Do()).IsEdns0()
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m, handout{}
		}
		if qq.ecs != nil {
			// Echo ECS with the scope the answer depends on (RFC 7871
			// §7.2.1); site sets it when the answer depends on the client.
			e := *qq.ecs
			defer func() { e.SourceScope = qq.scope }()
			ro.Option = append(ro.Option, &e)
		}
	}
	qq.client, qq.tie = clientKey(qq.client, qq.ecs)

	switch c := q.Question[0].Qclass; c {
	case dns.ClassINET, dns.ClassANY:
	default:
		m.SetRcode(q, dns.RcodeRefused)
		return m, handout{}
	}
	qq.name = strings.ToLower(q.Question[0].Name)
	zone := r.cfg.Zone
	if !dns.IsSubDomain(zone, qq.name) {
		m.SetRcode(q, dns.RcodeRefused)
		return m, handout{}
	}
	m.Authoritative = true
	owner := q.Question[0].Name
	if vals, ok := s.challenges[qq.name]; ok {
		r.challengeAnswer(m, s, owner, qq.qtype, vals)
		return m, handout{}
	}
	rel := strings.TrimSuffix(strings.TrimSuffix(qq.name, zone), ".")
	labels := strings.Split(rel, ".")
	switch {
	case rel == "":
		r.apex(m, s, owner, qq.qtype)
		return m, handout{}
	case len(labels) == 1:
		if a, ok := r.nsAddr(labels[0]); ok {
			r.addrAnswer(m, s, owner, qq.qtype, a)
			return m, handout{}
		}
		if labels[0] == "ipfs" || labels[0] == "ipns" { // empty non-terminals
			r.nodata(m, s)
			return m, handout{}
		}
		if e, ok := s.names[labels[0]]; ok {
			return m, r.site(m, s, owner, &qq, e.suspended).forSite("name:"+labels[0], src, qq.ecs)
		}
	case len(labels) == 2 && labels[0] == "_dnslink":
		if e, ok := s.names[labels[1]]; ok {
			if qq.qtype == dns.TypeTXT || qq.qtype == dns.TypeANY {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: r.hdr(owner, dns.TypeTXT), Txt: []string{"dnslink=/ipns/" + e.ipns}})
			} else {
				r.nodata(m, s)
			}
			return m, handout{}
		}
	case len(labels) == 2 && labels[1] == "ipfs":
		if c, ok := cidLabel(labels[0]); ok {
			return m, r.site(m, s, owner, &qq, false).forSite("cid:"+c, src, qq.ecs)
		}
	case len(labels) == 2 && labels[1] == "ipns":
		if publisher, ok := ipnsLabel(labels[0]); ok {
			// The edges' billing records name such a site by the label
			// (edge.Served.Name), lower case: so does demand.
			return m, r.site(m, s, owner, &qq, s.suspended[publisher]).forSite("name:"+labels[0], src, qq.ecs)
		}
	}
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, r.soa(s))
	return m, handout{}
}

// answerWire is answer for a query whose bytes, raw, are at hand (nil
// when not, as behind miekg/dns's servers): an ECS option whose address
// has more or fewer octets than its source prefix needs gets FORMERR
// (RFC 7871 §6), which only the bytes show (see ecsWireOK).
func (r *Router) answerWire(ctx context.Context, s *snapshot, q *dns.Msg, raw []byte, src netip.Addr) (*dns.Msg, handout) {
	if raw != nil && !ecsWireOK(raw) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeFormatError)
		return m, handout{}
	}
	return r.answer(ctx, s, q, src)
}

// readEDNS reads q's OPT record, if any, and its client subnet option into
// qq. It reports false for a malformed OPT or ECS option.
func (r *Router) readEDNS(q *dns.Msg, qq *query) (*dns.OPT, bool) {
	var opt *dns.OPT
	for _, rr := range q.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok {
			continue
		}
		if opt != nil || o.Hdr.Name != "." {
			return nil, false // RFC 6891 §6.1.1: one OPT, at the root
		}
		opt = o
	}
	if opt == nil {
		return nil, true
	}
	for _, o := range opt.Option {
		e, ok := o.(*dns.EDNS0_SUBNET)
		if !ok {
			continue
		}
		if qq.ecs != nil {
			return nil, false
		}
		a, ok := netip.AddrFromSlice(e.Address)
		var bits int
		switch e.Family {
		case 1:
			bits = 32
			a = a.Unmap()
			ok = ok && a.Is4()
		case 2:
			bits = 128
			ok = ok && a.Is6()
		default:
			ok = false
		}
		if !ok || int(e.SourceNetmask) > bits || e.SourceScope != 0 {
			return nil, false // RFC 7871 §7.1.1
		}
		p, err := a.Prefix(int(e.SourceNetmask))
		if err != nil || p.Addr() != a {
			return nil, false // bits past the source prefix must be zero
		}
		qq.ecs = e
		if e.SourceNetmask > 0 {
			qq.client = a
		}
	}
	return opt, true
}

// clientKey masks the client's address to the subnet answers depend on:
// its /24 (IPv4) or /56 (IPv6), or the ECS source prefix when shorter. It
// returns that subnet's address, which is what is located, and a hash of
// it, which breaks ties between edges of equal rank.
func clientKey(client netip.Addr, ecs *dns.EDNS0_SUBNET) (netip.Addr, uint64) {
	if !client.IsValid() {
		return client, 0
	}
	bits := 24
	if client.Is6() {
		bits = 56
	}
	if ecs != nil && ecs.SourceNetmask > 0 {
		bits = min(bits, int(ecs.SourceNetmask))
	}
	p, err := client.Prefix(bits)
	if err != nil {
		return client, 0
	}
	b := p.Addr().As16()
	var k uint64 = 14695981039346656037
	for _, x := range b {
		k = (k ^ uint64(x)) * 1099511628211
	}
	return p.Addr(), k
}

// cidLabel reports whether label is a CID as subdomain gateways take it,
// a CIDv1 in a case-insensitive encoding that fits a DNS label, and
// returns it in its canonical form.
func cidLabel(label string) (string, bool) {
	c, err := cid.Decode(label)
	if err != nil || c.Version() != 1 {
		return "", false
	}
	return c.String(), true
}

// ipnsLabel reports whether label is an IPNS name as subdomain gateways
// take it, a CIDv1 of the libp2p-key codec in a case-insensitive encoding
// (k51… in base36, or base32), and returns the key's peer ID.
func ipnsLabel(label string) (peer.ID, bool) {
	c, err := cid.Decode(label)
	if err != nil || c.Version() != 1 || c.Type() != cid.Libp2pKey {
		return "", false
	}
	id, err := peer.FromCid(c)
	if err != nil {
		return "", false
	}
	return id, true
}

// nsAddr returns the address of name server label ("ns1", "ns2", …).
func (r *Router) nsAddr(label string) (netip.Addr, bool) {
	n, ok := strings.CutPrefix(label, "ns")
	if !ok || n == "" || n[0] == '0' {
		return netip.Addr{}, false
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 1 || i > len(r.cfg.NSAddrs) {
		return netip.Addr{}, false
	}
	return r.cfg.NSAddrs[i-1], true
}

// hdr is the header of an answer record.
func (r *Router) hdr(owner string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: uint32(r.cfg.TTL / time.Second)}
}

// soa is the zone's SOA record; its minimum is the answer TTL, which is
// also how long resolvers cache negative answers.
func (r *Router) soa(s *snapshot) *dns.SOA {
	h := r.hdr(r.cfg.Zone, dns.TypeSOA)
	return &dns.SOA{Hdr: h, Ns: "ns1." + r.cfg.Zone, Mbox: "hostmaster." + r.cfg.Zone,
		Serial: s.serial, Refresh: 3600, Retry: 600, Expire: 86400 * 14, Minttl: h.Ttl}
}

// nodata makes m a NOERROR answer without records (the name exists, the
// type does not).
func (r *Router) nodata(m *dns.Msg, s *snapshot) {
	m.Ns = append(m.Ns, r.soa(s))
}

// apex answers at the zone apex: SOA, NS (with glue) and the name servers'
// addresses.
func (r *Router) apex(m *dns.Msg, s *snapshot, owner string, t uint16) {
	switch t {
	case dns.TypeSOA:
		soa := r.soa(s)
		soa.Hdr.Name = owner
		m.Answer = append(m.Answer, soa)
	case dns.TypeNS:
		for i, a := range r.cfg.NSAddrs {
			ns := "ns" + strconv.Itoa(i+1) + "." + r.cfg.Zone
			m.Answer = append(m.Answer, &dns.NS{Hdr: r.hdr(owner, dns.TypeNS), Ns: ns})
			m.Extra = append(m.Extra, r.addrRR(ns, a))
		}
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		for _, a := range r.cfg.NSAddrs {
			if t == dns.TypeANY || a.Is4() == (t == dns.TypeA) {
				m.Answer = append(m.Answer, r.addrRR(owner, a))
			}
		}
		if t == dns.TypeANY {
			soa := r.soa(s)
			soa.Hdr.Name = owner
			m.Answer = append(m.Answer, soa)
		}
	}
	if len(m.Answer) == 0 {
		r.nodata(m, s)
	}
}

// addrAnswer answers for a name that has the single address a.
func (r *Router) addrAnswer(m *dns.Msg, s *snapshot, owner string, t uint16, a netip.Addr) {
	if t == dns.TypeANY || a.Is4() == (t == dns.TypeA) && (t == dns.TypeA || t == dns.TypeAAAA) {
		m.Answer = append(m.Answer, r.addrRR(owner, a))
		return
	}
	r.nodata(m, s)
}

// addrRR is an A or AAAA record for a.
func (r *Router) addrRR(owner string, a netip.Addr) dns.RR {
	if a.Is4() {
		ip := a.As4()
		return &dns.A{Hdr: r.hdr(owner, dns.TypeA), A: net.IP(ip[:])}
	}
	ip := a.As16()
	return &dns.AAAA{Hdr: r.hdr(owner, dns.TypeAAAA), AAAA: net.IP(ip[:])}
}

// site answers for a served site: the nearest healthy edges for A and
// AAAA (ANY gets both), NODATA for other types and for a suspended
// publisher's names, SERVFAIL when no edge is healthy at all (so resolvers
// try a sibling router that may know better).
func (r *Router) site(m *dns.Msg, s *snapshot, owner string, qq *query, suspended bool) handout {
	want4 := qq.qtype == dns.TypeA || qq.qtype == dns.TypeANY
	want6 := qq.qtype == dns.TypeAAAA || qq.qtype == dns.TypeANY
	if suspended || (!want4 && !want6) {
		r.nodata(m, s)
		return handout{}
	}
	if len(s.edges) == 0 {
		m.Rcode = dns.RcodeServerFailure
		return handout{}
	}
	loc, located := Location{}, false
	if r.cfg.GeoIP != nil && qq.client.IsValid() {
		loc, located = r.cfg.GeoIP.Lookup(qq.client)
	}
	qq.scope = 24
	if qq.client.Is6() {
		qq.scope = 56
	}
	if qq.ecs != nil {
		qq.scope = min(qq.scope, qq.ecs.SourceNetmask)
	}
	var handed handout
	if want4 {
		for i, e := range rank(s.edges, loc, located, qq.tie, false, r.cfg.Edges) {
			m.Answer = append(m.Answer, r.addrRR(owner, e.v4))
			handed.add(e, i == 0)
		}
	}
	if want6 {
		for i, e := range rank(s.edges, loc, located, qq.tie, true, r.cfg.Edges) {
			m.Answer = append(m.Answer, r.addrRR(owner, e.v6))
			handed.add(e, i == 0)
		}
	}
	if len(m.Answer) == 0 {
		r.nodata(m, s)
	}
	return handed
}

// count counts what a response sent to src handed out: each edge's
// answers, and the demand it sent each edge (see demand.go).
func (r *Router) count(h handout, src netip.Addr, s *snapshot) { r.countSent(h, src, s, nil) }

// countSent is count for a ready response with its mark.
func (r *Router) countSent(h handout, src netip.Addr, s *snapshot, mark *countMark) {
	for _, e := range h.edges {
		e.stats.answers.Add(1)
		e.stats.counter.Inc()
	}
	r.demand.count(r.cfg.now(), h, src, s.edgeAddrs, mark)
}

// add appends e to what h hands out, first in its address family or not.
func (h *handout) add(e *edgeView, first bool) {
	h.edges = append(h.edges, e)
	if first {
		h.first = append(h.first, e)
	}
}

// forSite names the site h answers for and the client unit it counts: the
// ECS address's when the query carries one, else src's.
func (h handout) forSite(site string, src netip.Addr, ecs *dns.EDNS0_SUBNET) handout {
	if len(h.edges) == 0 {
		return h
	}
	h.site, h.unit = site, unitOf(src)
	if ecs != nil && ecs.SourceNetmask > 0 {
		if a, ok := netip.AddrFromSlice(ecs.Address); ok {
			a = a.Unmap()
			bits := min(int(ecs.SourceNetmask), unitOf(a).Bits())
			h.unit, _ = a.Prefix(bits)
			h.ecs = true
		}
	}
	return h
}
