package devnet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/identity"
)

// The devnet's custom domain: a second site, published as
// domainSiteName, served under a publisher's own domain, www.example.test,
// whose zone the devnet's resolver serves from a zone file. bad.example.test
// is delegated alike, but its DNSLink names a key nothing is published
// under: no edge may get a certificate for it.
const (
	domainSiteName = "notes"
	domainHost     = "www.example.test"
	badDomainHost  = "bad.example.test"
	// exampleTTL is the TTL of the zone's records: short, so that a record
	// removed from the zone file is gone everywhere within seconds.
	exampleTTL = 5
)

// CustomDomain is a publisher's own domain the devnet serves.
type CustomDomain struct {
	// Host is the domain, e.g. www.example.test.
	Host string `json:"host"`
	// Site is the name of the site it serves (its DNSLink names the
	// site's IPNS key).
	Site string `json:"site"`
	// URL is its https URL on the edges, e.g.
	// https://www.example.test:8443/.
	URL string `json:"url"`
}

// domainSite returns the directory of the custom domain's site, and
// whether the devnet has one: Config.DomainSite, else notes beside Site
// if that is a directory.
func (n *network) domainSite() (string, bool, error) {
	dir, given := n.cfg.DomainSite, n.cfg.DomainSite != ""
	if !given {
		dir = filepath.Join(filepath.Dir(n.cfg.Site), domainSiteName)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if given {
			return "", false, fmt.Errorf("devnet: custom domain site %q is not a directory", dir)
		}
		return "", false, nil
	}
	return dir, true, nil
}

// prepareDomains makes the custom domain's keys (the site's, and the
// unpublished one bad.example.test points at) and writes the zone file
// of example.test, for the resolver to serve.
func (n *network) prepareDomains(context.Context) error {
	if _, ok, err := n.domainSite(); err != nil || !ok {
		return err
	}
	keys := map[string]*identity.Key{}
	for _, k := range []string{domainSiteName, "unpublished"} {
		key, err := identity.LoadOrGenerate(filepath.Join(n.cfg.Dir, "keys", k+".key"))
		if err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		keys[k] = key
	}
	zone := exampleZoneFile(n.cfg.Zone, ipns.NameFromPeer(keys[domainSiteName].ID), ipns.NameFromPeer(keys["unpublished"].ID))
	n.exampleZone = filepath.Join(n.cfg.Dir, "dns", strings.TrimSuffix(exampleZone, ".")+".zone")
	if err := os.WriteFile(n.exampleZone, []byte(zone), 0o644); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	return nil
}

// exampleZoneFile is the zone of example.test as its publisher would set
// it at a DNS host: www points at the network, with its DNSLink and its
// challenge delegation; bad is the same with a DNSLink to a key nothing is
// published under.
func exampleZoneFile(zone string, site, unpublished ipns.Name) string {
	zone = strings.Trim(zone, ".")
	return strings.NewReplacer("ZONE", zone, "SITEKEY", site.String(), "BADKEY", unpublished.String(),
		"SITE", domainSiteName, "RRTTL", strconv.Itoa(exampleTTL), "SERIAL", strconv.FormatInt(time.Now().Unix(), 10),
		"WWWTARGET", customdomain.ChallengeTarget(domainHost, zone), "BADTARGET", customdomain.ChallengeTarget(badDomainHost, zone)).Replace(
		`; example.test: a publisher's own domain, served by the devnet's resolver.
; Edit it while the devnet runs (the resolver reads it again when it changes):
; removing _dnslink.www stops new certificates for www.example.test.
$ORIGIN example.test.
$TTL RRTTL
@                     IN SOA   ns1.example.test. hostmaster.example.test. SERIAL 60 60 600 RRTTL
@                     IN NS    ns1.example.test.
ns1                   IN A     127.0.0.1

; www.example.test serves the site SITE.
www                   IN CNAME SITE.ZONE.
_dnslink.www          IN TXT   "dnslink=/ipns/SITEKEY"
_acme-challenge.www   IN CNAME WWWTARGET

; bad.example.test: delegated, but its DNSLink names a key nothing is published under.
bad                   IN CNAME SITE.ZONE.
_dnslink.bad          IN TXT   "dnslink=/ipns/BADKEY"
_acme-challenge.bad   IN CNAME BADTARGET
`)
}

// publishDomains funds the custom domain's site key, the first time,
// publishes its site and records the domain in devnet.json's sites and
// custom_domains.
func (n *network) publishDomains(ctx context.Context) error {
	dir, ok, err := n.domainSite()
	if err != nil || !ok {
		return err
	}
	keyFile := filepath.Join(n.cfg.Dir, "keys", domainSiteName+".key")
	key, err := identity.Load(keyFile)
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	marker := filepath.Join(n.cfg.Dir, "billing", "funded-"+domainSiteName)
	if _, err := os.Stat(marker); err != nil {
		cmd := exec.CommandContext(ctx, n.cfg.Bin, "billing", "deposit", "--billing", n.at.billingURL,
			"--account", key.ID.String(), "--amount", strconv.FormatInt(n.cfg.Deposit, 10),
			"--key", filepath.Join(n.cfg.Dir, "keys", "billing.key"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("devnet: funding %s's key: %w: %s", domainSiteName, err, out)
		}
		if err := os.WriteFile(marker, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
	}
	site, err := n.publishSite(ctx, n.at.originList, keyFile, dir, domainSiteName)
	if err != nil {
		return err
	}
	site.URL = "https://" + n.addr(site.Host, httpsPort) + "/"
	n.info.Sites = append(n.info.Sites, site)
	n.info.CustomDomains = []CustomDomain{{Host: domainHost, Site: domainSiteName, URL: "https://" + n.addr(domainHost, httpsPort) + "/"}}
	return n.waitRouted(ctx, n.at.dns, site.Host)
}

// printDomains prints the custom domains and how to reach them.
func (n *network) printDomains() {
	if len(n.info.CustomDomains) == 0 {
		return
	}
	d := n.info.CustomDomains[0]
	var target string
	for _, s := range n.info.Sites {
		if s.Name == d.Site {
			target = s.Host
		}
	}
	rhost, rport, _ := net.SplitHostPort(n.info.DNS.Resolver)
	dhost, dport, _ := net.SplitHostPort(n.info.DNS.Addr)
	_, httpsPort, _ := net.SplitHostPort(strings.TrimPrefix(n.info.Edges[0].HTTPSURL, "https://"))
	dig := fmt.Sprintf("$(dig @%s -p %s %s A +short | head -1)", dhost, dport, target)
	fmt.Fprint(n.cfg.Out, strings.NewReplacer("HOST", d.Host, "SITE", d.Site, "TARGET", target, "ZONEFILE", n.exampleZone,
		"RHOST", rhost, "RPORT", rport, "HTTPSPORT", httpsPort, "DIG", dig, "URL", d.URL, "CACERT", n.info.CACert,
		"BAD", badDomainHost).Replace(`
Custom domain: HOST serves SITE, with no edge configured for it. Its zone (ZONEFILE,
served by the devnet's resolver) points it at TARGET, links it to SITE's key and delegates
its _acme-challenge to the router; each edge gets its own certificate on demand:
  dig @RHOST -p RPORT HOST A                           # CNAME TARGET, then the router's edges
  dig @RHOST -p RPORT _dnslink.HOST TXT +short
  curl --cacert CACERT --resolve HOST:HTTPSPORT:DIG URL
  chromium --host-resolver-rules="MAP HOST DIG" URL
BAD is delegated too, but links to a key nothing is published under: no certificate.
`))
}
