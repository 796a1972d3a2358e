package devnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// exampleZone is the publisher's zone the devnet's resolver serves, the
// stand-in for a publisher's domain on the internet.
const exampleZone = "example.test."

// maxChase bounds the CNAMEs the resolver follows for one question.
const maxChase = 8

// localZone is a zone the resolver is authoritative for, read from a zone
// file (RFC 1035 master file) and read again when its modification time
// changes, so that a test (or a user) can edit it while the devnet runs.
type localZone struct {
	origin string // fully qualified, lower case
	file   string

	mu    sync.Mutex
	mtime time.Time
	size  int64
	rrs   map[string][]dns.RR // owner name, lower case → records
	soa   *dns.SOA
}

// load returns the zone's records and SOA, reading the file again if it
// changed since the last read.
func (z *localZone) load() (map[string][]dns.RR, *dns.SOA, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	st, err := os.Stat(z.file)
	if err != nil {
		return nil, nil, fmt.Errorf("devnet: zone %s: %w", z.origin, err)
	}
	if z.rrs != nil && st.ModTime().Equal(z.mtime) && st.Size() == z.size {
		return z.rrs, z.soa, nil
	}
	f, err := os.Open(z.file)
	if err != nil {
		return nil, nil, fmt.Errorf("devnet: zone %s: %w", z.origin, err)
	}
	defer f.Close()
	rrs := map[string][]dns.RR{}
	var soa *dns.SOA
	zp := dns.NewZoneParser(f, z.origin, z.file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		if !dns.IsSubDomain(z.origin, name) {
			return nil, nil, fmt.Errorf("devnet: zone %s: %s is outside it", z.origin, name)
		}
		rrs[name] = append(rrs[name], rr)
		if s, ok := rr.(*dns.SOA); ok && name == z.origin {
			soa = s
		}
	}
	if err := zp.Err(); err != nil {
		return nil, nil, fmt.Errorf("devnet: zone %s: %w", z.origin, err)
	}
	if soa == nil {
		return nil, nil, fmt.Errorf("devnet: zone %s: no SOA at its apex", z.origin)
	}
	z.rrs, z.soa, z.mtime, z.size = rrs, soa, st.ModTime(), st.Size()
	return rrs, soa, nil
}

// lookup answers one question from the zone as its authoritative server
// would: the records of the type asked, else a CNAME at the name (for
// another type), else NODATA or NXDOMAIN with the SOA.
func (z *localZone) lookup(name string, qtype uint16) (answer []dns.RR, rcode int, ns []dns.RR, err error) {
	rrs, soa, err := z.load()
	if err != nil {
		return nil, 0, nil, err
	}
	at, exists := rrs[strings.ToLower(name)]
	for _, rr := range at {
		if t := rr.Header().Rrtype; t == qtype || qtype == dns.TypeANY {
			answer = append(answer, dns.Copy(rr))
		}
	}
	if len(answer) == 0 && qtype != dns.TypeCNAME {
		for _, rr := range at {
			if rr.Header().Rrtype == dns.TypeCNAME {
				answer = append(answer, dns.Copy(rr))
			}
		}
	}
	if len(answer) > 0 {
		return answer, dns.RcodeSuccess, nil, nil
	}
	if !exists {
		// An empty non-terminal (a name only above others) exists too.
		suffix := "." + strings.ToLower(name)
		for owner := range rrs {
			if strings.HasSuffix(owner, suffix) {
				exists = true
				break
			}
		}
	}
	rcode = dns.RcodeSuccess
	if !exists {
		rcode = dns.RcodeNameError
	}
	return nil, rcode, []dns.RR{dns.Copy(soa)}, nil
}

// chase answers q, for a name in the local zone, as a recursive resolver
// would: the local zone's answer, and while it ends in a CNAME, the
// answer for its target, from the local zone or from the router (at most
// maxChase CNAMEs). The rcode and authority are the last name's.
func (rs *resolver) chase(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	qq := q.Question[0]
	m := new(dns.Msg)
	m.SetReply(q)
	name := qq.Name
	for range maxChase + 1 {
		var answer, ns []dns.RR
		var rcode int
		switch {
		case dns.IsSubDomain(rs.local.origin, strings.ToLower(name)):
			var err error
			if answer, rcode, ns, err = rs.local.lookup(name, qq.Qtype); err != nil {
				return nil, err
			}
		case dns.IsSubDomain(rs.zone, strings.ToLower(name)):
			fq := new(dns.Msg)
			fq.SetQuestion(name, qq.Qtype)
			fq.SetEdns0(dns.DefaultMsgSize, false)
			r, err := rs.forward(ctx, fq)
			if err != nil {
				return nil, err
			}
			answer, rcode, ns = r.Answer, r.Rcode, r.Ns
		default:
			return m, nil // a CNAME out of both zones: the chain so far
		}
		m.Answer = append(m.Answer, answer...)
		m.Rcode, m.Ns = rcode, ns
		next := ""
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) && qq.Qtype != dns.TypeCNAME {
				next = c.Target
			}
		}
		if next == "" {
			return m, nil
		}
		name = next
	}
	return nil, errors.New("devnet: resolver: a CNAME chain too long")
}
