package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/dnsroute"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"go.uber.org/zap/zaptest"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of testdata/*.caddyfiletest")

func TestDNSProviderCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    DNSProvider
		wantErr bool
	}{
		{name: "router as argument", input: "topcdn http://127.0.0.1:8053", want: DNSProvider{Router: "http://127.0.0.1:8053"}},
		{name: "block", input: "topcdn {\n router http://127.0.0.1:8053\n key /var/lib/topcdn/edge.key\n}",
			want: DNSProvider{Router: "http://127.0.0.1:8053", KeyFile: "/var/lib/topcdn/edge.key"}},
		{name: "argument and key", input: "topcdn http://r {\n key k\n}", want: DNSProvider{Router: "http://r", KeyFile: "k"}},
		{name: "nothing (for Validate to refuse)", input: "topcdn", want: DNSProvider{}},
		{name: "router twice", input: "topcdn http://r {\n router http://s\n}", wantErr: true},
		{name: "key twice", input: "topcdn {\n key a\n key b\n}", wantErr: true},
		{name: "two arguments", input: "topcdn http://r http://s", wantErr: true},
		{name: "option without value", input: "topcdn {\n key\n}", wantErr: true},
		{name: "option with two values", input: "topcdn {\n router http://r http://s\n}", wantErr: true},
		{name: "empty value", input: "topcdn {\n key \"\"\n}", wantErr: true},
		{name: "unknown option", input: "topcdn {\n token abc\n}", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p DNSProvider
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(p, tc.want) {
				t.Fatalf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestDNSProviderValidate(t *testing.T) {
	dir := isolateDataDir(t)
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		p       DNSProvider
		wantErr bool
	}{
		{"ok, key created later", DNSProvider{Router: "http://127.0.0.1:8053", KeyFile: filepath.Join(dir, "new.key")}, false},
		{"ok, the default key", DNSProvider{Router: "https://ns1.cdn.test:8453"}, false},
		{"no router", DNSProvider{}, true},
		{"router not http", DNSProvider{Router: "127.0.0.1:8053"}, true},
		{"router without host", DNSProvider{Router: "http://"}, true},
		{"key file unusable", DNSProvider{Router: "http://r", KeyFile: bad}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := tc.p.Provision(ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Provision: %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new.key")); err == nil {
		t.Error("Provision wrote the key file")
	}
}

// TestCaddyfileAdapt: each testdata/*.caddyfiletest (a Caddyfile, a
// line of dashes, the JSON) adapts to its JSON, and Caddy validates it
// (provisioning every module, the DNS provider and the topcdn handler
// included); go test -run CaddyfileAdapt -update rewrites the JSON.
// dnsprovider: the dns option of a tls block and the global acme_dns
// option. https: an edge's HTTP and HTTPS sites as the devnet writes
// them, with https_port.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.caddyfiletest: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { testAdapt(t, path) })
	}
}

func testAdapt(t *testing.T, path string) {
	const sep = "\n----------\n"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text, want, ok := strings.Cut(string(b), sep)
	if !ok {
		t.Fatalf("%s: no %q line", path, strings.TrimSpace(sep))
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text+"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	var got bytes.Buffer
	if err := json.Indent(&got, cfg, "", "\t"); err != nil {
		t.Fatal(err)
	}
	got.WriteString("\n")
	if *update {
		if err := os.WriteFile(path, []byte(text+sep+got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got.String() != want {
		t.Fatalf("%s adapts to\n%s\nwant\n%s", path, got.String(), want)
	}
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	isolateDataDir(t)
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("validate: %v", err)
	}
}

// FuzzDNSProviderCaddyfile feeds arbitrary text to the topcdn DNS
// provider: parsing returns an error or a provider without panicking, and
// a provider that parses survives Caddy's JSON round trip unchanged.
func FuzzDNSProviderCaddyfile(f *testing.F) {
	for _, s := range []string{
		"topcdn http://127.0.0.1:8053",
		"topcdn {\n router http://127.0.0.1:8053\n key /var/lib/topcdn/edge.key\n}",
		"topcdn http://r {\n key k\n}",
		"topcdn http://r {\n router http://s\n}",
		"topcdn {\n key\n}",
		"topcdn {\n{\n}",
		"topcdn {\n key \"\"\n}",
		"topcdn \"\" {\n router \"\"\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var p DNSProvider
		if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		raw, err := json.Marshal(&p)
		if err != nil {
			t.Fatalf("%q: marshal: %v", input, err)
		}
		var back DNSProvider
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("%q: unmarshal %s: %v", input, raw, err)
		}
		if !reflect.DeepEqual(p, back) {
			t.Fatalf("%q: JSON round trip changed the provider:\n%+v\n%+v", input, p, back)
		}
	})
}

// routerNet is a running dnsroute router (DNS on a real UDP socket, its
// HTTP API on httptest) with one edge that the test makes healthy when it
// wants.
type routerNet struct {
	router  *dnsroute.Router
	reg     *prometheus.Registry
	dnsAddr string
	api     string
	key     *identity.Key
	keyFile string
}

func newRouterNet(t *testing.T) *routerNet {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("[]"))
	}))
	t.Cleanup(origin.Close)
	n := &routerNet{reg: prometheus.NewRegistry(), key: testkit.Key(t, 1)}
	r, err := dnsroute.New(dnsroute.Config{Zone: "cdn.test", Origin: origin.URL, NamesInterval: 100 * time.Millisecond,
		ContentProbeInterval: -1, Registry: n.reg, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.router = r
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	us, err := r.NewUDPServer(pc)
	if err != nil {
		t.Fatal(err)
	}
	go us.Serve()
	n.dnsAddr = pc.LocalAddr().String()
	api := httptest.NewServer(r.Handler())
	n.api = api.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		api.Close()
		cancel()
		<-done
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		us.ShutdownContext(sctx)
	})
	n.keyFile = filepath.Join(t.TempDir(), "edge.key")
	if err := n.key.Save(n.keyFile); err != nil {
		t.Fatal(err)
	}
	return n
}

