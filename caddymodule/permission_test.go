package caddymodule

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/miekg/dns"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/internal/testkit"
)

// TestPermissionCaddyfile: permission topcdn takes no arguments and no
// block.
func TestPermissionCaddyfile(t *testing.T) {
	tests := []struct {
		input   string
		wantErr bool
	}{
		{"topcdn", false},
		{"topcdn extra", true},
		{"topcdn {\n zone cdn.test\n}", true},
	}
	for _, tc := range tests {
		var p Permission
		if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, wantErr %v", tc.input, err, tc.wantErr)
		}
	}
}

// TestPermissionWithoutHandler: a config with the permission and no
// topcdn handler fails to load.
func TestPermissionWithoutHandler(t *testing.T) {
	isolateDataDir(t)
	text := "{\n admin off\n persist_config off\n auto_https disable_redirects\n on_demand_tls {\n  permission topcdn\n }\n}\n" +
		"https://127.0.0.1:PORT {\n tls internal {\n  on_demand\n }\n respond hi\n}\n"
	if err := loadCaddy(t, text, freePort(t)); err == nil || !strings.Contains(err.Error(), "no topcdn handler") {
		t.Fatalf("loaded: %v", err)
	}
}

// serveZone serves the records on UDP and TCP at a loopback address until
// t ends, as a recursive resolver would (CNAMEs not chased), and returns
// the address.
func serveZone(t *testing.T, records ...string) string {
	t.Helper()
	rrs := map[string][]dns.RR{}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs[strings.ToLower(rr.Header().Name)] = append(rrs[strings.ToLower(rr.Header().Name)], rr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		got, ok := rrs[strings.ToLower(q.Question[0].Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range got {
			if rr.Header().Rrtype == q.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestPermissionZeroOrders: on-demand TLS with permission topcdn makes no
// ACME request at all for a flood of handshakes with made-up server
// names: random names, names under the zone, and names of a real zone
// without a DNSLink, without the delegation or with a DNSLink to an
// unpublished key. The edge's metric counts each handshake once. Then a
// published, delegated custom domain does reach the CA: the stub counts
// what it should.
func TestPermissionZeroOrders(t *testing.T) {
	dir := isolateDataDir(t)
	var acmeRequests atomic.Int64
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acmeRequests.Add(1)
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer ca.Close()
	caRoot := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caRoot, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The origin publishes one key.
	key, other := testkit.Key(t, 1), testkit.Key(t, 2)
	pub, unpub := ipns.NameFromPeer(key.ID), ipns.NameFromPeer(other.ID)
	root := cid.MustParse("bafkqaaa")
	rec := testkit.IPNSRecord(t, key, root, 1, time.Now().Add(time.Hour))
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ipns/"+pub.String() {
			w.Header().Set("Content-Type", "application/vnd.ipfs.ipns-record")
			w.Write(rec)
			return
		}
		http.NotFound(w, r)
	}))
	defer origin.Close()
	link := func(host string, k ipns.Name) string {
		return fmt.Sprintf("_dnslink.%s. 60 IN TXT \"dnslink=/ipns/%s\"", host, k)
	}
	deleg := func(host string) string {
		return fmt.Sprintf("_acme-challenge.%s. 60 IN CNAME %s", host, customdomain.ChallengeTarget(host, "cdn.test"))
	}
	// certmagic remembers a failed order of a name for the process's
	// life: the allowed name is new at each run.
	allowed := fmt.Sprintf("ok%x.example.test", rand.Uint64())
	resolver := serveZone(t,
		deleg("nolink.example.test"),
		link("nodeleg.example.test", pub),
		link("unpub.example.test", unpub), deleg("unpub.example.test"),
		link(allowed, pub), deleg(allowed))

	port, metricsPort := freePort(t), freePort(t)
	text := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https disable_redirects
	storage file_system %[1]s
	acme_ca %[2]s/dir
	acme_ca_root %[3]s
	on_demand_tls {
		permission topcdn
	}
}
https://:PORT {
	bind 127.0.0.1
	tls {
		on_demand
	}
	topcdn %[4]s {
		domain    cdn.test
		resolvers %[5]s
		key       %[6]s
	}
}
http://127.0.0.1:%[7]s {
	metrics
}
`, filepath.Join(dir, "caddy"), ca.URL, caRoot, origin.URL, resolver, filepath.Join(dir, "edge.key"), metricsPort)
	if err := loadCaddy(t, text, port); err != nil {
		t.Fatal(err)
	}
	if n := acmeRequests.Load(); n != 0 {
		t.Fatalf("%d ACME requests at start", n)
	}
	handshake := func(name string) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.0.0.1:"+port,
			&tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	}
	// Handshakes for one name at the same time share one check
	// (certmagic lets the later wait for the first): the names used more
	// than once go through one worker, one at a time, and the random ones,
	// each used once, through fifteen.
	const n = 2000
	repeated, random := make(chan string), make(chan string)
	go func() {
		defer close(repeated)
		defer close(random)
		fixed := []string{"nolink.example.test", "nodeleg.example.test", "unpub.example.test", "x.b.cdn.test", "cdn.test"}
		for i := range n {
			if i%4 == 0 {
				repeated <- fixed[i/4%len(fixed)]
			} else {
				random <- fmt.Sprintf("r%x.example%d.test", rand.Uint64(), i%7)
			}
		}
	}()
	var wg sync.WaitGroup
	var ok atomic.Int64
	for w := range 16 {
		names := random
		if w == 0 {
			names = repeated
		}
		wg.Go(func() {
			for name := range names {
				if handshake(name) == nil {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 0 {
		t.Fatalf("%d handshakes succeeded", ok.Load())
	}
	if got := acmeRequests.Load(); got != 0 {
		t.Fatalf("the flood made %d ACME requests, want 0", got)
	}
	results := permissionResults(t, metricsPort)
	total := 0.0
	for _, v := range results {
		total += v
	}
	if total != n {
		t.Fatalf("topcdn_edge_tls_permission_total sums to %v over %v, want %d (one per handshake)", total, results, n)
	}
	if results["limited"] == 0 || results["in_zone"] == 0 {
		t.Fatalf("results %v: want in_zone and limited among them", results)
	}

	// The control: a published, delegated domain is allowed, and
	// certmagic goes to the CA for it. The client's limit is spent: wait
	// for it to refill.
	time.Sleep(3 * time.Second)
	if err := handshake(allowed); err == nil {
		t.Fatal("a handshake succeeded against a CA that issues nothing")
	}
	testkit.WaitFor(t, 10*time.Second, "an ACME request for the allowed domain", func() bool { return acmeRequests.Load() > 0 })
	if got := permissionResults(t, metricsPort)["allowed"]; got != 1 {
		t.Fatalf("allowed %v, want 1", got)
	}
}

// permissionResults reads topcdn_edge_tls_permission_total by result
// from Caddy's metrics.
func permissionResults(t *testing.T, port string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
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
