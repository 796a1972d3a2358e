package devnet

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/topcdn/topcdn/identity"
)

// Defaults of Config.
const (
	DefaultSite     = "examples/site"
	DefaultSiteName = "blog"
	DefaultZone     = "cdn.test"
	DefaultPeers    = 14
	DefaultEpoch    = 30 * time.Second
	DefaultDeposit  = 1_000_000_000_000
)

// Config configures a devnet.
type Config struct {
	// Dir holds everything: keys, data, logs, devnet.json. Required.
	Dir string
	// Bin is the topcdn binary to run for every role. Default: this
	// process's own executable.
	Bin string
	// Site is the directory published at start. Default: DefaultSite
	// (examples/site).
	Site string
	// SiteName is the name it is published under. Default:
	// DefaultSiteName (blog).
	SiteName string
	// Zone is the DNS zone sites live under. Default: DefaultZone
	// (cdn.test).
	Zone string
	// PortOffset is added to every port, so two devnets (or a devnet and
	// a test) can run side by side. Default: 0 (origin on 7070, edges on
	// 8080).
	PortOffset int
	// Peers is how many storage peers to run, 4 to 99. Default:
	// DefaultPeers (14).
	Peers int
	// Epoch is the billing epoch. Default: DefaultEpoch (30s).
	Epoch time.Duration
	// Deposit is what the publisher's account is funded with the first
	// time the devnet starts in Dir. Default: DefaultDeposit (10^12
	// units).
	Deposit int64
	// Out receives the status table and instructions. Default: stdout.
	Out io.Writer
	// NoNameStream runs the edges with name_stream off: names change on
	// them only as their TTLs run out, as before the origin pushed
	// changes (the baseline of bench publish-latency).
	NoNameStream bool
	// Pebble is the pebble binary (Let's Encrypt's test ACME server) run
	// as the devnet's CA. Default: pebble next to Bin (make build puts
	// bin/pebble beside bin/topcdn), else pebble on PATH.
	Pebble string
	// CertLifetime is how long the CA's certificates are valid, whole
	// seconds. Default: DefaultCertLifetime (90 days).
	CertLifetime time.Duration
	// NoHTTPSRedirect has the edges serve names over plain HTTP too,
	// instead of redirecting such requests to HTTPS (for clients that
	// fetch by name over HTTP without trusting the CA).
	NoHTTPSRedirect bool
}

// Endpoint is one service of a running devnet.
type Endpoint struct {
	URL     string `json:"url"`
	PID     int    `json:"pid"`
	PeerID  string `json:"peer_id,omitempty"`
	DataDir string `json:"data_dir,omitempty"`
	City    string `json:"city,omitempty"`
	Log     string `json:"log"`

	// HTTPSURL is an edge's HTTPS base URL, https://127.N.0.1:8443.
	HTTPSURL string `json:"https_url,omitempty"`
}

// DNS is the devnet's DNS router.
type DNS struct {
	Addr string `json:"addr"`
	DoH  string `json:"doh"`
	API  string `json:"api"`
	Zone string `json:"zone"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`

	// Resolver is the devnet's recursive resolver (UDP and TCP), which
	// forwards the zone to the router: the CA validates through it.
	Resolver string `json:"resolver"`
}

// Site is a site the devnet published.
type Site struct {
	Name string `json:"name"`
	Host string `json:"host"`
	CID  string `json:"cid"`
	IPNS string `json:"ipns"`
	// URL is the site's https URL on the edges, e.g.
	// https://blog.cdn.test:8443/.
	URL string `json:"url"`
}

// Info is what a running devnet writes to DIR/devnet.json.
type Info struct {
	Origin       Endpoint   `json:"origin"`
	Storage      []Endpoint `json:"storage"`
	Edges        []Endpoint `json:"edges"`
	DNS          DNS        `json:"dns"`
	Billing      Endpoint   `json:"billing"`
	Dashboard    string     `json:"dashboard"`
	PublisherKey string     `json:"publisher_key"`
	PublisherID  string     `json:"publisher_id"`
	EpochSeconds int        `json:"epoch_seconds"`
	Sites        []Site     `json:"sites"`

	// CA is the ACME CA (pebble); its URL is the ACME directory.
	CA Endpoint `json:"ca"`
	// CACert is the PEM file of the CA's root, new at every start: the
	// edges' certificates verify against it.
	CACert string `json:"ca_cert"`
}

