package dnsroute

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/miekg/dns"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

func TestDoH(t *testing.T) {
	g := newGeoNet(t, Config{})
	pack := func(m *dns.Msg) []byte {
		m.Id = 0 // RFC 8484 §4.1
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	get := func(q []byte) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, g.http.URL+DoHPath+"?dns="+base64.RawURLEncoding.EncodeToString(q), nil)
		req.Header.Set("Accept", dohType)
		return req
	}
	post := func(q []byte, ct string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, g.http.URL+DoHPath, bytes.NewReader(q))
		req.Header.Set("Content-Type", ct)
		return req
	}
	tests := []struct {
		name   string
		req    *http.Request
		status int
		want   []string // addresses, in order
		rcode  int
	}{
		{"GET A", get(pack(newQuery("blog", dns.TypeA))), 200, []string{"127.1.0.1", "127.2.0.1"}, dns.RcodeSuccess},
		{"POST A", post(pack(newQuery("blog", dns.TypeA)), dohType), 200, []string{"127.1.0.1", "127.2.0.1"}, dns.RcodeSuccess},
		{"POST A with ECS in Tokyo", post(pack(withECS(newQuery("blog", dns.TypeA), "127.2.0.0/24")), dohType), 200,
			[]string{"127.2.0.1", "127.1.0.1"}, dns.RcodeSuccess},
		{"GET NXDOMAIN", get(pack(newQuery("nope", dns.TypeA))), 200, nil, dns.RcodeNameError},
		{"POST ECS /24 with 4 octets", post(ecsOctets(t, 0), dohType), 200, nil, dns.RcodeFormatError},
		{"GET without dns", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, g.http.URL+DoHPath, nil); return r }(), 400, nil, 0},
		{"GET garbage", get([]byte("garbage")), 400, nil, 0},
		{"POST wrong type", post(pack(newQuery("blog", dns.TypeA)), "text/plain"), 415, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != dohType {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "max-age=30" {
				t.Errorf("Cache-Control %q, want max-age=30", cc)
			}
			var m dns.Msg
			if err := m.Unpack(body); err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tc.rcode || !slices.Equal(addrs(&m), tc.want) {
				t.Errorf("rcode %s, answer %v; want %s, %v", dns.RcodeToString[m.Rcode], addrs(&m), dns.RcodeToString[tc.rcode], tc.want)
			}
		})
	}
}

func TestSuspendedPublisher(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	bad := o.publish(t, "spam")
	var down atomic.Bool
	billing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != SuspendedPath || down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		json.NewEncoder(w).Encode(Suspended{Publishers: []string{bad.ID.String()}})
	}))
	defer billing.Close()
	tr := startRouter(t, Config{Origin: o.srv.URL, Billing: billing.URL})
	e := newFakeEdge(t, "127.1.0.1", o)
	e.beat(t, tr.http.URL, beat)
	testkit.WaitFor(t, 5*time.Second, "a healthy edge", func() bool { return tr.healthyEdges() == 1 })
	testkit.WaitFor(t, 5*time.Second, "the suspension", func() bool { return tr.snap.Load().names["spam"].suspended })

	check := func(t *testing.T) {
		tests := []struct {
			name    string
			qname   string
			qtype   uint16
			answers int
		}{
			{"a paying publisher", "blog", dns.TypeA, 1},
			{"a suspended publisher gets NODATA", "spam", dns.TypeA, 0},
			{"its dnslink stays", "_dnslink.spam", dns.TypeTXT, 1},
			{"a paying publisher's IPNS key name", o.names[0].IPNS + ".ipns", dns.TypeA, 1},
			{"a suspended publisher's IPNS key name gets NODATA", o.names[1].IPNS + ".ipns", dns.TypeA, 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := tr.query(t, "udp", "", newQuery(tc.qname, tc.qtype))
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != tc.answers {
					t.Errorf("rcode %s, %d answers; want NOERROR, %d", dns.RcodeToString[r.Rcode], len(r.Answer), tc.answers)
				}
			})
		}
	}
	check(t)
	// Billing down: the last list holds.
	down.Store(true)
	time.Sleep(3 * 100 * time.Millisecond) // three polls (NamesInterval 100ms)
	t.Run("billing down", check)
}

