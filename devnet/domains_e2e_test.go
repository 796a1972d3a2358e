package devnet

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// customDomain returns the devnet's custom domain: it has one when the
// notes site is beside its site (../examples/notes), as for every test
// that publishes ../examples/site itself.
func customDomain(t *testing.T, info Info) CustomDomain {
	t.Helper()
	if len(info.CustomDomains) != 1 {
		t.Fatalf("devnet.json lists %d custom domains, want 1 (is examples/notes beside the site?)", len(info.CustomDomains))
	}
	return info.CustomDomains[0]
}

// resolveCNAME asks the devnet's resolver at addr for host's CNAME
// target.
func resolveCNAME(t *testing.T, addr, host string) string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(host), dns.TypeCNAME)
	r, _, err := (&dns.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatalf("CNAME of %s at %s: %v", host, addr, err)
	}
	for _, rr := range r.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			return strings.TrimSuffix(c.Target, ".")
		}
	}
	t.Fatalf("%s has no CNAME at %s: %v", host, addr, r)
	return ""
}

// waitCert waits until a TLS handshake with addr for host verifies
// against roots: the edge obtained its certificate for host on demand
// (the first handshakes wait for the order, or fail while it is retried).
func waitCert(t *testing.T, addr, host string, roots *x509.CertPool, within time.Duration) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 60 * time.Second}, "tcp", addr, &tls.Config{ServerName: host, RootCAs: roots})
		if err == nil {
			defer c.Close()
			return c.ConnectionState().PeerCertificates[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s at %s within %s: %v", host, addr, within, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// pebbleOrders counts the orders pebble's log shows ("Added order"), or
// with name, the validations of a challenge for name (pebble's order
// lines do not name the identifiers; with PEBBLE_AUTHZREUSE=0 every order
// for a name validates it anew).
func pebbleOrders(t *testing.T, log, name string) int {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if name == "" && strings.Contains(l, "Added order") ||
			name != "" && strings.Contains(l, "Pulled a task") && strings.Contains(l, `Value:"`+name+`"`) {
			n++
		}
	}
	return n
}

// permissionResults reads an edge's topcdn_edge_tls_permission_total by
// result from its /metrics (on its plain-HTTP URL).
func permissionResults(t *testing.T, edgeURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(edgeURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s/metrics: %v", edgeURL, err)
	}
	out := map[string]float64{}
	for _, m := range mfs["topcdn_edge_tls_permission_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "result" {
				out[lp.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// testCustomDomain checks the devnet's custom domain at every edge: each
// obtains a certificate of its own for it, on demand, from the devnet's
// CA; then bad.example.test (its DNSLink names an unpublished key) and a
// flood of handshakes with made-up names cause no new order at the CA,
// and the edges count bad.example.test as unpublished.
func testCustomDomain(t *testing.T, info Info) {
	roots, err := LoadCACert(info.CACert)
	if err != nil {
		t.Fatal(err)
	}
	d := customDomain(t, info)
	_, port, _ := net.SplitHostPort(hostPort(t, d.URL))
	t.Run("each edge gets its own certificate for the custom domain", func(t *testing.T) {
		keys := map[string]string{}
		for _, e := range info.Edges {
			ip, _, _ := net.SplitHostPort(hostPort(t, e.HTTPSURL))
			leaf := waitCert(t, net.JoinHostPort(ip, port), d.Host, roots, 90*time.Second)
			if err := leaf.VerifyHostname(d.Host); err != nil {
				t.Fatal(err)
			}
			spki := string(leaf.RawSubjectPublicKeyInfo)
			if other, ok := keys[spki]; ok {
				t.Errorf("the edges at %s and %s hold the same key for %s", other, e.HTTPSURL, d.Host)
			}
			keys[spki] = e.HTTPSURL
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
				DialContext: dialTo(net.JoinHostPort(ip, port))}
			resp, body := get(t, &http.Client{Transport: tr}, d.URL)
			tr.CloseIdleConnections()
			if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" || !strings.Contains(body, "Field notes") {
				t.Fatalf("%s through %s: %s %s, body %.200q", d.URL, ip, resp.Proto, resp.Status, body)
			}
		}
		if got := pebbleOrders(t, info.CA.Log, d.Host); got < len(info.Edges) {
			t.Errorf("pebble logged %d validations for %s, want one per edge at least", got, d.Host)
		}
	})

	t.Run("bad.example.test and a random-SNI flood order nothing", func(t *testing.T) {
		time.Sleep(3 * time.Second) // let orders under way (renewals, retries) show in the log
		before := pebbleOrders(t, info.CA.Log, "")
		e := info.Edges[0]
		ip, _, _ := net.SplitHostPort(hostPort(t, e.HTTPSURL))
		addr := net.JoinHostPort(ip, port)
		handshake := func(name string) error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
			if err == nil {
				c.Close()
			}
			return err
		}
		unpublished := permissionResults(t, e.URL)["unpublished"]
		if err := handshake(badDomainHost); err == nil {
			t.Fatalf("a certificate for %s", badDomainHost)
		}
		if got := permissionResults(t, e.URL)["unpublished"]; got != unpublished+1 {
			t.Fatalf("unpublished counted %v, was %v: want one more for %s", got, unpublished, badDomainHost)
		}
		results := permissionResults(t, e.URL)
		sum := func(m map[string]float64) (s float64) {
			for _, v := range m {
				s += v
			}
			return s
		}
		const n = 500
		for i := range n {
			if err := handshake(fmt.Sprintf("r%x.%s", rand.Uint64(), []string{"example.test", "example.org", "x.cdn.test", "ipfs.cdn.test.example"}[i%4])); err == nil {
				t.Fatal("a certificate for a made-up name")
			}
		}
		after := permissionResults(t, e.URL)
		if got := sum(after) - sum(results); got != n {
			t.Errorf("the flood counted %v permission checks, want %d (one per handshake): %v", got, n, after)
		}
		time.Sleep(3 * time.Second)
		if got := pebbleOrders(t, info.CA.Log, ""); got != before {
			t.Fatalf("pebble logged %d new orders", got-before)
		}
		t.Logf("permission results at %s: %v", e.URL, after)
	})
}
