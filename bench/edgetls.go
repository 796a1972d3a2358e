package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// The HTTPS rows: the hit edge and Caddy file_server each get a second
// site, https://:PORT with `tls cert key`, in the same process as their
// plain-HTTP site, both on one ECDSA P-256 certificate the harness makes.
const (
	srvEdgeHitTLS = "edge-hit-https"
	srvFileSrvTLS = "caddy-file_server-https"
)

// edgeTLSServers maps each HTTPS server key to the key of the server
// whose process also serves it.
var edgeTLSServers = map[string]string{
	srvEdgeHitTLS: srvEdgeHit,
	srvFileSrvTLS: srvFileSrv,
}

// benchCert is the one certificate both HTTPS servers present.
type benchCert struct {
	certFile, keyFile string
	leaf              []byte // DER
	pool              *x509.CertPool
}

// makeBenchCert writes a self-signed ECDSA P-256 certificate for edgeHost
// and 127.0.0.1, valid for a day, and its key (PKCS #8) into dir.
func makeBenchCert(dir string) (*benchCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: edgeHost},
		DNSNames:              []string{edgeHost},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	c := &benchCert{certFile: filepath.Join(dir, "bench-cert.pem"), keyFile: filepath.Join(dir, "bench-key.pem"),
		leaf: der, pool: x509.NewCertPool()}
	c.pool.AddCert(leaf)
	if err := os.WriteFile(c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return nil, fmt.Errorf("bench cert: %w", err)
	}
	return c, nil
}

// clientConfig is what the harness's own requests use: SNI edgeHost, the
// certificate verified as a browser would (against the bench cert as the
// only root).
func (c *benchCert) clientConfig() *tls.Config {
	return &tls.Config{ServerName: edgeHost, RootCAs: c.pool}
}

// handshakeConfig is the handshake load's client: no session cache, so
// every handshake is a full one (checked), ALPN as a browser offers it.
// The chain is not verified on every handshake (a load generator's CPU
// is not what is measured; wrk does not verify either), but the server
// must present exactly the bench certificate.
func (c *benchCert) handshakeConfig() *tls.Config {
	return &tls.Config{
		ServerName:         edgeHost,
		NextProtos:         []string{"h2", "http/1.1"},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				return errors.New("session resumed, want a full handshake")
			}
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, c.leaf) {
				return errors.New("the server presented another certificate")
			}
			return nil
		},
	}
}

// httpsSite returns a Caddyfile site serving body over HTTPS on port with
// the bench certificate.
func (c *benchCert) httpsSite(port int, body string) string {
	return fmt.Sprintf("https://:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n%s}\n", port, c.certFile, c.keyFile, body)
}

// handshakeResult is what one run of new TLS handshakes against a server
// gave.
type handshakeResult struct {
	Rate       float64 // completed full handshakes per second
	Handshakes int64
	Errors     int64
	FirstErr   string
	// Proto is the version, key exchange and ALPN protocol of the first
	// handshake, e.g. "TLS 1.3 X25519MLKEM768 h2".
	Proto string
	// CPUPerHS is the server's CPU time (user + system) per handshake
	// over the run, 0 if unknown.
	CPUPerHS time.Duration
}

