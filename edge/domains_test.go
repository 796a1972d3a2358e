package edge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/publish"
)

// fakeDNS is a customdomain.Resolver over a map of records (owner name,
// lower case, fully qualified → records), counting the questions.
type fakeDNS struct {
	mu    sync.Mutex
	rrs   map[string][]dns.RR
	asked atomic.Int64
}

func (f *fakeDNS) set(t *testing.T, records ...string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rrs = map[string][]dns.RR{}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		f.rrs[n] = append(f.rrs[n], rr)
	}
}

func (f *fakeDNS) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	f.asked.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	q := m.Question[0]
	ans := new(dns.Msg)
	ans.SetReply(m)
	rrs, ok := f.rrs[strings.ToLower(q.Name)]
	if !ok {
		ans.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			ans.Answer = append(ans.Answer, rr)
		}
	}
	return ans, nil
}

// domainSite is an in-process origin publishing one site, "notes", and
// an edge over it that asks dns for custom domains.
type domainSite struct {
	edge *Edge
	reg  *prometheus.Registry
	key  ipns.Name
	dns  *fakeDNS
	rec  *servedLog
}

type servedLog struct {
	mu  sync.Mutex
	all []Served
}

func (l *servedLog) Record(s Served) { l.mu.Lock(); l.all = append(l.all, s); l.mu.Unlock() }

func newDomainSite(t *testing.T, cfg Config) *domainSite {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o, err := origin.New(ctx, origin.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ots := httptest.NewServer(o.Handler())
	t.Cleanup(func() { ots.Close(); o.Close() })
	client, err := publish.NewClient(ots.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate(nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("my own notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := publish.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Push(ctx, key, d, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.PublishName(ctx, "notes", key, d.Root, publish.NameOptions{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s := &domainSite{reg: prometheus.NewRegistry(), key: ipns.NameFromPeer(key.ID), dns: &fakeDNS{}, rec: &servedLog{}}
	cfg.Origin, cfg.Domain, cfg.Registry, cfg.Resolver, cfg.Recorder = ots.URL, "cdn.test", s.reg, s.dns, s.rec
	if s.edge, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s.edge.noWarm = true
	return s
}

// records are a custom domain's: DNSLink to key, the delegation.
func records(host, key string) []string {
	return []string{
		fmt.Sprintf("_dnslink.%s. 60 IN TXT \"dnslink=/ipns/%s\"", host, key),
		fmt.Sprintf("_acme-challenge.%s. 60 IN CNAME %s", host, customdomain.ChallengeTarget(host, "cdn.test")),
	}
}

func (s *domainSite) permissions(result string) float64 {
	return testutil.ToFloat64(s.edge.metrics.permissions.WithLabelValues(result))
}

// TestAllowCertificate: the permission approves a delegated custom domain
// whose DNSLink names a published key, and refuses the rest, each with
// its sentinel and metric result; refusals are remembered (no second
// lookup), and the cheap refusals make no lookup at all.
func TestAllowCertificate(t *testing.T) {
	s := newDomainSite(t, Config{})
	unpublished, _ := identity.Generate(nil)
	var zone []string
	zone = append(zone, records("www.example.org", s.key.String())...)
	zone = append(zone, records("bad.example.org", ipns.NameFromPeer(unpublished.ID).String())...)
	zone = append(zone, records("nodeleg.example.org", s.key.String())[0])
	zone = append(zone, records("nolink.example.org", s.key.String())[1])
	s.dns.set(t, zone...)
	client := netip.MustParseAddr("192.0.2.7")
	tests := []struct {
		name, host string
		want       error // nil: allowed
		result     string
		lookups    int64
	}{
		{name: "custom domain", host: "www.example.org", result: "allowed", lookups: 2},
		{name: "approved again, from the cache", host: "WWW.example.org.", result: "allowed"},
		{name: "unpublished key", host: "bad.example.org", want: ErrUnpublished, result: "unpublished", lookups: 2},
		{name: "unpublished again, from the cache", host: "bad.example.org", want: ErrUnpublished, result: "cached_deny"},
		{name: "no delegation", host: "nodeleg.example.org", want: customdomain.ErrNoDelegation, result: "no_delegation", lookups: 2},
		{name: "no DNSLink", host: "nolink.example.org", want: customdomain.ErrNoDNSLink, result: "no_dnslink", lookups: 1},
		{name: "no DNSLink again, from the cache", host: "nolink.example.org", want: customdomain.ErrNoDNSLink, result: "cached_deny"},
		{name: "in the zone", host: "a.blog.cdn.test", want: customdomain.ErrInZone, result: "in_zone"},
		{name: "the zone", host: "cdn.test", want: customdomain.ErrInZone, result: "in_zone"},
		{name: "an IP address", host: "127.1.0.1", want: customdomain.ErrBadHost, result: "bad_host"},
		{name: "not a name", host: "x_y.example.org", want: customdomain.ErrBadHost, result: "bad_host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, asked := s.permissions(tc.result), s.dns.asked.Load()
			err := s.edge.AllowCertificate(context.Background(), tc.host, client)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("AllowCertificate(%q) = %v, want %v", tc.host, err, tc.want)
			}
			if got := s.permissions(tc.result) - before; got != 1 {
				t.Fatalf("%s counted %v times, want 1", tc.result, got)
			}
			if got := s.dns.asked.Load() - asked; got != tc.lookups {
				t.Fatalf("%d DNS questions, want %d", got, tc.lookups)
			}
		})
	}
}

// TestAllowCertificateOff: without a resolver, custom domains are off.
func TestAllowCertificateOff(t *testing.T) {
	s := newDomainSite(t, Config{})
	s.edge.domains.resolver = nil
	if err := s.edge.AllowCertificate(context.Background(), "www.example.org", netip.Addr{}); !errors.Is(err, ErrNoCustomDomains) {
		t.Fatalf("got %v, want ErrNoCustomDomains", err)
	}
}

// TestAllowCertificateFlood: a flood of made-up names is refused at the
// rate limits, almost all without a lookup: from one client network, its
// burst; from many, the edge's rate. Every call counts once.
func TestAllowCertificateFlood(t *testing.T) {
	tests := []struct {
		name        string
		clients     int   // distinct /24s
		maxLookups  int64 // DNS questions allowed for the whole flood
		wantLimited bool
	}{
		{name: "one client", clients: 1, maxLookups: DefaultPermissionClientBurst + 2, wantLimited: true},
		{name: "many clients", clients: 500, maxLookups: 2 * (DefaultPermissionRate + 2), wantLimited: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newDomainSite(t, Config{})
			s.dns.set(t)
			const n = 2000
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					c := netip.AddrFrom4([4]byte{10, byte(i % tc.clients / 256), byte(i % tc.clients), 1})
					host := fmt.Sprintf("x%d.example%d.test", rand.Uint64(), i)
					if err := s.edge.AllowCertificate(context.Background(), host, c); err == nil {
						t.Errorf("%s allowed", host)
					}
				})
			}
			wg.Wait()
			if got := s.dns.asked.Load(); got > tc.maxLookups {
				t.Fatalf("%d DNS questions, want at most %d", got, tc.maxLookups)
			}
			total := 0.0
			for _, r := range []string{"allowed", "in_zone", "bad_host", "no_dnslink", "unpublished", "no_delegation", "cached_deny", "limited", "off", "error"} {
				total += s.permissions(r)
			}
			if total != n {
				t.Fatalf("metric sum %v, want %d", total, n)
			}
			if tc.wantLimited && s.permissions("limited") < n/2 {
				t.Fatalf("only %v limited", s.permissions("limited"))
			}
		})
	}
}