// The devnet's prices, in the token's smallest unit: a 100 KiB page
// costs about 95,000 units served.
const (
	PriceGiBServed      = 1_000_000_000
	PriceGiBMonthStored = 100_000_000
)

// cities are where the devnet's edges (and storage peers) are: the geo
// database the DNS router uses puts 127.N.0.0/16 in city N.
var cities = []struct {
	name, slug, region string
	lat, lon           float64
}{
	{"Frankfurt", "frankfurt", "eu-fra", 50.11, 8.68},
	{"Tokyo", "tokyo", "ap-tyo", 35.68, 139.69},
	{"São Paulo", "saopaulo", "sa-sao", -23.55, -46.63},
}

// network is a devnet being run.
type network struct {
	cfg   Config
	at    listenAddrs
	roles []*role // in start order; stopped in reverse
	info  Info

	resolver *resolver // stopped after the roles
}

// listenAddrs are where the origin, billing and the DNS router listen
// (host:port), and their base URLs.
type listenAddrs struct {
	origin, billing, dns, dnsHTTP string
	originURL, billingURL, dnsURL string
	resolver, ca, caManagement    string
}

// The edges' ports, on 127.N.0.1 (plus the port offset).
const (
	httpPort  = 8080
	httpsPort = 8443
)

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("devnet: Dir is required")
	}
	if c.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		c.Bin = exe
	}
	c.Site = cmp.Or(c.Site, DefaultSite)
	c.SiteName = cmp.Or(c.SiteName, DefaultSiteName)
	c.Zone = cmp.Or(c.Zone, DefaultZone)
	c.Peers = cmp.Or(c.Peers, DefaultPeers)
	c.Epoch = cmp.Or(c.Epoch, DefaultEpoch)
	c.Deposit = cmp.Or(c.Deposit, DefaultDeposit)
	c.CertLifetime = cmp.Or(c.CertLifetime, DefaultCertLifetime)
	if c.CertLifetime < time.Second || c.CertLifetime%time.Second != 0 {
		return fmt.Errorf("devnet: certificate lifetime %s: want whole seconds", c.CertLifetime)
	}
	if c.Pebble == "" {
		p, err := findPebble(c.Bin)
		if err != nil {
			return err
		}
		c.Pebble = p
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Peers < 4 || c.Peers > 99 {
		return fmt.Errorf("devnet: %d storage peers: want 4 to 99", c.Peers)
	}
	if c.PortOffset < 0 || c.PortOffset > 50000 {
		return fmt.Errorf("devnet: port offset %d out of range", c.PortOffset)
	}
	if st, err := os.Stat(c.Site); err != nil || !st.IsDir() {
		return fmt.Errorf("devnet: site %q is not a directory", c.Site)
	}
	return nil
}

func (n *network) addr(ip string, port int) string {
	return net.JoinHostPort(ip, strconv.Itoa(port+n.cfg.PortOffset))
}

// Run starts every role, publishes the site, writes DIR/devnet.json and
// serves until ctx ends; then it stops every role. Running it again on the
// same Dir keeps keys, published content and balances.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	var err error
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return err
	}
	n := &network{cfg: cfg}
	defer n.stopAll()
	if err := n.start(ctx); err != nil {
		return err
	}
	if err := n.writeInfo(); err != nil {
		return err
	}
	n.printStatus()
	return n.watch(ctx)
}

