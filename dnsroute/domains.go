package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// Custom domains: an edge may have the router set the challenge TXT of a
// publisher's own domain HOST at HOST._acme.ZONE (customdomain's
// ChallengeTarget), where the publisher's _acme-challenge.HOST CNAME
// points, once the domain passes customdomain.Check through
// Config.Resolver and its DNSLink names a key the origin publishes.
const (
	// domainCheckTimeout bounds one customdomain.Check.
	domainCheckTimeout = 5 * time.Second
	// domainOKTTL and domainDenyTTL are how long a check's approval and
	// refusal are kept.
	domainOKTTL   = time.Minute
	domainDenyTTL = 30 * time.Second
	// maxDomainVerdicts bounds the verdicts kept.
	maxDomainVerdicts = 4096
)

// errUnpublished marks a custom domain whose DNSLink names a key the
// origin does not publish (wrapped with dnsrouteapi.ErrChallengeRefused).
var errUnpublished = errors.New("the DNSLink's key is not published")

// domainVerdicts are the custom-domain checks' verdicts, by host.
type domainVerdicts struct {
	mu sync.Mutex
	m  map[string]domainVerdict
}

// domainVerdict is a check's outcome: the key, or the refusal.
type domainVerdict struct {
	key     ipns.Name
	err     error
	expires time.Time
}

// customOwner maps the challenge name _acme-challenge.HOST., HOST a
// custom domain outside the zone, to the owner name of its record,
// HOST._acme.ZONE.: at once for a delete, and for an add once HOST passes
// customdomain.Check (kept a minute; a refusal 30 s), returning the key
// its DNSLink names, which the caller checks is published. The errors
// wrap dnsrouteapi.ErrChallengeRefused (with errOutOfZone, or
// customdomain's ErrNoDNSLink or ErrNoDelegation) or ErrChallengeNotReady
// when the resolver gave no answer.
func (r *Router) customOwner(ctx context.Context, fqdn, op string) (string, ipns.Name, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(fqdn, dnsrouteapi.ChallengePrefix), ".")
	h, err := customdomain.Host(host, r.cfg.Zone)
	if err == nil && r.cfg.Resolver == nil {
		err = errors.New("custom domains are off (the router has no resolver)")
	}
	if err != nil {
		return "", ipns.Name{}, fmt.Errorf("%w: %s: %w (the zone's are %s, and custom domains' _acme-challenge.HOST): %w",
			dnsrouteapi.ErrChallengeRefused, fqdn, errOutOfZone, strings.Join(r.acme.fixed[:], ", "), err)
	}
	owner := customdomain.ChallengeTarget(h, r.cfg.Zone)
	if op == dnsrouteapi.OpDelete {
		return owner, ipns.Name{}, nil
	}
	now := r.cfg.now()
	r.domains.mu.Lock()
	v, ok := r.domains.m[h]
	r.domains.mu.Unlock()
	if !ok || !now.Before(v.expires) {
		cctx, cancel := context.WithTimeout(ctx, domainCheckTimeout)
		link, err := customdomain.Check(cctx, r.cfg.Resolver, h, r.cfg.Zone)
		cancel()
		switch {
		case err == nil:
			v = domainVerdict{key: link.Key, expires: now.Add(domainOKTTL)}
		case errors.Is(err, customdomain.ErrNoDNSLink), errors.Is(err, customdomain.ErrNoDelegation):
			v = domainVerdict{err: err, expires: now.Add(domainDenyTTL)}
		default:
			return "", ipns.Name{}, fmt.Errorf("%w: checking %s: %w", dnsrouteapi.ErrChallengeNotReady, h, err)
		}
		r.domains.keep(h, v, now)
	}
	if v.err != nil {
		return "", ipns.Name{}, fmt.Errorf("%w: %w", dnsrouteapi.ErrChallengeRefused, v.err)
	}
	return owner, v.key, nil
}

// keep keeps v for h, first dropping expired verdicts (all of them if
// none had expired) when the map is full.
func (d *domainVerdicts) keep(h string, v domainVerdict, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = make(map[string]domainVerdict)
	}
	if len(d.m) >= maxDomainVerdicts {
		for k, old := range d.m {
			if !now.Before(old.expires) {
				delete(d.m, k)
			}
		}
		if len(d.m) >= maxDomainVerdicts {
			clear(d.m)
		}
	}
	d.m[h] = v
}

// publishedLocked reports whether the origin publishes a name under key.
// r.mu must be held.
func (r *Router) publishedLocked(key ipns.Name) bool {
	k := key.String()
	for _, e := range r.names {
		if e.ipns == k {
			return true
		}
	}
	return false
}
