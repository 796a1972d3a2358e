package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// dnsProc is a running `topcdn dns` process.
type dnsProc struct {
	*service
	dnsAddr string // host:port, UDP and TCP
}

// startDNS runs `topcdn dns` and waits for both of its listening lines.
func startDNS(t *testing.T, bin string, args ...string) *dnsProc {
	t.Helper()
	p := testkit.Start(t, bin, append([]string{"dns"}, args...)...)
	dnsAddr := p.WaitLine(t, "dns listening on udp+tcp ")
	return &dnsProc{service: listening(t, p), dnsAddr: dnsAddr}
}

// e2eEdge is a stand-in edge: its health endpoint on a chosen loopback
// address, content (/ipfs/…) passed through from the origin, and
// heartbeats to the router.
type e2eEdge struct {
	key  *identity.Key
	srv  *httptest.Server
	stop context.CancelFunc
	done chan struct{}
}

// startE2EEdge starts a stand-in edge on ip that sends heartbeats to the
// router every iv and passes content requests on to originURL; a liar
// flips a byte of every content response.
func startE2EEdge(t *testing.T, ip, routerURL, originURL string, iv time.Duration, liar bool) *e2eEdge {
	t.Helper()
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ou, err := url.Parse(originURL)
	if err != nil {
		t.Fatal(err)
	}
	content := httputil.NewSingleHostReverseProxy(ou)
	if liar {
		content.ModifyResponse = func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if len(b) > 0 {
				b[0] ^= 1
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		}
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/ipfs/") {
			content.ServeHTTP(w, r)
			return
		}
		if r.URL.Path != dnsrouteapi.HealthPath {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"peer": k.ID.String()})
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	e := &e2eEdge{key: k, srv: srv, stop: cancel, done: make(chan struct{})}
	hb := dnsrouteapi.Heartbeat{Addrs: []string{ip}, URL: srv.URL, Load: 5, Capacity: 100, IntervalMS: iv.Milliseconds()}
	go func() {
		defer close(e.done)
		tk := time.NewTicker(iv)
		defer tk.Stop()
		for {
			if err := dnsrouteapi.SendHeartbeat(ctx, http.DefaultClient, routerURL, k, hb); err != nil && ctx.Err() == nil {
				t.Errorf("heartbeat of %s: %v", ip, err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-e.done })
	return e
}

func TestDNSEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	testkit.Run(t, bin, "keygen", "--out", key)
	o := startOrigin(t, bin, filepath.Join(dir, "origin"))
	site := filepath.Join(dir, "site")
	copyDir(t, "../../examples/site", site)
	root := strings.TrimSpace(testkit.Run(t, bin, "publish", site, "--name", "blog", "--origin", o.url, "--key", key, "-Q"))
	ni := lookupName(t, o.url, "blog")

	r := startDNS(t, bin, "--zone", "cdn.test", "--origin", o.url, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--geoip", "../../dnsroute/testdata/geo-test.mmdb", "--names-interval", "200ms", "--log-level", "debug",
		"--content-probe-interval", "200ms")
	checkRoleMetrics(t, r.url)
	const iv = 200 * time.Millisecond
	startE2EEdge(t, "127.1.0.1", r.url, o.url, iv, false)
	tokyo := startE2EEdge(t, "127.2.0.1", r.url, o.url, iv, false)
	// São Paulo's edge serves tampered bytes: it never enters the answers.
	startE2EEdge(t, "127.3.0.1", r.url, o.url, iv, true)
	edges := func(t *testing.T) map[string]dnsrouteapi.EdgeInfo {
		var list []dnsrouteapi.EdgeInfo
		testkit.GetJSON(t, r.url+dnsrouteapi.EdgesPath, &list)
		out := map[string]dnsrouteapi.EdgeInfo{}
		for _, e := range list {
			out[e.Addrs[0]] = e
		}
		return out
	}
	if !t.Run("two edges are healthy, the lying one quarantined", func(t *testing.T) {
		testkit.WaitFor(t, 10*time.Second, "two healthy edges and a quarantined one", func() bool {
			e := edges(t)
			return e["127.1.0.1"].Healthy && e["127.2.0.1"].Healthy && e["127.3.0.1"].Quarantine != ""
		})
	}) {
		return
	}

	ask := func(t *testing.T, network, laddr string, q *dns.Msg) *dns.Msg {
		t.Helper()
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		if laddr != "" {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(laddr)}}
			if network == "tcp" {
				c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(laddr)}}
			}
		}
		m, _, err := c.Exchange(q, r.dnsAddr)
		if err != nil {
			t.Fatalf("%s: %v", q.Question[0].String(), err)
		}
		return m
	}
	query := func(name string, qt uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qt)
		return m
	}
	if !t.Run("the router knows the name", func(t *testing.T) {
		testkit.WaitFor(t, 10*time.Second, "the name blog", func() bool {
			return len(ask(t, "udp", "", query("blog.cdn.test", dns.TypeA)).Answer) == 2
		})
	}) {
		return
	}
	var ecsTokyo = func() *dns.Msg {
		m := query("blog.cdn.test", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
			SourceNetmask: 24, Address: net.ParseIP("127.2.9.0").To4()})
		return m
	}
	tests := []struct {
		name    string
		network string
		laddr   string
		q       *dns.Msg
		rcode   int
		want    []string // answer records' data, in order
	}{
		{"from Frankfurt", "udp", "127.1.0.7", query("blog.cdn.test", dns.TypeA), dns.RcodeSuccess, []string{"127.1.0.1", "127.2.0.1"}},
		{"from Tokyo", "udp", "127.2.0.5", query("blog.cdn.test", dns.TypeA), dns.RcodeSuccess, []string{"127.2.0.1", "127.1.0.1"}},
		{"from São Paulo, whose edge lies", "udp", "127.3.0.5", query("blog.cdn.test", dns.TypeA), dns.RcodeSuccess, []string{"127.1.0.1", "127.2.0.1"}},
		{"from Tokyo over TCP", "tcp", "127.2.0.5", query("blog.cdn.test", dns.TypeA), dns.RcodeSuccess, []string{"127.2.0.1", "127.1.0.1"}},
		{"ECS in Tokyo", "udp", "127.1.0.7", ecsTokyo(), dns.RcodeSuccess, []string{"127.2.0.1", "127.1.0.1"}},
		{"dnslink", "udp", "", query("_dnslink.blog.cdn.test", dns.TypeTXT), dns.RcodeSuccess, []string{"dnslink=/ipns/" + ni.IPNS}},
		{"the root CID's subdomain", "udp", "127.2.0.5", query(root+".ipfs.cdn.test", dns.TypeA), dns.RcodeSuccess, []string{"127.2.0.1", "127.1.0.1"}},
		{"unknown name", "udp", "", query("nope.cdn.test", dns.TypeA), dns.RcodeNameError, nil},
	}
	t.Run("answers by where the query comes from", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				m := ask(t, tc.network, tc.laddr, tc.q)
				var got []string
				for _, rr := range m.Answer {
					switch rr := rr.(type) {
					case *dns.A:
						got = append(got, rr.A.String())
					case *dns.TXT:
						got = append(got, strings.Join(rr.Txt, ""))
					}
				}
				if m.Rcode != tc.rcode || !slices.Equal(got, tc.want) {
					t.Errorf("%s %v, want %s %v", dns.RcodeToString[m.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
				}
			})
		}
	})

	t.Run("DoH answers the same", func(t *testing.T) {
		q, _ := query("blog.cdn.test", dns.TypeA).Pack()
		resp, err := http.Get(r.url + "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(q))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var doh dns.Msg
		if err := doh.Unpack(body); err != nil || len(doh.Answer) != 2 {
			t.Errorf("DoH: %v, %v", err, doh.Answer)
		}
	})

	if !t.Run("a stopped edge leaves the answers within 3 intervals", func(t *testing.T) {
		tokyo.stop()
		<-tokyo.done
		stopped := time.Now()
		testkit.WaitFor(t, 5*time.Second, "the Tokyo edge to leave", func() bool {
			a := ask(t, "udp", "127.2.0.5", query("blog.cdn.test", dns.TypeA)).Answer
			return len(a) == 1 && a[0].(*dns.A).A.String() == "127.1.0.1"
		})
		if took := time.Since(stopped); took > 3*iv+300*time.Millisecond {
			t.Errorf("the Tokyo edge left after %s, want about 3 intervals (%s)", took, 3*iv)
		}
		if edges(t)["127.2.0.1"].Healthy {
			t.Error("/api/v1/edges still lists the Tokyo edge as healthy")
		}
	}) {
		return
	}

	t.Run("the metrics count queries, answers, edges and probes", func(t *testing.T) {
		_, metrics := testkit.Get(t, r.url+"/metrics", "")
		for _, want := range []string{`topcdn_dnsroute_queries_total{rcode="NXDOMAIN",type="A"}`, "topcdn_dnsroute_answers_total{edge=",
			`topcdn_dnsroute_edges{state="healthy"} 1`, `topcdn_dnsroute_content_probes_total{result="ok"}`,
			`topcdn_dnsroute_content_probes_total{result="lied"} 1`, `topcdn_dnsroute_quarantined_edges 1`} {
			if !strings.Contains(string(metrics), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}