// TestServeCustomDomain: a custom host is served from its DNSLink through
// the resolver (no delegation needed to serve), billed to its key; a host
// whose DNSLink is missing or names an unpublished key is not a DNSLink
// host, so boxo answers it as a path gateway: 400 at /, as any unknown
// host.
func TestServeCustomDomain(t *testing.T) {
	s := newDomainSite(t, Config{})
	unpublished, _ := identity.Generate(nil)
	zone := append(records("www.example.org", s.key.String())[:1], records("bad.example.org", ipns.NameFromPeer(unpublished.ID).String())...)
	s.dns.set(t, zone...)
	tests := []struct {
		host   string
		status int
		text   string
	}{
		{"www.example.org", http.StatusOK, "my own notes"},
		{"www.example.org:8443", http.StatusOK, "my own notes"},
		{"bad.example.org", http.StatusBadRequest, "path does not have enough components"},
		{"nothing.example.org", http.StatusBadRequest, "path does not have enough components"},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			resp := get(t, s.edge, tc.host, "/")
			b := body(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(b, tc.text) {
				t.Fatalf("GET %s: %d %q, want %d %q", tc.host, resp.StatusCode, b, tc.status, tc.text)
			}
		})
	}
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	billed := 0
	for _, r := range s.rec.all {
		if r.Status == http.StatusOK {
			if r.Name != s.key.String() {
				t.Errorf("served %+v: name %q, want the key %s", r, r.Name, s.key)
			}
			billed++
		}
	}
	if billed != 2 {
		t.Fatalf("%d responses of 200 recorded, want 2", billed)
	}
}
