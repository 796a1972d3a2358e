package dnsroute

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// TestHTTPSProbe: an edge whose heartbeats give an https_url is handed
// out only once its HTTPS, at the address answers give, serves a
// certificate for the zone's names that verifies against the router's
// roots and names the edge; meanwhile it may set its ACME challenge
// records, or it could never get the certificate.
func TestHTTPSProbe(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	tests := []struct {
		name    string
		cert    tls.Certificate // served on HTTPS
		peer    string          // the health document's peer; "": the edge's
		down    bool            // nothing listens at the HTTPS URL
		wantErr string          // in EdgeInfo.HTTPSError; "": handed out
	}{
		{name: "the zone's wildcard from the router's CA", cert: ca.leaf(t, "*.cdn.test")},
		{name: "a CA the router does not trust", cert: other.leaf(t, "*.cdn.test"), wantErr: "certificate signed by unknown authority"},
		{name: "another name", cert: ca.leaf(t, "*.example.test"), wantErr: "certificate is valid for *.example.test"},
		{name: "another edge", cert: ca.leaf(t, "*.cdn.test"), peer: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
			wantErr: "answered by"},
		{name: "down", cert: ca.leaf(t, "*.cdn.test"), down: true, wantErr: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newFakeOrigin(t)
			o.publish(t, "blog")
			tr := startRouter(t, Config{Origin: o.srv.URL, RootCAs: ca.pool})
			e := newFakeEdge(t, "127.2.0.1", o)
			peer := tc.peer
			if peer == "" {
				peer = e.key.ID.String()
			}
			hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != dnsrouteapi.HealthPath || r.Host != "health.cdn.test:"+port(t, r.Context()) {
					http.Error(w, "wrong host or path: "+r.Host+r.URL.Path, http.StatusNotFound)
					return
				}
				json.NewEncoder(w).Encode(map[string]string{"peer": peer})
			}))
			ln, err := net.Listen("tcp", "127.2.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hs.Listener.Close()
			hs.Listener = ln
			hs.TLS = &tls.Config{Certificates: []tls.Certificate{tc.cert}}
			hs.StartTLS()
			t.Cleanup(hs.Close)
			// The heartbeat's URL names the address; the probe asks for
			// health.ZONE there.
			e.httpsURL = "https://" + ln.Addr().String()
			if tc.down {
				hs.Close()
			}
			e.beat(t, tr.http.URL, beat)

			info := func() dnsrouteapi.EdgeInfo {
				var list []dnsrouteapi.EdgeInfo
				testkit.GetJSON(t, tr.http.URL+dnsrouteapi.EdgesPath, &list)
				if len(list) != 1 {
					t.Fatalf("edges: %+v", list)
				}
				return list[0]
			}
			if tc.wantErr == "" {
				testkit.WaitFor(t, 5*time.Second, "the edge handed out", func() bool { return tr.healthyEdges() == 1 })
				if ei := info(); !ei.Healthy || ei.HTTPSURL != e.httpsURL || ei.HTTPSError != "" {
					t.Fatalf("edges lists %+v", ei)
				}
				return
			}
			testkit.WaitFor(t, 5*time.Second, "the HTTPS probe to fail", func() bool {
				ei := info()
				return ei.ProbeError == "" && ei.ContentError == "" && strings.Contains(ei.HTTPSError, tc.wantErr)
			})
			if n := tr.healthyEdges(); n != 0 || info().Healthy {
				t.Fatalf("an edge failing its HTTPS probe is handed out (%d) or listed healthy: %+v", n, info())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := dnsrouteapi.SendChallenge(ctx, nil, tr.http.URL, e.key, dnsrouteapi.Challenge{Op: dnsrouteapi.OpAdd,
				Name: "_acme-challenge.cdn.test.", Value: strings.Repeat("A", dnsrouteapi.ChallengeValueLen)}); err != nil {
				t.Fatalf("a challenge of an edge whose HTTPS fails: %v", err)
			}
		})
	}
}

// port is the port the request came in at.
func port(t *testing.T, ctx context.Context) string {
	_, p, _ := net.SplitHostPort(ctx.Value(http.LocalAddrContextKey).(net.Addr).String())
	return p
}

// testCA is a certificate authority of a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns a server certificate for names, issued by ca.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