// runHandshakes makes new TCP connections to addr, each with a full TLS
// handshake (cfg must have no session cache) that it closes at once,
// from conns goroutines for d, and counts those that completed. A
// handshake under way at the end is let finish (and counted), so the
// end of the run is no error.
func runHandshakes(ctx context.Context, addr string, cfg *tls.Config, d time.Duration, conns int) handshakeResult {
	var (
		n, errs atomic.Int64
		mu      sync.Mutex
		res     handshakeResult
		wg      sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range conns {
		wg.Go(func() {
			dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			for ctx.Err() == nil && time.Now().Before(end) {
				c, err := dialer.DialContext(ctx, "tcp", addr)
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				if n.Add(1) == 1 {
					cs := c.(*tls.Conn).ConnectionState()
					mu.Lock()
					res.Proto = fmt.Sprintf("%s %s %s", tls.VersionName(cs.Version), cs.CurveID, cs.NegotiatedProtocol)
					mu.Unlock()
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	res.Handshakes, res.Errors = n.Load(), errs.Load()
	res.Rate = float64(res.Handshakes) / time.Since(start).Seconds()
	return res
}

// runHandshakeLoad loads one HTTPS server with new handshakes, reading
// the server's CPU time around the run.
func (b *edgeBench) runHandshakeLoad(ctx context.Context, key string, d time.Duration, conns int) (handshakeResult, error) {
	s := b.svcs[key]
	cpu0, cpuOK := procTreeCPU(s.PID())
	r := runHandshakes(ctx, fmt.Sprintf("127.0.0.1:%d", b.ports[key]), b.cert.handshakeConfig(), d, conns)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if s.Exited() {
		return r, fmt.Errorf("during the run: %s", s.exitReport())
	}
	if r.Handshakes == 0 {
		return r, fmt.Errorf("no handshake completed (%d errors, first: %s)", r.Errors, r.FirstErr)
	}
	if cpu1, ok := procTreeCPU(s.PID()); ok && cpuOK {
		r.CPUPerHS = (cpu1 - cpu0) / time.Duration(r.Handshakes)
	}
	return r, nil
}

// handshakeServers are the servers whose handshakes are measured, in
// order.
var handshakeServers = []string{srvEdgeHitTLS, srvFileSrvTLS}

// printHandshakes writes the handshake table and its ratio.
func (b *edgeBench) printHandshakes(w io.Writer, d time.Duration, conns int) {
	if len(b.handshakes) == 0 {
		return
	}
	fmt.Fprintf(w, "\nnew full TLS handshakes (Go client, no session cache, %d concurrent, %s per run, connection closed after each;\nmedians of runs):\n", conns, d)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\thandshakes/s\tserver CPU µs/handshake\terrors\tnegotiated\t")
	med := func(key string) handshakeResult {
		rs := slices.Clone(b.handshakes[key])
		if len(rs) == 0 {
			return handshakeResult{}
		}
		slices.SortFunc(rs, func(a, c handshakeResult) int { return cmpFloat(a.Rate, c.Rate) })
		return rs[len(rs)/2]
	}
	// cpu is the median of the server CPU per handshake over the runs
	// that measured it, as for requests.
	cpu := func(key string) time.Duration {
		var ds []time.Duration
		for _, r := range b.handshakes[key] {
			ds = append(ds, r.CPUPerHS)
		}
		return medianPositive(ds)
	}
	rates := func(key string) []float64 {
		var r []float64
		for _, x := range b.handshakes[key] {
			r = append(r, x.Rate)
		}
		return r
	}
	for _, k := range handshakeServers {
		r := med(k)
		var errs int64
		for _, x := range b.handshakes[k] {
			errs += x.Errors
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%d\t%s\t\n", k, r.Rate, float64(cpu(k))/float64(time.Microsecond), errs, r.Proto)
	}
	tw.Flush()
	m, each := pairedRatios(rates(srvEdgeHitTLS), rates(srvFileSrvTLS))
	if each == nil {
		return
	}
	verdict := "meets goal"
	if m < 0.9 {
		verdict = "BELOW goal"
	}
	var runs []string
	for _, r := range each {
		runs = append(runs, fmt.Sprintf("%.2f", r))
	}
	fmt.Fprintf(w, "edge / caddy file_server handshakes (median of paired runs): %.2f, goal ≥ 0.9: %s (runs %v)\n",
		m, verdict, runs)
	if ca, cc := cpu(srvEdgeHitTLS), cpu(srvFileSrvTLS); ca > 0 && cc > 0 {
		fmt.Fprintf(w, "server CPU per handshake, caddy file_server's over the edge's: %.2f\n", float64(cc)/float64(ca))
	}
}
