package dnsroute

import (
	"context"
	"fmt"
	"strings"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// ChallengeProvider sets the router's own ACME challenge records, for a
// certificate of its own (its HTTPS API and DNS-over-HTTPS): a libdns
// provider (RecordAppender and RecordDeleter, certmagic's DNSProvider)
// writing straight into the challenge table. Unlike an edge, the router
// may set a TXT at any _acme-challenge name in its zone, and is bound only
// by the per-name and total limits. Its records expire like an edge's.
type ChallengeProvider struct {
	r *Router
}

// Challenges returns the provider of the router's own challenge records.
func (r *Router) Challenges() *ChallengeProvider {
	return &ChallengeProvider{r: r}
}

// AppendRecords sets each TXT record of recs, named relative to zone (or
// fully qualified); it returns them as libdns.TXT. Records of another
// type, outside the zone or not at an _acme-challenge name are an error,
// and nothing after them is set.
func (p *ChallengeProvider) AppendRecords(_ context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		fqdn, err := p.name(zone, rr)
		if err != nil {
			return out, err
		}
		if err := p.add(fqdn, rr.Data); err != nil {
			return out, err
		}
		out = append(out, libdns.TXT{Name: rr.Name, TTL: challengeTTL, Text: rr.Data})
	}
	return out, nil
}

// DeleteRecords deletes the router's TXT records matching recs (every
// value at a name when a record's value is empty) and returns those that
// were there.
func (p *ChallengeProvider) DeleteRecords(_ context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var out []libdns.Record
	for _, rec := range recs {
		rr := rec.RR()
		fqdn, err := p.name(zone, rr)
		if err != nil {
			return out, err
		}
		p.r.mu.Lock()
		removed := p.r.acme.remove(fqdn, routerPeer, rr.Data)
		if removed {
			p.r.rebuildLocked()
		}
		p.r.mu.Unlock()
		if removed {
			out = append(out, libdns.TXT{Name: rr.Name, TTL: challengeTTL, Text: rr.Data})
		}
	}
	return out, nil
}

// name returns the owner name of rr in zone, lower case and fully
// qualified, if the router may set it.
func (p *ChallengeProvider) name(zone string, rr libdns.RR) (string, error) {
	if rr.Type != "TXT" {
		return "", fmt.Errorf("dnsroute: challenges: a %s record: only TXT", rr.Type)
	}
	fqdn := strings.ToLower(dns.Fqdn(libdns.AbsoluteName(rr.Name, dns.Fqdn(zone))))
	if !strings.HasPrefix(fqdn, dnsrouteapi.ChallengePrefix) || !dns.IsSubDomain(p.r.cfg.Zone, fqdn) {
		return "", fmt.Errorf("dnsroute: challenges: %s: %w: want %sNAME.%s", fqdn, errOutOfZone, dnsrouteapi.ChallengePrefix, p.r.cfg.Zone)
	}
	if _, ok := dns.IsDomainName(fqdn); !ok {
		return "", fmt.Errorf("dnsroute: challenges: %q is not a domain name", fqdn)
	}
	return fqdn, nil
}

// add sets value at fqdn for the router.
func (p *ChallengeProvider) add(fqdn, value string) error {
	if err := dnsrouteapi.CheckChallengeValue(value); err != nil {
		return fmt.Errorf("dnsroute: challenges: %s: %w", fqdn, err)
	}
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	added, err := r.acme.add(fqdn, routerPeer, value, r.cfg.now())
	if err != nil {
		return fmt.Errorf("dnsroute: challenges: %w", err)
	}
	if added {
		r.rebuildLocked()
	}
	return nil
}

// Interface guards.
var (
	_ libdns.RecordAppender = (*ChallengeProvider)(nil)
	_ libdns.RecordDeleter  = (*ChallengeProvider)(nil)
)