// startEdge serves the edge's health document and sends its heartbeats
// until the test ends: the router then hands it out after its first
// probe.
func (n *routerNet) startEdge(t *testing.T) {
	t.Helper()
	id := n.key.ID.String()
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"peer": id})
	}))
	t.Cleanup(health.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	const iv = 100 * time.Millisecond
	go func() {
		defer close(done)
		for {
			err := dnsrouteapi.SendHeartbeat(ctx, http.DefaultClient, n.api, n.key, dnsrouteapi.Heartbeat{
				Addrs: []string{"127.0.0.1"}, URL: health.URL, IntervalMS: iv.Milliseconds()})
			if err != nil && ctx.Err() == nil {
				t.Errorf("heartbeat: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(iv):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// txt asks the router's DNS socket for name's TXT values.
func (n *routerNet) txt(t *testing.T, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	m, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, n.dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeSuccess {
		t.Fatalf("TXT %s: %s", name, dns.RcodeToString[m.Rcode])
	}
	var out []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out
}

// provision provisions a provider for the router with the edge's key.
func (n *routerNet) provision(t *testing.T) *DNSProvider {
	t.Helper()
	p := &DNSProvider{Router: n.api, KeyFile: n.keyFile}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := p.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

const testChallengeValue = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

// TestDNSProviderAgainstRouter: AppendRecords, called as the edge starts
// (before the router has probed it, so first answered 503), waits for the
// router to hand the edge out and then makes the TXT answer on the
// router's DNS socket; DeleteRecords removes it. A record the router
// refuses is an error wrapping the sentinel.
func TestDNSProviderAgainstRouter(t *testing.T) {
	n := newRouterNet(t)
	p := n.provision(t)
	ctx := context.Background()
	rec := libdns.RR{Type: "TXT", Name: "_acme-challenge.ipfs", Data: testChallengeValue}

	type result struct {
		recs []libdns.Record
		err  error
	}
	done := make(chan result, 1)
	go func() {
		recs, err := p.AppendRecords(ctx, "cdn.test.", []libdns.Record{rec})
		done <- result{recs, err}
	}()
	testkit.WaitFor(t, 5*time.Second, "a challenge the router is not ready for", func() bool {
		return routerCount(t, n.reg, "not_ready") > 0
	})
	n.startEdge(t)
	var res result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("AppendRecords still waiting 20 s after the edge started")
	}
	if res.err != nil || len(res.recs) != 1 {
		t.Fatalf("AppendRecords: %v, %v", res.recs, res.err)
	}
	if txt, ok := res.recs[0].(libdns.TXT); !ok || txt.Name != rec.Name || txt.Text != rec.Data || txt.TTL != dnsrouteapi.ChallengeTTL {
		t.Fatalf("AppendRecords returned %#v", res.recs[0])
	}
	if got := n.txt(t, "_acme-challenge.ipfs.cdn.test."); !slices.Equal(got, []string{testChallengeValue}) {
		t.Fatalf("TXT after AppendRecords: %v", got)
	}
	if _, err := p.DeleteRecords(ctx, "cdn.test.", res.recs); err != nil {
		t.Fatal(err)
	}
	if got := n.txt(t, "_acme-challenge.ipfs.cdn.test."); len(got) != 0 {
		t.Fatalf("TXT after DeleteRecords: %v", got)
	}

	_, err := p.AppendRecords(ctx, "cdn.test.", []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge.blog", Data: testChallengeValue}})
	if !errors.Is(err, dnsrouteapi.ErrChallengeRefused) {
		t.Fatalf("a site's own challenge name: %v, want refused", err)
	}
	if _, err := p.AppendRecords(ctx, "cdn.test.", []libdns.Record{libdns.RR{Type: "A", Name: "x", Data: "127.0.0.1"}}); err == nil {
		t.Fatal("an A record was sent")
	}
	if got := testutil.ToFloat64(p.counts.WithLabelValues("add", "ok")); got != 1 {
		t.Errorf("topcdn_edge_acme_challenges_total{op=add,result=ok} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(p.counts.WithLabelValues("add", "refused")); got != 1 {
		t.Errorf("topcdn_edge_acme_challenges_total{op=add,result=refused} = %v, want 1", got)
	}
}

// TestDNSProviderSolvesDNS01: certmagic's DNS-01 solver, which Caddy's
// ACME issuer runs, finds the zone through the router's SOA answers,
// presents the challenge for a wildcard through the provider, sees it
// propagated on the router's socket, and cleans it up.
func TestDNSProviderSolvesDNS01(t *testing.T) {
	n := newRouterNet(t)
	n.startEdge(t)
	p := n.provision(t)
	solver := &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{DNSProvider: p, Resolvers: []string{n.dnsAddr},
		PropagationTimeout: 20 * time.Second, Logger: zaptest.NewLogger(t)}}
	// The identifier of a wildcard's authorization is its base domain.
	ch := acme.Challenge{Type: acme.ChallengeTypeDNS01, Identifier: acme.Identifier{Type: "dns", Value: "ipns.cdn.test"},
		KeyAuthorization: "token.thumbprint"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := solver.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := solver.Wait(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got := n.txt(t, "_acme-challenge.ipns.cdn.test."); !slices.Equal(got, []string{ch.DNS01KeyAuthorization()}) {
		t.Fatalf("TXT: %v", got)
	}
	if err := solver.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if got := n.txt(t, "_acme-challenge.ipns.cdn.test."); len(got) != 0 {
		t.Fatalf("TXT after CleanUp: %v", got)
	}
}

// routerCount is the router's topcdn_dnsroute_acme_challenges_total for
// result, over ops.
func routerCount(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "topcdn_dnsroute_acme_challenges_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