func TestRateLimit(t *testing.T) {
	o := newFakeOrigin(t)
	tr := startRouter(t, Config{Origin: o.srv.URL, RRLRate: 20})
	c, err := net.Dial("udp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, _ := newQuery("nope", dns.TypeA).Pack()
	const sent = 200
	for range sent {
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
	}
	var answers, truncated int
	buf := make([]byte, 1500)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if m.Truncated {
			truncated++
		} else {
			answers++
		}
	}
	// A burst of 20 (plus what refills while sending), then every second
	// limited response slips as TC.
	if answers < 20 || answers > 60 || truncated < 50 || answers+truncated > 130 {
		t.Errorf("%d answers and %d truncated for %d queries; want ~20 and ~90", answers, truncated, sent)
	}
	// TCP is not limited.
	if r := tr.query(t, "tcp", "", newQuery("nope", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("over TCP: %s", dns.RcodeToString[r.Rcode])
	}
	// Another subnet is not limited.
	if r := tr.query(t, "udp", "127.9.0.1", newQuery("nope", dns.TypeA)); r.Truncated || r.Rcode != dns.RcodeNameError {
		t.Errorf("from another subnet: %v", r)
	}
}

// TestRateLimitPerResponse: rate limiting counts identical responses per
// client subnet, as BIND's RRL does, not every response of the subnet. One
// source asking for 1,000 different names gets every answer; the same
// answer asked again and again, different names that do not exist
// (NXDOMAIN, counted per zone) and CIDs minted under ipfs.ZONE (counted as
// their wildcard) are limited, with truncated responses slipped in.
func TestRateLimitPerResponse(t *testing.T) {
	o := newFakeOrigin(t)
	const names = 1000
	for i := range names {
		o.publish(t, fmt.Sprintf("n%d", i))
	}
	tr := startRouter(t, Config{Origin: o.srv.URL, RRLRate: 20})
	e := newFakeEdge(t, "127.1.0.1", o)
	e.beat(t, tr.http.URL, time.Second)
	testkit.WaitFor(t, 5*time.Second, "a healthy edge", func() bool { return tr.healthyEdges() == 1 })

	cidOf := func(i int) string {
		c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum([]byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		return c.String() + ".ipfs"
	}
	tests := []struct {
		name    string
		src     string // a subnet of its own for each case
		qname   func(i int) string
		rcode   int
		limited bool
	}{
		{"1,000 different names", "127.5.1.1", func(i int) string { return fmt.Sprintf("n%d", i) }, dns.RcodeSuccess, false},
		{"the same name", "127.5.2.1", func(int) string { return "n7" }, dns.RcodeSuccess, true},
		{"different names that do not exist", "127.5.3.1", func(i int) string { return fmt.Sprintf("nope%d", i) }, dns.RcodeNameError, true},
		{"different CIDs", "127.5.4.1", cidOf, dns.RcodeSuccess, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(tc.src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tr.addr)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// In windows of 50, so that the socket buffers lose nothing.
			const window = 50
			var answered, truncated int
			buf := make([]byte, 1500)
			asked := names
			if tc.limited {
				asked = 200
			}
			for i := 0; i < asked; i += window {
				for j := i; j < i+window; j++ {
					q := newQuery(tc.qname(j), dns.TypeA)
					q.Id = uint16(j)
					b, _ := q.Pack()
					if _, err := c.Write(b); err != nil {
						t.Fatal(err)
					}
				}
				for range window {
					c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					n, err := c.Read(buf)
					if err != nil {
						break // the rest were dropped
					}
					var m dns.Msg
					if err := m.Unpack(buf[:n]); err != nil {
						t.Fatal(err)
					}
					switch {
					case m.Truncated:
						truncated++
					case m.Rcode != tc.rcode:
						t.Fatalf("%s: rcode %s, want %s", m.Question[0].Name, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
					default:
						answered++
					}
				}
			}
			if !tc.limited {
				if answered != names || truncated != 0 {
					t.Errorf("%d answered, %d truncated of %d at 20/s per response; want all answered", answered, truncated, names)
				}
				return
			}
			// A burst of 20, what refills while asking, then every
			// second limited response slips as TC.
			if answered < 20 || answered > 100 || truncated < 50 {
				t.Errorf("%d answered, %d truncated of %d at 20/s; want the response limited", answered, truncated, asked)
			}
		})
	}
}

// TestDig checks the answers with ISC dig, as a resolver operator would.
func TestDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv("TOPCDN_REQUIRE_TOOLS") == "1" {
			t.Fatal("dig not found and TOPCDN_REQUIRE_TOOLS=1")
		}
		t.Skip("dig not found (apt-get install bind9-dnsutils)")
	}
	g := newGeoNet(t, Config{})
	host, port, _ := net.SplitHostPort(g.addr)
	tests := []struct {
		name string
		args []string
		want string // dig +short output
	}{
		{"by source: Tokyo", []string{"-b", "127.2.0.5", "blog.cdn.test", "A"}, "127.2.0.1\n127.1.0.1"},
		{"by source: São Paulo", []string{"-b", "127.3.0.5", "blog.cdn.test", "A"}, "127.3.0.1\n127.1.0.1"},
		{"by ECS: Tokyo", []string{"+subnet=127.2.0.0/24", "blog.cdn.test", "A"}, "127.2.0.1\n127.1.0.1"},
		{"over TCP", []string{"+tcp", "-b", "127.2.0.5", "blog.cdn.test", "A"}, "127.2.0.1\n127.1.0.1"},
		{"dnslink", []string{"_dnslink.blog.cdn.test", "TXT"}, `"dnslink=/ipns/` + g.origin.names[0].IPNS + `"`},
		{"NXDOMAIN", []string{"nope.cdn.test", "A"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"@" + host, "-p", port, "+short", "+norec", "+time=2", "+tries=1"}, tc.args...)
			out, err := exec.Command("dig", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("dig %s:\n%s\nwant\n%s", strings.Join(args, " "), got, tc.want)
			}
		})
	}
	// The status line of an unknown name.
	out, err := exec.Command("dig", "@"+host, "-p", port, "+norec", "nope.cdn.test", "A").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "status: NXDOMAIN") || !strings.Contains(string(out), "flags: qr aa") {
		t.Errorf("dig nope.cdn.test: %v\n%s", err, out)
	}
}