// start brings up every role in dependency order and publishes the site.
func (n *network) start(ctx context.Context) error {
	d := n.cfg.Dir
	for _, sub := range []string{"keys", "logs", "origin", "storage", "edges", "billing", "dns", "ca"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
	}
	n.at = n.serviceAddrs()
	tcp := []string{n.at.origin, n.at.billing, n.at.dns, n.at.dnsHTTP, n.at.resolver, n.at.ca, n.at.caManagement}
	udp := []string{n.at.dns, n.at.resolver}
	for i := range n.cfg.Peers {
		tcp = append(tcp, n.addr("127.0.0.1", 7101+i))
	}
	for i := range cities {
		ip := fmt.Sprintf("127.%d.0.1", i+1)
		tcp = append(tcp, n.addr(ip, httpPort), n.addr(ip, httpsPort))
		udp = append(udp, n.addr(ip, httpsPort)) // HTTP/3
	}
	if err := portsFree(tcp, udp); err != nil {
		return err
	}
	pubKeyFile := filepath.Join(d, "keys", "publisher.key")
	pub, err := identity.LoadOrGenerate(pubKeyFile)
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	n.info.PublisherKey, n.info.PublisherID = pubKeyFile, pub.ID.String()
	for _, k := range []string{"billing", "dns"} { // the others create their own
		if _, err := identity.LoadOrGenerate(filepath.Join(d, "keys", k+".key")); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
	}
	n.info.EpochSeconds = int(n.cfg.Epoch / time.Second)

	fmt.Fprintf(n.cfg.Out, "starting a topcdn devnet in %s (logs in %s)\n", d, filepath.Join(d, "logs"))
	for _, step := range []func(context.Context) error{n.startOrigin, n.startBilling, n.admitEdges, n.startPeers,
		n.startResolver, n.startCA, n.startDNS, n.startEdges} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	// Funds first: the origin takes uploads only from publishers billing
	// says can pay.
	if err := n.fund(ctx, n.at.billingURL); err != nil {
		return err
	}
	site, err := n.publish(ctx, n.at.originURL, pubKeyFile)
	if err != nil {
		return err
	}
	site.URL = "https://" + n.addr(site.Host, httpsPort) + "/"
	n.info.Sites = []Site{site}
	if err := n.waitRouted(ctx, n.at.dns, site.Host); err != nil {
		return err
	}
	return n.waitHTTPS(ctx, site.Host)
}

// serviceAddrs are where the origin, billing and the DNS router listen.
func (n *network) serviceAddrs() listenAddrs {
	a := listenAddrs{origin: n.addr("127.0.0.1", 7070), billing: n.addr("127.0.0.1", 7080),
		dns: n.addr("127.0.0.1", 5300), dnsHTTP: n.addr("127.0.0.1", 8053), resolver: n.addr("127.0.0.1", 5301),
		ca: n.addr("127.0.0.1", 14000), caManagement: n.addr("127.0.0.1", 15000)}
	a.originURL, a.billingURL, a.dnsURL = "http://"+a.origin, "http://"+a.billing, "http://"+a.dnsHTTP
	return a
}

// startOrigin starts the origin, with the dashboard.
func (n *network) startOrigin(ctx context.Context) error {
	d, originURL := n.cfg.Dir, n.at.originURL
	origin := &role{name: "origin", health: originURL + "/healthz", log: logPath(d, "origin"),
		args: []string{"origin", "--data", filepath.Join(d, "origin"), "--listen", n.at.origin, "--deserialized",
			"--heartbeat-interval", "2s", "--audit-interval", "3s", "--repair-interval", "5s",
			"--dashboard-router", n.at.dnsURL, "--dashboard-billing", n.at.billingURL, "--billing", n.at.billingURL,
			"--domain", n.cfg.Zone,
			// Every role of the devnet reaches the origin from 127.0.0.1:
			// three edges, the router, and whatever a user or a benchmark
			// adds each hold a long-poll of the name-change stream.
			"--max-name-waiters-per-ip", "64"}}
	if err := n.run(ctx, origin); err != nil {
		return err
	}
	n.info.Origin = Endpoint{URL: originURL, PID: origin.pid(), PeerID: origin.peerID, DataDir: filepath.Join(d, "origin"), Log: origin.log}
	n.info.Dashboard = originURL + "/dashboard/"
	return nil
}

