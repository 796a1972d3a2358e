package customdomain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/miekg/dns"
)

// Errors of Check; each says why a host is not a custom domain the
// network serves. Other errors (a resolver that does not answer, SERVFAIL)
// say nothing about the host and should not be cached for long.
var (
	// ErrBadHost marks a host that is not a domain name a publisher can
	// own: not LDH labels, fewer than two labels, longer than 253 bytes
	// (with its challenge target), or an IP address.
	ErrBadHost = errors.New("not a host name")
	// ErrInZone marks a host in the network's own zone (or the zone
	// itself): the router's names, covered by the edges' wildcards.
	ErrInZone = errors.New("in the network's zone")
	// ErrNoDNSLink marks a host whose _dnslink TXT does not hold exactly
	// one dnslink=/ipns/KEY, KEY an IPNS name (no /ipfs/ paths, no
	// DNSLink chains).
	ErrNoDNSLink = errors.New("no DNSLink to an IPNS name")
	// ErrNoDelegation marks a host whose _acme-challenge name is not a
	// CNAME to its ChallengeTarget.
	ErrNoDelegation = errors.New("challenge name not delegated to the network")
)

// Limits of a host and of DNS answers.
const (
	maxName     = 253 // bytes, without the trailing dot (RFC 1035 §2.3.4)
	maxLabel    = 63
	maxCNAMEs   = 8 // CNAMEs followed within one answer
	acmeLabel   = "_acme"
	dnslinkPfx  = "_dnslink."
	challPrefix = "_acme-challenge."
)

// Link is a custom domain's DNSLink: the IPNS key it names, and how long
// the answer may be kept (the smallest TTL of the TXT and the CNAMEs that
// led to it).
type Link struct {
	// Key is the IPNS name the host's DNSLink points at.
	Key ipns.Name
	// TTL is the answer's TTL.
	TTL time.Duration
}

// Resolver asks real DNS, recursion desired. Exchange is miekg/dns's
// (dns.Client.ExchangeContext without the server), so tests pass a fake.
type Resolver interface {
	// Exchange sends m and returns the answer; an error means no answer
	// (a timeout, a refused connection), not a negative one.
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// Host checks that host is a name a publisher can point at the network,
// outside zone, and returns it in lower case without a trailing dot. It
// returns an error wrapping ErrBadHost or ErrInZone otherwise.
func Host(host, zone string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	z := strings.ToLower(strings.Trim(zone, "."))
	if _, err := netip.ParseAddr(h); err == nil {
		return "", fmt.Errorf("customdomain: %q: %w: an IP address", quote(host), ErrBadHost)
	}
	if len(h) > maxName || len(ChallengeTarget(h, z))-1 > maxName {
		return "", fmt.Errorf("customdomain: %s: %w: too long", quote(host), ErrBadHost)
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("customdomain: %s: %w: one label", quote(host), ErrBadHost)
	}
	for _, l := range labels {
		if !ldh(l) {
			return "", fmt.Errorf("customdomain: %s: %w: label %s", quote(host), ErrBadHost, quote(l))
		}
	}
	if z != "" && (h == z || strings.HasSuffix(h, "."+z)) {
		return "", fmt.Errorf("customdomain: %s: %w %s", h, ErrInZone, z)
	}
	return h, nil
}

// ldh reports whether l is a host name label: 1 to 63 letters, digits
// and hyphens, neither first nor last a hyphen.
func ldh(l string) bool {
	if l == "" || len(l) > maxLabel || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := range len(l) {
		b := l[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
			return false
		}
	}
	return true
}

// ChallengeTarget is where host's _acme-challenge name must point, by
// CNAME: HOST._acme.ZONE., fully qualified, in lower case. The router
// answers the challenge TXT there. _acme is underscored, so no site name
// can take it.
func ChallengeTarget(host, zone string) string {
	return strings.ToLower(strings.TrimSuffix(host, ".")) + "." + acmeLabel + "." + strings.ToLower(strings.Trim(zone, ".")) + "."
}

// Check tells whether host is a custom domain the network may serve and
// certify: a host name outside zone (Host), whose DNSLink, asked of r,
// names an IPNS key (LookupDNSLink), and whose _acme-challenge name is a
// CNAME to ChallengeTarget(host, zone). It asks the cheapest questions
// first and stops at the first that fails, with an error wrapping
// ErrBadHost, ErrInZone, ErrNoDNSLink or ErrNoDelegation, or another error
// when r gave no usable answer. Whether the key is published is the
// caller's question.
func Check(ctx context.Context, r Resolver, host, zone string) (Link, error) {
	h, err := Host(host, zone)
	if err != nil {
		return Link{}, err
	}
	link, err := LookupDNSLink(ctx, r, h)
	if err != nil {
		return Link{}, err
	}
	if err := checkDelegation(ctx, r, h, zone); err != nil {
		return Link{}, err
	}
	return link, nil
}

// LookupDNSLink asks r for _dnslink.HOST TXT (following CNAMEs in the
// answer) and returns the IPNS key of its one dnslink= value. It returns
// an error wrapping ErrNoDNSLink when there is none, several, or one that
// is not /ipns/ of an IPNS name.
func LookupDNSLink(ctx context.Context, r Resolver, host string) (Link, error) {
	qname := dns.Fqdn(dnslinkPfx + strings.ToLower(strings.TrimSuffix(host, ".")))
	ans, err := ask(ctx, r, qname, dns.TypeTXT)
	if err != nil {
		return Link{}, err
	}
	if ans.Rcode == dns.RcodeNameError {
		return Link{}, fmt.Errorf("customdomain: %s: %w: %s does not exist", host, ErrNoDNSLink, qname)
	}
	owner, ttl, err := follow(ans.Answer, qname)
	if err != nil {
		return Link{}, fmt.Errorf("customdomain: %s: %w: %w", host, ErrNoDNSLink, err)
	}
	var txts []string
	for _, rr := range ans.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, owner) {
			txts = append(txts, strings.Join(t.Txt, ""))
			ttl = min(ttl, t.Hdr.Ttl)
		}
	}
	key, err := ParseDNSLink(txts)
	if err != nil {
		return Link{}, fmt.Errorf("customdomain: %s: %w", host, err)
	}
	return Link{Key: key, TTL: time.Duration(ttl) * time.Second}, nil
}

