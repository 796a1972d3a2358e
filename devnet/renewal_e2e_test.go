package devnet

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
)

// TestDevnetCertRenewal runs a devnet whose CA issues 90-second
// certificates: an edge's certificate for the zone's wildcard is renewed
// (a new serial, from the same CA) before it expires, and so is the custom
// domain's, on demand, at a handshake. Then the publisher
// removes _dnslink.www from its zone: the edge refuses to renew the custom
// domain's certificate (its permission counts no_dnslink), the CA
// validates nothing more for it, and handshakes for it fail from then on.
func TestDevnetCertRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole network")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	offset := devnetOffset()
	const lifetime = 90 * time.Second
	n := startDevnet(t, bin, dir, offset, "--peers", "4", "--cert-lifetime", lifetime.String())
	info := n.info
	roots, err := LoadCACert(info.CACert)
	if err != nil {
		t.Fatal(err)
	}
	e := info.Edges[0]
	site, d := info.Sites[0], customDomain(t, info)
	ip, _, _ := net.SplitHostPort(hostPort(t, e.HTTPSURL))
	_, port, _ := net.SplitHostPort(hostPort(t, d.URL))
	addr := net.JoinHostPort(ip, port)

	t.Run("the wildcard's certificate is renewed before it expires", func(t *testing.T) {
		first := peerCert(t, hostPort(t, e.HTTPSURL), site.Host, roots)
		if got := first.NotAfter.Sub(first.NotBefore); got > lifetime+time.Minute {
			t.Fatalf("the certificate is valid for %s, want about %s", got, lifetime)
		}
		deadline := first.NotAfter
		for {
			c := peerCert(t, hostPort(t, e.HTTPSURL), site.Host, roots) // verified: never an expired one
			if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
				t.Logf("serial %x (until %s) renewed as %x (until %s)", first.SerialNumber, first.NotAfter.Format(time.TimeOnly),
					c.SerialNumber, c.NotAfter.Format(time.TimeOnly))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("serial %x not renewed before it expired at %s", first.SerialNumber, first.NotAfter)
			}
			time.Sleep(2 * time.Second)
		}
	})

	t.Run("the custom domain's certificate is renewed while it is published", func(t *testing.T) {
		// On-demand certificates are renewed at a handshake once due
		// (certmagic asks the permission again then).
		first := waitCert(t, addr, d.Host, roots, 90*time.Second)
		for {
			c := waitCert(t, addr, d.Host, roots, 10*time.Second)
			if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
				t.Logf("%s: serial %x renewed as %x", d.Host, first.SerialNumber, c.SerialNumber)
				break
			}
			if time.Now().After(first.NotAfter) {
				t.Fatalf("%s: serial %x not renewed before it expired at %s", d.Host, first.SerialNumber, first.NotAfter)
			}
			time.Sleep(2 * time.Second)
		}
	})

	t.Run("a custom domain removed by its publisher gets no new certificate", func(t *testing.T) {
		waitCert(t, addr, d.Host, roots, 90*time.Second)
		b, err := os.ReadFile(exampleZonePath(dir))
		if err != nil {
			t.Fatal(err)
		}
		zone := string(b)
		var kept []string
		for _, l := range strings.Split(zone, "\n") {
			if !strings.HasPrefix(l, "_dnslink.www ") {
				kept = append(kept, l)
			}
		}
		if len(kept) == len(strings.Split(zone, "\n")) {
			t.Fatal("the zone file has no _dnslink.www line")
		}
		if err := os.WriteFile(exampleZonePath(dir), []byte(strings.Join(kept, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		// Past the records' TTL and the edge's approval (at most the
		// TTL), no check can see the DNSLink any more.
		time.Sleep(time.Duration(exampleTTL+1) * time.Second)
		validations := pebbleOrders(t, info.CA.Log, d.Host)
		refused := permissionResults(t, e.URL)
		// Handshakes as browsers would make them: the certificate is
		// served until it is due for renewal, then the renewal asks the
		// permission, which refuses; the certificate is dropped.
		deadline := time.Now().Add(lifetime + 30*time.Second)
		for {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: d.Host, RootCAs: roots})
			if err != nil {
				t.Logf("handshake for %s refused: %v", d.Host, err)
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s still gets a certificate %s after its DNSLink was removed", d.Host, lifetime+30*time.Second)
			}
			time.Sleep(2 * time.Second)
		}
		after := permissionResults(t, e.URL)
		if after["no_dnslink"]+after["cached_deny"] <= refused["no_dnslink"]+refused["cached_deny"] {
			t.Errorf("the edge's permission did not refuse %s: before %v, after %v", d.Host, refused, after)
		}
		if got := pebbleOrders(t, info.CA.Log, d.Host); got != validations {
			t.Errorf("the CA validated %s %d more times after its DNSLink was removed", d.Host, got-validations)
		}
		t.Logf("permission results at %s: %v", e.URL, after)
	})
}

// exampleZonePath is the example.test zone file of the devnet in dir.
func exampleZonePath(dir string) string {
	return filepath.Join(dir, "dns", strings.TrimSuffix(exampleZone, ".")+".zone")
}