// startBilling starts billing, settling each epoch itself.
func (n *network) startBilling(ctx context.Context) error {
	d, billingURL := n.cfg.Dir, n.at.billingURL
	billing := &role{name: "billing", health: billingURL + "/healthz", log: logPath(d, "billing"),
		args: []string{"billing", "--listen", n.at.billing, "--db", filepath.Join(d, "billing", "billing.db"),
			"--origin", n.at.originURL, "--dns", n.at.dnsURL, "--epoch", n.cfg.Epoch.String(),
			// Clients, billing and the router share 127.0.0.1 with the
			// edges: requests from there are not an edge's own.
			"--shared-prefix", "127.0.0.0/24",
			"--settle-every", n.cfg.Epoch.String(), "--grace", "10m",
			"--price-gib-served", strconv.FormatInt(PriceGiBServed, 10),
			"--price-gib-month-stored", strconv.FormatInt(PriceGiBMonthStored, 10),
			"--key", filepath.Join(d, "keys", "billing.key")}}
	if err := n.run(ctx, billing); err != nil {
		return err
	}
	n.info.Billing = Endpoint{URL: billingURL, PID: billing.pid(), PeerID: billing.peerID, Log: billing.log}
	return nil
}

// startPeers starts the storage peers, spread over the three cities,
// together.
func (n *network) startPeers(ctx context.Context) error {
	d := n.cfg.Dir
	peers := make([]*role, n.cfg.Peers)
	for i := range peers {
		c := cities[i%len(cities)]
		dir := filepath.Join(d, "storage", fmt.Sprintf("%02d", i+1))
		addr := n.addr("127.0.0.1", 7101+i)
		peers[i] = &role{name: fmt.Sprintf("storage-%02d", i+1), health: "http://" + addr + "/healthz",
			log: logPath(d, fmt.Sprintf("storage-%02d", i+1)),
			args: []string{"storage", "--data", dir, "--listen", addr, "--origin", n.at.originURL, "--capacity", "1GiB",
				"--heartbeat", "2s", "--location", fmt.Sprintf("%.2f,%.2f", c.lat, c.lon), "--region", c.region,
				"--billing", n.at.billingURL, "--claim-every", n.cfg.Epoch.String()}}
		if err := peers[i].start(n.cfg.Bin); err != nil {
			return err
		}
		n.roles = append(n.roles, peers[i])
	}
	for i, p := range peers {
		if err := p.waitHealthy(ctx, 30*time.Second); err != nil {
			return err
		}
		n.info.Storage = append(n.info.Storage, Endpoint{URL: "http://" + n.addr("127.0.0.1", 7101+i), PID: p.pid(),
			PeerID: p.peerID, DataDir: filepath.Join(d, "storage", fmt.Sprintf("%02d", i+1)), City: cities[i%len(cities)].name, Log: p.log})
	}
	return nil
}

// startDNS starts the DNS router, with the devnet's geo database.
func (n *network) startDNS(ctx context.Context) error {
	d, dnsURL := n.cfg.Dir, n.at.dnsURL
	geo := filepath.Join(d, "dns", "geo.mmdb")
	if err := os.WriteFile(geo, geoDB, 0o644); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	dns := &role{name: "dns", health: dnsURL + "/healthz", log: logPath(d, "dns"),
		args: []string{"dns", "--listen", n.at.dns, "--http", n.at.dnsHTTP, "--zone", n.cfg.Zone, "--origin", n.at.originURL,
			"--geoip", geo, "--billing", n.at.billingURL, "--billing-epoch", n.cfg.Epoch.String(), "--key", filepath.Join(d, "keys", "dns.key"),
			"--ca-root", n.info.CACert}}
	if err := n.run(ctx, dns); err != nil {
		return err
	}
	n.info.DNS = DNS{Addr: n.at.dns, Resolver: n.at.resolver, DoH: dnsURL + "/dns-query", API: dnsURL + "/api/v1/edges",
		Zone: n.cfg.Zone, PID: dns.pid(), Log: dns.log}
	return nil
}

