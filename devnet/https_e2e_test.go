package devnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/testkit"
)

// TestDevnetHTTPS runs a devnet whose edges redirect plain HTTP and
// checks what HTTPS gives: each edge holds its own certificate for the
// zone's names (three edges, three public keys), issued by the devnet's
// CA, and the router verified it before handing the edge out; the site
// loads over HTTP/2 and HTTP/3; plain HTTP by name is
// redirected, while the probes' ways in stay on HTTP; and the router
// refuses a challenge record whose signature is not its peer's.
func TestDevnetHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole network")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	offset := 10000 + rand.IntN(14000)
	// 4 storage peers, the fewest: what is tested here is the edges'
	// HTTPS, not where their blocks come from.
	n := startDevnet(t, bin, dir, offset, "--peers", "4", "--no-https-redirect=false")
	info := n.info
	site := info.Sites[0]
	roots, err := LoadCACert(info.CACert)
	if err != nil {
		t.Fatal(err)
	}
	const want = "Welcome to topcdn"

	t.Run("three edges, three keys, one CA", func(t *testing.T) {
		keys := map[string]string{} // SPKI → edge
		for _, e := range info.Edges {
			leaf := peerCert(t, hostPort(t, e.HTTPSURL), site.Host, roots)
			if err := leaf.VerifyHostname("x." + info.DNS.Zone); err != nil {
				t.Errorf("%s: the certificate for %s is not the zone's wildcard: %v", e.HTTPSURL, site.Host, err)
			}
			spki := hex.EncodeToString(leaf.RawSubjectPublicKeyInfo)
			if other, ok := keys[spki]; ok {
				t.Errorf("the edges at %s and %s hold the same key", other, e.HTTPSURL)
			}
			keys[spki] = e.HTTPSURL
		}
	})

	t.Run("the router hands out edges whose HTTPS it verified", func(t *testing.T) {
		// It probes once per heartbeat (2 s): the edges' last
		// certificates may have come after its last probe.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var list []dnsrouteapi.EdgeInfo
			testkit.GetJSON(t, info.DNS.API, &list)
			var failing []string
			for _, e := range list {
				if e.HTTPSURL == "" || e.HTTPSError != "" || !e.Healthy {
					failing = append(failing, fmt.Sprintf("%s: https_url %q, https_error %q, healthy %v (%s%s)",
						e.URL, e.HTTPSURL, e.HTTPSError, e.Healthy, e.ProbeError, e.ContentError))
				}
			}
			if len(list) == len(info.Edges) && len(failing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 10 s the router lists %d edges, these not verified:\n%s", len(list), strings.Join(failing, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("HTTP/2 with HTTP/3 advertised", func(t *testing.T) {
		for _, e := range info.Edges {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
				DialContext: dialTo(hostPort(t, e.HTTPSURL))}
			resp, body := get(t, &http.Client{Transport: tr}, site.URL)
			tr.CloseIdleConnections()
			if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" || !strings.Contains(body, want) {
				t.Fatalf("%s through %s: %s %s, body %.200q", site.URL, e.HTTPSURL, resp.Proto, resp.Status, body)
			}
			_, port, _ := net.SplitHostPort(hostPort(t, e.HTTPSURL))
			if alt := resp.Header.Get("Alt-Svc"); !strings.Contains(alt, `h3=":`+port+`"`) {
				t.Errorf("%s: Alt-Svc %q advertises no HTTP/3 on the HTTPS port", e.HTTPSURL, alt)
			}
		}
	})

	t.Run("HTTP/3", func(t *testing.T) {
		for _, e := range info.Edges {
			udp := hostPort(t, e.HTTPSURL)
			tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
				Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
					return quic.DialAddrEarly(ctx, udp, tlsCfg, cfg)
				}}
			resp, body := get(t, &http.Client{Transport: tr}, site.URL)
			tr.Close()
			if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/3.0" || !strings.Contains(body, want) {
				t.Fatalf("%s over QUIC to %s: %s %s, body %.200q", site.URL, udp, resp.Proto, resp.Status, body)
			}
		}
	})

	t.Run("plain HTTP: names redirected, probes served", func(t *testing.T) {
		e := info.Edges[0]
		httpAddr, httpsAddr := hostPort(t, e.URL), hostPort(t, e.HTTPSURL)
		_, httpsPort, _ := net.SplitHostPort(httpsAddr)
		c := &http.Client{Transport: &http.Transport{DialContext: dialTo(httpAddr)},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		_, httpPort, _ := net.SplitHostPort(httpAddr)
		resp, _ := get(t, c, "http://"+site.Host+":"+httpPort+"/docs/?x=1")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect ||
			loc != "https://"+site.Host+":"+httpsPort+"/docs/?x=1" {
			t.Errorf("plain HTTP by name: %s, Location %q", resp.Status, loc)
		}
		for _, u := range []string{e.URL + dnsrouteapi.HealthPath, "http://" + site.Host + ":" + httpPort + dnsrouteapi.HealthPath,
			e.URL + "/ipfs/" + site.CID + "/"} {
			if resp, body := get(t, c, u); resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s %.200q", u, resp.Status, body)
			}
		}
	})

	t.Run("a forged challenge record is refused", func(t *testing.T) {
		// Signed by a key of its own, in the name of an edge the router
		// hands out.
		forger, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = dnsrouteapi.SendChallenge(ctx, nil, strings.TrimSuffix(info.DNS.API, dnsrouteapi.EdgesPath), forger,
			dnsrouteapi.Challenge{Peer: info.Edges[0].PeerID, Op: dnsrouteapi.OpAdd, Name: "_acme-challenge." + info.DNS.Zone + ".",
				Value: strings.Repeat("A", dnsrouteapi.ChallengeValueLen)})
		var re *httpkit.ResponseError
		if !errors.As(err, &re) || re.Status != http.StatusForbidden || !strings.Contains(re.Message(), "forged") {
			t.Fatalf("a forged challenge: %v, want 403 forged", err)
		}
	})
}

// peerCert completes a TLS handshake with addr for host, verified against
// roots, and returns the server's certificate.
func peerCert(t *testing.T, addr, host string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to %s for %s: %v", addr, host, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// dialTo returns a DialContext that connects to addr whatever the URL
// names, as curl --resolve does.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	}
}

// hostPort returns the host:port of the base URL u.
func hostPort(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Port() == "" {
		t.Fatalf("URL %q has no port", u)
	}
	return p.Host
}

// get fetches u with c and returns the response and its body.
func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, string(b)
}