// TestDigHTTPS asks the router's DoH handler with ISC dig over HTTPS, as
// topcdn dns --https serves it: dig speaks DoH over HTTP/2 only, verifies
// the server's certificate against --tls-ca for --tls-hostname, and
// posts (+https) or gets (+https-get) the query.
func TestDigHTTPS(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv("TOPCDN_REQUIRE_TOOLS") == "1" {
			t.Fatal("dig not found and TOPCDN_REQUIRE_TOOLS=1")
		}
		t.Skip("dig not found (apt-get install bind9-dnsutils)")
	}
	g := newGeoNet(t, Config{})
	var protos sync.Map // protocols the DoH requests came over
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		protos.Store(req.Proto, true)
		g.Router.Handler().ServeHTTP(w, req)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tests := []struct {
		name    string
		args    []string
		want    string // dig +short output
		wantErr bool
	}{
		{"POST: from 127.0.0.1, Frankfurt first", []string{"+https", "blog.cdn.test", "A"}, "127.1.0.1\n127.2.0.1", false},
		{"GET", []string{"+https-get", "blog.cdn.test", "A"}, "127.1.0.1\n127.2.0.1", false},
		{"POST by ECS: Tokyo", []string{"+https", "+subnet=127.2.0.0/24", "blog.cdn.test", "A"}, "127.2.0.1\n127.1.0.1", false},
		{"dnslink", []string{"+https", "_dnslink.blog.cdn.test", "TXT"}, `"dnslink=/ipns/` + g.origin.names[0].IPNS + `"`, false},
		{"NXDOMAIN", []string{"+https", "nope.cdn.test", "A"}, "", false},
		// httptest's certificate is for example.com.
		{"wrong name for the certificate", []string{"+https", "+tls-hostname=ns1.cdn.test", "blog.cdn.test", "A"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"@" + host, "-p", port, "+tls-ca=" + ca, "+tls-hostname=example.com",
				"+short", "+norec", "+time=3", "+tries=1"}, tc.args...)
			out, err := exec.Command("dig", args...).CombinedOutput()
			got := strings.TrimSpace(string(out))
			if tc.wantErr {
				// dig 9.18 says so on stdout ("TLS peer certificate
				// verification for … failed: hostname mismatch") and exits 0.
				if err == nil && !(strings.Contains(got, "verification") && strings.Contains(got, "failed")) {
					t.Fatalf("dig %s: no error:\n%s", strings.Join(args, " "), got)
				}
				return
			}
			if err != nil {
				t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if got != tc.want {
				t.Errorf("dig %s:\n%s\nwant\n%s", strings.Join(args, " "), got, tc.want)
			}
		})
	}
	var seen []string
	protos.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
	if !slices.Equal(seen, []string{"HTTP/2.0"}) {
		t.Errorf("DoH requests came over %v, want HTTP/2.0 only", seen)
	}
}

