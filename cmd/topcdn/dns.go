package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsroute"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"go.uber.org/zap"
)

func newDNSCmd() *cobra.Command {
	var (
		cfg                                        dnsroute.Config
		listen, httpAddr, geoip, keyFile, logLevel string
		nsAddrs, allowEdges                        []string
		caRoots                                    []string
	)
	cmd := &cobra.Command{
		Use:   "dns --zone ZONE --origin URL [--listen ADDR] [--http ADDR] [--geoip FILE.mmdb]",
		Short: "Run the geo-DNS router: steer browsers to nearby healthy edges",
		Long: `dns is the authoritative DNS server of the CDN's zone. NAME.ZONE (A/AAAA)
is answered with up to --edges healthy edges, nearest to the client first
(located by its EDNS Client Subnet, else the resolver's address, in the
--geoip database), weighted by load; _dnslink.NAME.ZONE TXT names the IPNS
name the origin's names give (polled every --names-interval). With
--billing, names of suspended publishers get no addresses.

Edges send signed heartbeats and are probed once per heartbeat interval; 3
missed heartbeats or a failed probe take an edge out of the answers. An edge
whose heartbeats give an https_url is probed over HTTPS too, its certificate
verified against --ca-root, and handed out only while that passes. About
every --content-probe-interval the router fetches a random published root
through each edge and checks its hash: an edge that serves wrong bytes, or
that billing's prober caught doing so, stays out for --quarantine.

It answers DNS on --listen (UDP and TCP) and serves heartbeats, the edge
list, DNS-over-HTTPS and metrics on --http. dnsroute/README.md describes the
answers, health and content probes, and lists every endpoint.

When ready it prints "dns listening on udp+tcp ADDR" and then
"listening on http://ADDR" on standard output. SIGINT or SIGTERM stop it.`,
		Example: `  topcdn dns --zone cdn.test --origin http://127.0.0.1:8081 --listen 127.0.0.1:5300 \
      --http 127.0.0.1:8053 --geoip dnsroute/testdata/geo-test.mmdb`,
		Args: cobra.NoArgs,
		RunE: withLogger(&logLevel, func(cmd *cobra.Command, log *zap.Logger) error {
			var err error
			reg := prom.NewRegistry()
			cfg.Logger, cfg.Registry = log, reg
			for _, s := range nsAddrs {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("--ns-addr %q: %w", s, err)
				}
				cfg.NSAddrs = append(cfg.NSAddrs, a)
			}
			for _, s := range allowEdges {
				p, err := peer.Decode(s)
				if err != nil {
					return fmt.Errorf("--allow-edge %q: %w", s, err)
				}
				cfg.AllowedEdges = append(cfg.AllowedEdges, p)
			}
			if len(caRoots) > 0 {
				if cfg.RootCAs, err = loadRoots(caRoots); err != nil {
					return err
				}
			}
			if geoip != "" {
				if cfg.GeoIP, err = dnsroute.OpenGeoDB(geoip); err != nil {
					return err
				}
				defer cfg.GeoIP.Close()
			}
			var key *identity.Key
			if keyFile != "" {
				if key, err = identity.Load(keyFile); err != nil {
					return err
				}
				cfg.ID = key.ID
			}
			return runDNS(cmd.Context(), cmd, listen, httpAddr, cfg, key, reg, log)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:5300", "address to serve DNS on, UDP and TCP")
	f.StringVar(&httpAddr, "http", "127.0.0.1:8053", "address to serve HTTP on (heartbeats, edges, DoH, metrics)")
	f.StringVar(&cfg.Zone, "zone", "", "zone to be authoritative for, e.g. cdn.test (required)")
	f.StringVar(&cfg.Origin, "origin", "", "base URL of the origin whose names to serve (required)")
	f.StringVar(&geoip, "geoip", "", "MaxMind-format City database (GeoLite2-City, DB-IP City Lite) to locate clients and edges")
	f.StringVar(&cfg.Billing, "billing", "", "base URL of the billing service; names of suspended publishers get no addresses")
	f.StringSliceVar(&nsAddrs, "ns-addr", nil, "address of a name server of the zone (ns1, ns2, … in order; repeatable; default: the --listen IP, or 127.0.0.1 on a wildcard address)")
	f.StringSliceVar(&allowEdges, "allow-edge", nil, "peer ID of an edge allowed to send heartbeats (repeatable; default: any edge)")
	f.IntVar(&cfg.Edges, "edges", dnsroute.DefaultEdges, "most edges per answer")
	f.DurationVar(&cfg.TTL, "ttl", dnsroute.DefaultTTL, "TTL of answers (and of negative answers)")
	f.DurationVar(&cfg.NamesInterval, "names-interval", dnsroute.DefaultNamesInterval, "how often to poll the origin's names and billing's suspensions")
	f.DurationVar(&cfg.ContentProbeInterval, "content-probe-interval", dnsroute.DefaultContentProbeInterval,
		"how often, on average, to fetch a random published root through each edge and check its bytes; negative: off")
	f.DurationVar(&cfg.ContentProbeTimeout, "content-probe-timeout", dnsroute.DefaultContentProbeTimeout, "time limit of one content probe")
	f.DurationVar(&cfg.Quarantine, "quarantine", dnsroute.DefaultQuarantine,
		"how long an edge caught serving wrong bytes (by a content probe or billing's prober) stays out of answers")
	f.DurationVar(&cfg.BillingEpoch, "billing-epoch", billingapi.DefaultEpoch, "billing's epoch length: demand sent to each edge is counted per epoch")
	f.Float64Var(&cfg.RRLRate, "rrl", dnsroute.DefaultRRLRate, "UDP responses per second per client /24 (/56) and response (name and type; errors per zone), as BIND's RRL, before rate limiting; negative: off")
	f.StringVar(&keyFile, "key", "", "the router's key file (its peer ID is reported in /healthz)")
	f.StringSliceVar(&caRoots, "ca-root", nil, "PEM file of root certificates to verify edges' HTTPS against in the HTTPS probes (repeatable; default: the system's roots)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.MarkFlagRequired("zone")
	cmd.MarkFlagRequired("origin")
	return cmd
}

// loadRoots reads PEM files of root certificates into a pool.
func loadRoots(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--ca-root: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca-root %s: no PEM certificate", f)
		}
	}
	return pool, nil
}

// dnsServers are the DNS listeners of one router.
type dnsServers struct {
	fast *dnsroute.UDPServer // UDP on a specific address
	udp  *dns.Server         // UDP on a wildcard address
	tcp  *dns.Server
}

func runDNS(ctx context.Context, cmd *cobra.Command, listen, httpAddr string, cfg dnsroute.Config, key *identity.Key,
	reg *prometheus.Registry, log *zap.Logger) error {
	ua, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return fmt.Errorf("dns: --listen %q: %w", listen, err)
	}
	if len(cfg.NSAddrs) == 0 && ua.IP != nil && !ua.IP.IsUnspecified() {
		a, _ := netip.AddrFromSlice(ua.IP)
		cfg.NSAddrs = []netip.Addr{a.Unmap()}
	}
	r, err := dnsroute.New(cfg)
	if err != nil {
		return err
	}
	pc, tl, err := listenUDPTCP(ua)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	defer pc.Close()
	defer tl.Close()
	addr := pc.LocalAddr().(*net.UDPAddr)
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	defer hl.Close()

	srv := dnsServers{tcp: &dns.Server{Listener: tl, Net: "tcp", Handler: r, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}}
	if addr.IP.IsUnspecified() {
		srv.udp = &dns.Server{PacketConn: pc, Net: "udp", Handler: r, UDPSize: dns.MaxMsgSize}
	} else if srv.fast, err = r.NewUDPServer(pc); err != nil {
		return err
	}
	errc := make(chan error, 2)
	tcpStarted := make(chan struct{})
	srv.tcp.NotifyStartedFunc = func() { close(tcpStarted) }
	go func() { errc <- srv.tcp.ActivateAndServe() }()
	go func() {
		if srv.fast != nil {
			errc <- srv.fast.Serve()
		} else {
			errc <- srv.udp.ActivateAndServe()
		}
	}()
	select {
	case <-tcpStarted:
	case err := <-errc:
		return fmt.Errorf("dns: %w", err)
	}
	defer srv.shutdown(log)
	peerID := ""
	if key != nil {
		peerID = key.ID.String()
	}
	log.Info("dns router listening", zap.String("addr", addr.String()), zap.String("zone", r.Zone()),
		zap.Bool("geoip", cfg.GeoIP != nil), zap.String("peer_id", peerID))
	fmt.Fprintf(cmd.OutOrStdout(), "dns listening on udp+tcp %s\n", addr)

	mux := http.NewServeMux()
	api := r.Handler()
	mux.Handle("/", api)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	background := func(ctx context.Context) {
		if err := r.Run(ctx); err != nil {
			log.Error("router stopped", zap.Error(err))
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// A DNS listener that fails ends the command.
		select {
		case err := <-errc:
			if err != nil {
				log.Error("dns server failed", zap.Error(err))
			}
			cancel()
		case <-sctx.Done():
		}
	}()
	err = serve(sctx, cmd, "dns", hl, mux, background, log)
	if err == nil && ctx.Err() == nil {
		return errors.New("dns: a DNS listener stopped")
	}
	return err
}

// listenUDPTCP binds UDP and TCP on the same address. With port 0 the
// kernel picks the UDP port, and TCP may find it taken: then it tries
// another.
func listenUDPTCP(ua *net.UDPAddr) (*net.UDPConn, net.Listener, error) {
	for try := 0; ; try++ {
		pc, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, nil, err
		}
		tl, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, tl, nil
		}
		pc.Close()
		if ua.Port != 0 || try == 20 {
			return nil, nil, err
		}
	}
}

// shutdown stops the DNS listeners within 5 s.
func (s dnsServers) shutdown(log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	errs = append(errs, s.tcp.ShutdownContext(ctx))
	if s.fast != nil {
		errs = append(errs, s.fast.ShutdownContext(ctx))
	} else {
		errs = append(errs, s.udp.ShutdownContext(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		log.Warn("dns shutdown", zap.Error(err))
	}
}