// admitEdges has the billing operator admit each edge's key (made now
// the first time) before any edge serves: only admitted edges are paid,
// and the router sets ACME challenge records only for them, from its
// first read of billing's list on.
func (n *network) admitEdges(ctx context.Context) error {
	for i := range cities {
		dir := filepath.Join(n.cfg.Dir, "edges", strconv.Itoa(i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		key, err := identity.LoadOrGenerate(filepath.Join(dir, "edge.key"))
		if err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		if err := n.admit(ctx, key.ID.String()); err != nil {
			return err
		}
	}
	return nil
}

// startEdges starts an edge in each city, on its own loopback address,
// serving HTTP and HTTPS.
func (n *network) startEdges(ctx context.Context) error {
	for i, c := range cities {
		ip := fmt.Sprintf("127.%d.0.1", i+1)
		addr := n.addr(ip, httpPort)
		dir := filepath.Join(n.cfg.Dir, "edges", strconv.Itoa(i+1))
		// Certificates and ACME accounts of the last run are of a CA
		// that is gone, under a root no one trusts now.
		if err := os.RemoveAll(filepath.Join(dir, "caddy")); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		conf := filepath.Join(dir, "Caddyfile")
		ec := edgeConfig{dir: dir, ip: ip, httpPort: httpPort + n.cfg.PortOffset, httpsPort: httpsPort + n.cfg.PortOffset,
			origin: n.at.originURL, router: n.at.dnsURL, billing: n.at.billingURL, zone: n.cfg.Zone, city: c.name,
			email: "edge-" + c.slug + "@devnet.test",
			epoch: n.cfg.Epoch, nameStream: !n.cfg.NoNameStream, redirect: !n.cfg.NoHTTPSRedirect,
			acmeCA: n.info.CA.URL, acmeCARoot: filepath.Join(n.cfg.Dir, "ca", "pebble-tls.pem"), resolver: n.at.resolver}
		if err := os.WriteFile(conf, []byte(edgeCaddyfile(ec)), 0o644); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		name := "edge-" + c.slug
		e := &role{name: name, health: "http://" + addr + "/.well-known/topcdn/health", log: logPath(n.cfg.Dir, name),
			args: []string{"edge", "--config", conf},
			env:  []string{"XDG_DATA_HOME=" + filepath.Join(dir, "xdg"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "xdg")}}
		if err := n.run(ctx, e); err != nil {
			return err
		}
		n.info.Edges = append(n.info.Edges, Endpoint{URL: "http://" + addr, HTTPSURL: "https://" + n.addr(ip, httpsPort),
			PID: e.pid(), PeerID: e.peerID, DataDir: dir, City: c.name, Log: e.log})
	}
	return nil
}

// run starts r and waits until it is healthy.
func (n *network) run(ctx context.Context, r *role) error {
	if err := r.start(n.cfg.Bin); err != nil {
		return err
	}
	n.roles = append(n.roles, r)
	return r.waitHealthy(ctx, 30*time.Second)
}

// edgeConfig is what an edge's Caddyfile says.
type edgeConfig struct {
	dir, ip                       string // the edge's directory and loopback address
	httpPort, httpsPort           int
	origin, router, billing, zone string
	city, email                   string // email: its ACME account's contact
	epoch                         time.Duration
	nameStream, redirect          bool
	acmeCA, acmeCARoot, resolver  string // the CA's directory, its API's certificate, the resolver
}

// edgeCaddyfile is an edge's configuration: Caddy bound to its own
// loopback address, with the topcdn handler reporting to the router and
// billing, serving plain HTTP and, for the zone's names, HTTPS with
// HTTP/2 and HTTP/3. Its certificates (one per wildcard: *.ZONE,
// *.ipfs.ZONE, *.ipns.ZONE) are its own, with its own keys, from the
// devnet's CA: the router sets its DNS-01 challenge records
// (dns.providers.topcdn), and the edge sees them through the resolver
// before it asks the CA to validate.
func edgeCaddyfile(c edgeConfig) string {
	stream := "on"
	if !c.nameStream {
		stream = "off"
	}
	redirect := ""
	if c.redirect {
		redirect = fmt.Sprintf("\n\t\thttps_port   %d", c.httpsPort)
	}
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s
	http_port %[3]d
	https_port %[4]d
	# The topcdn handler redirects plain HTTP itself (https_port below),
	# keeping the router's and billing's probes on HTTP.
	auto_https disable_redirects
	acme_ca %[15]s
	acme_ca_root %[16]s
	# With no email, certmagic may take the account directory another
	# of the edge's first orders is making for a contact ("default").
	email %[19]s
	servers {
		listener_wrappers {
			topcdn_limit
			tls
		}
		timeouts {
			read_header 10s
			idle 2m
			write_max_chunk 1MiB
		}
		protocols h1 h2 h3
	}
}

(edge) {
	log {
		output file %[12]s
		format json
	}
	encode zstd gzip
	topcdn {
		origin       %[5]s
		domain       %[8]s
		memory_cache 64MiB
		disk_cache   %[10]s 256MiB
		key          %[11]s
		router       %[6]s
		billing      %[7]s
		billing_epoch %[13]s
		public_url   http://%[2]s:%[3]d
		city         %[9]q
		heartbeat    2s
		name_stream  %[14]s%[18]s
	}
}

http://:%[3]d {
	bind %[2]s
	import edge
}

https://*.%[8]s:%[4]d, https://*.ipfs.%[8]s:%[4]d, https://*.ipns.%[8]s:%[4]d {
	bind %[2]s
	tls {
		dns topcdn {
			router %[6]s
			key    %[11]s
		}
		resolvers %[17]s
	}
	import edge
}
`, filepath.Join(c.dir, "caddy"), c.ip, c.httpPort, c.httpsPort, c.origin, c.router, c.billing, c.zone, c.city,
		filepath.Join(c.dir, "cache"), filepath.Join(c.dir, "edge.key"), filepath.Join(c.dir, "access.log"), c.epoch,
		stream, c.acmeCA, c.acmeCARoot, c.resolver, redirect, c.email)
}

// siteTTL is the TTL of the site's name record.
const siteTTL = 10 * time.Second

// publish publishes the site with `topcdn publish` and reads back its
// root CID and IPNS name.
func (n *network) publish(ctx context.Context, originURL, keyFile string) (Site, error) {
	fmt.Fprintf(n.cfg.Out, "publishing %s as %s ...\n", n.cfg.Site, n.cfg.SiteName)
	// A short TTL: a republish shows on the edges within seconds, and an
	// origin outage outlasts the edges' cached names quickly.
	cmd := exec.CommandContext(ctx, n.cfg.Bin, "publish", n.cfg.Site, "--name", n.cfg.SiteName,
		"--origin", originURL, "--key", keyFile, "--ttl", siteTTL.String())
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return Site{}, fmt.Errorf("devnet: publish: %w: %s", err, stderr)
	}
	site := Site{Name: n.cfg.SiteName, Host: n.cfg.SiteName + "." + n.cfg.Zone}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "root" {
			site.CID = f[1]
		}
		if len(f) == 2 && f[0] == "ipns" {
			// http://k51….ipns.ZONE/ (older builds printed the bare k51…)
			site.IPNS, _, _ = strings.Cut(strings.TrimPrefix(f[1], "http://"), ".")
		}
	}
	if site.CID == "" || site.IPNS == "" {
		return Site{}, fmt.Errorf("devnet: publish printed no root or ipns line:\n%s", out)
	}
	return site, nil
}

// fund deposits Deposit into the publisher's account the first time the
// devnet runs in Dir.
func (n *network) fund(ctx context.Context, billingURL string) error {
	marker := filepath.Join(n.cfg.Dir, "billing", "funded")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, n.cfg.Bin, "billing", "deposit", "--billing", billingURL,
		"--account", n.info.PublisherID, "--amount", strconv.FormatInt(n.cfg.Deposit, 10),
		"--key", filepath.Join(n.cfg.Dir, "keys", "billing.key"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("devnet: funding the publisher: %w: %s", err, out)
	}
	return os.WriteFile(marker, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644)
}

// admit admits an edge with `topcdn billing admit` (idempotent: one
// nonce per edge).
func (n *network) admit(ctx context.Context, edge string) error {
	cmd := exec.CommandContext(ctx, n.cfg.Bin, "billing", "admit", "--billing", n.at.billingURL,
		"--edge", edge, "--nonce", "devnet-"+edge, "--key", filepath.Join(n.cfg.Dir, "keys", "billing.key"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("devnet: admitting edge %s: %w: %s", edge, err, out)
	}
	return nil
}

// writeInfo writes DIR/devnet.json atomically.
func (n *network) writeInfo() error {
	b, err := json.MarshalIndent(n.info, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(n.cfg.Dir, "devnet.json")
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// printStatus prints the status table and what to open.
func (n *network) printStatus() {
	w := n.cfg.Out
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nROLE\tURL\tPID\tPEER ID\tWHERE")
	row := func(role string, e Endpoint) {
		id := e.PeerID
		if len(id) > 16 {
			id = id[:8] + "…" + id[len(id)-6:]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", role, e.URL, e.PID, id, e.City)
	}
	row("origin", n.info.Origin)
	row("billing", n.info.Billing)
	fmt.Fprintf(tw, "dns\tdns://%s  %s\t%d\t\t\n", n.info.DNS.Addr, n.info.DNS.DoH, n.info.DNS.PID)
	fmt.Fprintf(tw, "resolver\tdns://%s\t%d\t\t\n", n.info.DNS.Resolver, os.Getpid())
	row("ca (pebble)", n.info.CA)
	for _, e := range n.info.Edges {
		e.URL += "  " + e.HTTPSURL
		row("edge", e)
	}
	for i, e := range n.info.Storage {
		row(fmt.Sprintf("storage %d", i+1), e)
	}
	tw.Flush()
	site := n.info.Sites[0]
	host, port, _ := net.SplitHostPort(n.info.DNS.Addr)
	_, httpsPort, _ := net.SplitHostPort(strings.TrimPrefix(n.info.Edges[0].HTTPSURL, "https://"))
	dig := fmt.Sprintf("$(dig @%s -p %s %s A +short | head -1)", host, port, site.Host)
	fmt.Fprint(w, strings.NewReplacer("SITE", site.Name, "ROOT", site.CID, "IPNSKEY", site.IPNS, "HOST", site.Host,
		"DNSIP", host, "DNSPORT", port, "DIG", dig, "HTTPSPORT", httpsPort, "URL", site.URL, "CACERT", n.info.CACert,
		"DASHBOARD", n.info.Dashboard, "STATE", filepath.Join(n.cfg.Dir, "devnet.json")).Replace(`