// TestMiekgUDPServer serves UDP through miekg/dns's server, as topcdn dns
// does on a wildcard address: the same answers, truncation and rate
// limiting, applied in ServeDNS.
func TestMiekgUDPServer(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	tr := startRouter(t, Config{Origin: o.srv.URL, RRLRate: 20})
	e := newFakeEdge(t, "127.1.0.1", o)
	e.beat(t, tr.http.URL, time.Second)
	testkit.WaitFor(t, 5*time.Second, "a healthy edge", func() bool { return tr.healthyEdges() == 1 })

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Net: "udp", Handler: tr.Router, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()

	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(newQuery("blog", dns.TypeA), pc.LocalAddr().String())
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.1.0.1" {
		t.Fatalf("blog A: %v %v", err, r)
	}
	// A burst, sent without waiting for answers.
	conn, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, _ := newQuery("nope", dns.TypeA).Pack()
	for range 100 {
		conn.Write(q)
	}
	var answered, slipped int
	buf := make([]byte, 1500)
	for {
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if m.Truncated {
			slipped++
		} else {
			answered++
		}
	}
	// The burst left about 19 tokens after the first query.
	if answered < 15 || answered > 40 || slipped < 25 {
		t.Errorf("%d answered, %d slipped of 100 at 20/s; want ~20 and ~40", answered, slipped)
	}
}

// TestRateLimitTableBounded: queries from more subnets than the table
// holds (spoofed sources, within one sweep interval) do not grow it past
// rrlMaxBuckets, and a subnet seen last is limited as it should be.
func TestRateLimitTableBounded(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l := newRRL(2, m)
	now := time.Now()
	var b [16]byte
	b[0] = 0x20
	for i := range rrlMaxBuckets + rrlMaxBuckets/4 {
		b[4], b[5], b[6] = byte(i>>16), byte(i>>8), byte(i) // a new /56 each
		l.check(netip.AddrFrom16(b), 1, now)
	}
	n := 0
	for i := range l.shards {
		n += len(l.shards[i].buckets)
	}
	if n > rrlMaxBuckets {
		t.Fatalf("%d buckets kept, want at most %d", n, rrlMaxBuckets)
	}
	last := netip.MustParseAddr("192.0.2.1")
	got := []rrlAction{l.check(last, 1, now), l.check(last, 1, now), l.check(last, 1, now)}
	if got[0] != rrlAllow || got[1] != rrlAllow || got[2] == rrlAllow {
		t.Fatalf("a fresh subnet at 2/s: %v, want two answers then a limit", got)
	}
}

// TestRoutesOnlyAdmitted: with billing set, the router hands out only the
// edges billing's operator admitted (re-read as they change); an edge
// nobody vouches for gets no clients. While billing cannot be read, the
// last list stands.
func TestRoutesOnlyAdmitted(t *testing.T) {
	o := newFakeOrigin(t)
	o.publish(t, "blog")
	var admitted atomic.Pointer[[]string]
	var down atomic.Bool
	billing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case down.Load():
			http.Error(w, "down", http.StatusBadGateway)
		case r.URL.Path == billingapi.AdmittedPath:
			var resp billingapi.AdmittedResponse
			for _, id := range *admitted.Load() {
				resp.Edges = append(resp.Edges, billingapi.AdmittedEdge{Edge: id})
			}
			json.NewEncoder(w).Encode(resp)
		case r.URL.Path == SuspendedPath:
			json.NewEncoder(w).Encode(Suspended{Publishers: []string{}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer billing.Close()
	a, b := newFakeEdge(t, "127.1.0.1", o), newFakeEdge(t, "127.1.0.2", o)
	admitted.Store(&[]string{a.key.ID.String()})
	tr := startRouter(t, Config{Origin: o.srv.URL, Billing: billing.URL})
	a.beat(t, tr.http.URL, beat)
	b.beat(t, tr.http.URL, beat)
	answers := func() []string { return addrs(tr.query(t, "udp", "", newQuery("blog", dns.TypeA))) }
	testkit.WaitFor(t, 10*time.Second, "only the admitted edge in answers", func() bool {
		return slices.Equal(answers(), []string{"127.1.0.1"})
	})
	admitted.Store(&[]string{a.key.ID.String(), b.key.ID.String()})
	testkit.WaitFor(t, 10*time.Second, "both edges once both are admitted", func() bool { return len(answers()) == 2 })
	down.Store(true)
	admitted.Store(&[]string{})
	time.Sleep(2 * tick)
	if got := answers(); len(got) != 2 {
		t.Fatalf("billing down: answers %v, want the last admitted list to stand", got)
	}
	down.Store(false)
	testkit.WaitFor(t, 10*time.Second, "no edge once none is admitted", func() bool { return len(answers()) == 0 })
}
