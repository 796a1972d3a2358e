package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/miekg/dns"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/dnsroute"
	"go.uber.org/zap"
)

// httpsOptions are topcdn dns's flags for its HTTPS listener.
type httpsOptions struct {
	addr    string // --https; "": no HTTPS listener
	name    string // --https-name; "": ns1.ZONE
	ca      string // --acme-ca, the ACME directory URL
	caRoot  string // --acme-ca-root; "": the system's roots
	storage string // --acme-storage; "": certmagic's default
}

// certName returns the name of the router's certificate in zone: --https-name,
// else ns1.ZONE (which the router answers with its first --ns-addr). The
// router can set challenge records only in its zone, so the name must be
// there.
func (o httpsOptions) certName(zone string) (string, error) {
	zone = dns.Fqdn(strings.ToLower(zone))
	name := o.name
	if name == "" {
		name = "ns1." + zone
	}
	name = dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(name); !ok || strings.HasPrefix(name, "*") || !dns.IsSubDomain(zone, name) {
		return "", fmt.Errorf("dns: --https-name %q: want a name in the zone %s", o.name, zone)
	}
	return strings.TrimSuffix(name, "."), nil
}

// certConfig returns the certmagic config that obtains and renews the
// router's certificate for name from the ACME CA by DNS-01, setting the challenge
// records in r's own table (r.Challenges()), and its cache. resolver is
// the router's own DNS address, where certmagic finds the zone's SOA; no
// propagation check is needed, since a record is in the answers as soon
// as it is set.
func (o httpsOptions) certConfig(r *dnsroute.Router, name, resolver string, log *zap.Logger) (*certmagic.Config, *certmagic.Cache, error) {
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           log,
	})
	storage := certmagic.Default.Storage
	if o.storage != "" {
		storage = &certmagic.FileStorage{Path: o.storage}
	}
	// A client that sends no SNI (dig +https @IP does not) gets the
	// router's one certificate, and verifies it for its name.
	cfg = certmagic.New(cache, certmagic.Config{Storage: storage, Logger: log, DefaultServerName: name})
	issuer := certmagic.ACMEIssuer{
		CA: o.ca,
		// A failed order is retried at the same CA, never at Let's
		// Encrypt's staging CA.
		TestCA:                  o.ca,
		Agreed:                  true,
		DisableHTTPChallenge:    true,
		DisableTLSALPNChallenge: true,
		DNS01Solver: &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        r.Challenges(),
			Resolvers:          []string{resolver},
			PropagationTimeout: -1,
			Logger:             log,
		}},
		Logger: log,
	}
	if o.caRoot != "" {
		roots, err := loadRoots("--acme-ca-root", []string{o.caRoot})
		if err != nil {
			cache.Stop()
			return nil, nil, err
		}
		issuer.TrustedRoots = roots
	}
	cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, issuer)}
	return cfg, cache, nil
}

// startHTTPS serves h on ln over TLS, HTTP/1.1 and HTTP/2, with the
// router's certificate for name, which it starts obtaining (and then
// renews) with cfg. It returns at once; stop shuts the server down within
// 10 s and stops the certificate's maintenance, and failed receives the
// server's error if it stops by itself. Until the certificate is issued,
// handshakes fail.
func startHTTPS(ctx context.Context, cmd *cobra.Command, ln net.Listener, cfg *certmagic.Config, cache *certmagic.Cache,
	name string, h http.Handler, log *zap.Logger) (stop func(), failed <-chan error, err error) {
	if err := cfg.ManageAsync(ctx, []string{name}); err != nil {
		cache.Stop()
		return nil, nil, fmt.Errorf("dns: certificate for %s: %w", name, err)
	}
	tlsCfg := cfg.TLSConfig()
	// certmagic offers only acme-tls/1, and that challenge is off.
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	tlsCfg.MinVersion = tls.VersionTLS12
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("https")),
	}
	errc := make(chan error, 1)
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("dns: https: %w", err)
		}
	}()
	log.Info("https listening", zap.String("addr", ln.Addr().String()), zap.String("name", name))
	fmt.Fprintf(cmd.OutOrStdout(), "listening on https://%s for %s\n", ln.Addr(), name)
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("https shutdown", zap.Error(err))
		}
		cache.Stop()
	}
	return stop, errc, nil
}
