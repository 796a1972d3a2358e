package devnet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/topcdn/topcdn/internal/httpkit"
)

// DefaultCertLifetime is how long the devnet CA's certificates are valid
// (Config.CertLifetime): Let's Encrypt's 90 days.
const DefaultCertLifetime = 90 * 24 * time.Hour

// The devnet's CA is pebble, Let's Encrypt's test ACME server: the same
// protocol, DNS-01 validation by one TCP query to a resolver (the
// devnet's, which forwards the zone to the router), and a root made anew
// at every start, which DIR/ca/root.pem (devnet.json's ca_cert) holds.
//
// Files under DIR/ca: pebble-tls.pem and pebble-tls.key, the self-signed
// certificate of pebble's own HTTPS listeners (the edges' acme_ca_root);
// pebble.json, its config; root.pem.

// pebbleConfig is pebble's JSON config (cmd/pebble's config struct).
type pebbleConfig struct {
	Pebble struct {
		ListenAddress           string `json:"listenAddress"`
		ManagementListenAddress string `json:"managementListenAddress"`
		Certificate             string `json:"certificate"`
		PrivateKey              string `json:"privateKey"`
		HTTPPort                int    `json:"httpPort"`
		TLSPort                 int    `json:"tlsPort"`
		KeyAlgorithm            string `json:"keyAlgorithm"`
		RetryAfter              struct {
			Authz int `json:"authz"`
			Order int `json:"order"`
		} `json:"retryAfter"`
		// One profile only: with several, pebble picks one at random.
		Profiles map[string]pebbleProfile `json:"profiles"`
	} `json:"pebble"`
}

type pebbleProfile struct {
	Description    string `json:"description"`
	ValidityPeriod uint64 `json:"validityPeriod"` // seconds
}

// findPebble returns the pebble binary: next to bin (make build puts
// bin/pebble beside bin/topcdn), else on PATH.
func findPebble(bin string) (string, error) {
	p := filepath.Join(filepath.Dir(bin), "pebble")
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, nil
	}
	if p, err := exec.LookPath("pebble"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("devnet: no pebble next to %s nor on PATH: run make build, or go build -o %s github.com/letsencrypt/pebble/v2/cmd/pebble",
		bin, filepath.Join(filepath.Dir(bin), "pebble"))
}

// startCA starts pebble as the role ca, resolving through the devnet's
// resolver, and writes its root to DIR/ca/root.pem.
func (n *network) startCA(ctx context.Context) error {
	dir := filepath.Join(n.cfg.Dir, "ca")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, "pebble-tls.pem"), filepath.Join(dir, "pebble-tls.key")
	roots, err := writeSelfSigned(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("devnet: pebble's certificate: %w", err)
	}
	var c pebbleConfig
	p := &c.Pebble
	p.ListenAddress, p.ManagementListenAddress = n.at.ca, n.at.caManagement
	p.Certificate, p.PrivateKey = certFile, keyFile
	// The ports its VA would use for HTTP-01 and TLS-ALPN-01: the
	// edges' (which solve DNS-01 only).
	p.HTTPPort, p.TLSPort = httpPort+n.cfg.PortOffset, httpsPort+n.cfg.PortOffset
	p.KeyAlgorithm = "ecdsa"
	p.RetryAfter.Authz, p.RetryAfter.Order = 1, 1
	p.Profiles = map[string]pebbleProfile{"default": {Description: "topcdn devnet",
		ValidityPeriod: uint64(n.cfg.CertLifetime / time.Second)}}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	conf := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(conf, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	ca := &role{name: "ca", bin: n.cfg.Pebble, roots: roots, health: "https://" + n.at.ca + "/dir", log: logPath(n.cfg.Dir, "ca"),
		args: []string{"-config", conf, "-dnsserver", n.at.resolver},
		// No random sleep before validating, no reuse of valid
		// authorizations, no nonces rejected at random: the devnet's
		// certificates come at once, and each order is validated.
		env: []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0"}}
	if err := n.run(ctx, ca); err != nil {
		return err
	}
	root := filepath.Join(dir, "root.pem")
	if err := fetchRoot(ctx, roots, "https://"+n.at.caManagement+"/roots/0", root); err != nil {
		return err
	}
	n.info.CA = Endpoint{URL: "https://" + n.at.ca + "/dir", PID: ca.pid(), Log: ca.log}
	n.info.CACert = root
	return nil
}

// fetchRoot saves pebble's root certificate, new at every start, to
// file.
func fetchRoot(ctx context.Context, roots *x509.CertPool, url, file string) error {
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	b, err := httpkit.Get(ctx, client, url, 64<<10)
	if err != nil {
		return fmt.Errorf("devnet: the CA's root: %w", err)
	}
	if blk, _ := pem.Decode(b); blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("devnet: the CA's root at %s is not a PEM certificate", url)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	return nil
}

// writeSelfSigned writes a new self-signed ECDSA certificate for
// 127.0.0.1 and localhost, and its key, and returns a pool holding it.
func writeSelfSigned(certFile, keyFile string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "topcdn devnet pebble"},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Its own issuer: trusted as a root by whoever is given it.
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

// LoadCACert returns a pool holding the certificates of the PEM file at
// path: devnet.json's ca_cert, for clients of the edges' HTTPS.
func LoadCACert(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devnet: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("devnet: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// waitHTTPS waits until every edge completes a TLS handshake for the
// site's host that verifies against the CA's root: each obtained its
// certificates (the router set its DNS-01 challenges, pebble validated
// them through the resolver).
func (n *network) waitHTTPS(ctx context.Context, host string) error {
	roots, err := LoadCACert(n.info.CACert)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, e := range n.info.Edges {
		addr := e.HTTPSURL[len("https://"):]
		for {
			err := handshake(ctx, addr, host, roots)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("devnet: the edge at %s has no certificate for %s from the devnet CA after 60 s (%w); see %s and %s",
					addr, host, err, e.Log, logPath(n.cfg.Dir, "ca"))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

// handshake completes a TLS handshake with addr for host, verified
// against roots.
func handshake(ctx context.Context, addr, host string, roots *x509.CertPool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{ServerName: host, RootCAs: roots}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}