// ParseDNSLink returns the IPNS key of the one dnslink= value among the
// TXT strings txts (other TXT values are ignored, as DNSLink says). It
// returns an error wrapping ErrNoDNSLink when there is no dnslink= value,
// more than one, or one that is not /ipns/ of an IPNS name.
func ParseDNSLink(txts []string) (ipns.Name, error) {
	var links []string
	for _, t := range txts {
		if v, ok := strings.CutPrefix(t, "dnslink="); ok {
			links = append(links, v)
		}
	}
	switch len(links) {
	case 0:
		return ipns.Name{}, fmt.Errorf("%w: no dnslink= TXT", ErrNoDNSLink)
	case 1:
	default:
		return ipns.Name{}, fmt.Errorf("%w: %d dnslink= TXT values, want one", ErrNoDNSLink, len(links))
	}
	rest, ok := strings.CutPrefix(links[0], "/ipns/")
	if !ok {
		return ipns.Name{}, fmt.Errorf("%w: %s: want /ipns/KEY", ErrNoDNSLink, quote(links[0]))
	}
	key, err := ipns.NameFromString(strings.TrimSuffix(rest, "/"))
	if err != nil {
		return ipns.Name{}, fmt.Errorf("%w: %s is not an IPNS name (DNSLink chains are not followed): %w", ErrNoDNSLink, quote(rest), err)
	}
	return key, nil
}

// checkDelegation asks r for _acme-challenge.HOST CNAME and checks it
// points at ChallengeTarget(host, zone).
func checkDelegation(ctx context.Context, r Resolver, host, zone string) error {
	qname := dns.Fqdn(challPrefix + host)
	want := ChallengeTarget(host, zone)
	ans, err := ask(ctx, r, qname, dns.TypeCNAME)
	if err != nil {
		return err
	}
	for _, rr := range ans.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, qname) {
			if strings.EqualFold(dns.Fqdn(c.Target), want) {
				return nil
			}
			return fmt.Errorf("customdomain: %s: %w: %s is a CNAME to %s, want %s", host, ErrNoDelegation, qname, c.Target, want)
		}
	}
	return fmt.Errorf("customdomain: %s: %w: %s has no CNAME (want one to %s)", host, ErrNoDelegation, qname, want)
}

// ask sends one question to r and returns the answer, which must be
// NOERROR or NXDOMAIN.
func ask(ctx context.Context, r Resolver, qname string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(dns.DefaultMsgSize, false)
	ans, err := r.Exchange(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("customdomain: %s %s: %w", qname, dns.TypeToString[qtype], err)
	}
	if ans == nil {
		return nil, fmt.Errorf("customdomain: %s %s: no answer", qname, dns.TypeToString[qtype])
	}
	if ans.Rcode != dns.RcodeSuccess && ans.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("customdomain: %s %s: %s", qname, dns.TypeToString[qtype], dns.RcodeToString[ans.Rcode])
	}
	return ans, nil
}

// follow follows the CNAMEs in rrs from name and returns the name they
// end at and the smallest TTL on the way (1 day when there is none).
func follow(rrs []dns.RR, name string) (string, uint32, error) {
	ttl := uint32(86400)
	for range maxCNAMEs + 1 {
		next := ""
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = dns.Fqdn(c.Target)
				ttl = min(ttl, c.Hdr.Ttl)
				break
			}
		}
		if next == "" {
			return name, ttl, nil
		}
		name = next
	}
	return "", 0, fmt.Errorf("more than %d CNAMEs", maxCNAMEs)
}

// quote quotes at most 64 bytes of s, for errors about what a client
// sent.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}