SITE is published: root ROOT, IPNS IPNSKEY

Ask the router where HOST is (answers differ by where you ask from):
  dig @DNSIP -p DNSPORT HOST A +short
  dig @DNSIP -p DNSPORT HOST A +short -b 127.2.0.5      # from "Tokyo"

Fetch it over HTTPS (HTTP/2) through the edge the router picks:
  curl --cacert CACERT --resolve HOST:HTTPSPORT:DIG URL

The edges' certificates are their own, from the devnet's CA, whose root is CACERT.
Trust it to browse without warnings (it is new at every run: trust it again after a restart):
  Chromium, Chrome (Linux; certutil is in libnss3-tools):
    certutil -d sql:$HOME/.pki/nssdb -D -n topcdn-devnet 2>/dev/null; certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n topcdn-devnet -i CACERT
  Firefox: Settings, Privacy & Security, View Certificates, Authorities, Import: CACERT, "identify websites"
  macOS: sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain CACERT

Open it in Chromium, name resolution through the router:
  chromium --host-resolver-rules="MAP HOST DIG" URL

Dashboard:  DASHBOARD
State:      STATE
Ctrl-C stops everything; running again on the same directory keeps content and balances.
`))
}

// watch serves until ctx ends, reporting roles that exit on their own.
func (n *network) watch(ctx context.Context) error {
	reported := map[*role]bool{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(n.cfg.Out, "\nstopping the devnet ...")
			return nil
		case <-t.C:
			for _, r := range n.roles {
				if r.exited() && !reported[r] {
					reported[r] = true
					err := r.p.Wait(context.Background()) // at once: it has exited
					fmt.Fprintf(n.cfg.Out, "%s  %s (pid %d) exited: %v; log %s\n", time.Now().Format("15:04:05"), r.name, r.pid(), err, r.log)
				}
			}
		}
	}
}

// stopAll stops every role, newest first (edges before the services
// they report to, storage peers before the origin).
func (n *network) stopAll() {
	for i := len(n.roles) - 1; i >= 0; i-- {
		n.roles[i].stop(10 * time.Second)
	}
	if n.resolver != nil {
		n.resolver.stop()
	}
}
