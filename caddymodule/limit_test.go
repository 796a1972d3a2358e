package caddymodule

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // respond, the http app
)

// runCaddy runs Caddy in this process with caddyfileText, whose "PORT"
// is replaced by a free port, which it returns; Caddy stops when the
// test ends.
func runCaddy(t *testing.T, caddyfileText string) string {
	t.Helper()
	port := freePort(t)
	if err := loadCaddy(t, caddyfileText, port); err != nil {
		t.Fatal(err)
	}
	return port
}

// loadCaddy loads caddyfileText, with "PORT" replaced by port, into the
// Caddy of this process, and stops it when the test ends. A config that
// fails to load leaves the running one running.
func loadCaddy(t *testing.T, caddyfileText, port string) error {
	t.Helper()
	if err := caddy.Load(adapt(t, caddyfileText, port), true); err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil && !errors.Is(err, caddy.ErrNotConfigured) {
			t.Error(err)
		}
	})
	return nil
}

// adapt adapts caddyfileText, with "PORT" replaced by port, to JSON.
func adapt(t *testing.T, caddyfileText, port string) []byte {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(strings.ReplaceAll(caddyfileText, "PORT", port)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// freePort returns a port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// dialFrom opens a connection from the loopback address from to port on
// 127.0.0.1 (or 127.0.0.2, where the server listens too).
func dialFrom(t *testing.T, from, to, port string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", net.JoinHostPort(to, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer says whether the server closed c: a read ends in EOF
// (or a reset) rather than waiting out the guard, a bound against a hang
// far above the timeouts under test.
func closedByServer(c net.Conn, guard time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(guard))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// get sends a request on a fresh connection from from and returns the
// body.
func get(t *testing.T, from, port string) (string, error) {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestConnLimit runs Caddy with topcdn_limit (per_address 4) and a
// header read timeout, and opens half-open connections (connected,
// nothing sent) from one address: those over the cap are closed at once,
// a client from another address is still served, and the header read
// timeout closes the held ones, after which the first address is served
// again.
func TestConnLimit(t *testing.T) {
	port := runCaddy(t, `{
	admin off
	auto_https off
	persist_config off
	servers {
		timeouts {
			read_header 1s
		}
		listener_wrappers {
			topcdn_limit {
				per_address 4
				total 100
			}
		}
	}
}
http://127.0.0.1:PORT {
	respond "served"
}
`)
	var held []net.Conn
	for range 4 {
		held = append(held, dialFrom(t, "127.0.0.1", "127.0.0.1", port))
	}
	// The server has accepted the four when it has closed the fifth:
	// Accept takes them in order.
	for i := range 3 {
		extra := dialFrom(t, "127.0.0.1", "127.0.0.1", port)
		if !closedByServer(extra, 5*time.Second) {
			t.Fatalf("connection %d from an address holding 4 was kept open", 5+i)
		}
	}
	if body, err := get(t, "127.0.0.2", port); err != nil || body != "served" {
		t.Fatalf("a client from another address: %q, %v", body, err)
	}
	for i, c := range held {
		if !closedByServer(c, 30*time.Second) {
			t.Fatalf("half-open connection %d outlived the 1s header read timeout", i)
		}
	}
	if body, err := get(t, "127.0.0.1", port); err != nil || body != "served" {
		t.Fatalf("the first address, after its connections timed out: %q, %v", body, err)
	}
}

// TestConnLimitTotal: the total cap holds across addresses.
func TestConnLimitTotal(t *testing.T) {
	port := runCaddy(t, `{
	admin off
	auto_https off
	persist_config off
	servers {
		listener_wrappers {
			topcdn_limit {
				total 2
			}
		}
	}
}
http://127.0.0.1:PORT {
	respond "served"
}
`)
	dialFrom(t, "127.0.0.1", "127.0.0.1", port)
	dialFrom(t, "127.0.0.2", "127.0.0.1", port)
	if !closedByServer(dialFrom(t, "127.0.0.3", "127.0.0.1", port), 5*time.Second) {
		t.Fatal("a third connection was kept open over total 2")
	}
}

func TestConnLimitCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    ConnLimit
		wantErr bool
	}{
		{name: "defaults", input: "topcdn_limit", want: ConnLimit{}},
		{name: "both", input: "topcdn_limit {\n per_address 8\n total 1000\n}", want: ConnLimit{PerAddress: 8, Total: 1000}},
		{name: "zero", input: "topcdn_limit {\n per_address 0\n}", wantErr: true},
		{name: "not a number", input: "topcdn_limit {\n total many\n}", wantErr: true},
		{name: "unknown option", input: "topcdn_limit {\n rate 5\n}", wantErr: true},
		{name: "argument", input: "topcdn_limit 5", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l ConnLimit
			err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(l, tc.want) {
				t.Fatalf("got %+v, want %+v", l, tc.want)
			}
		})
	}
}

func TestClientPrefix(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
		ok   bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, "203.0.113.7/32", true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:203.0.113.7"), Port: 1}, "203.0.113.7/32", true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64", true},
		{&net.UnixAddr{Name: "/run/caddy.sock", Net: "unix"}, "", false},
	}
	for _, tc := range tests {
		p, ok := clientPrefix(tc.addr)
		if ok != tc.ok || (ok && p.String() != tc.want) {
			t.Errorf("clientPrefix(%v) = %v, %v; want %s, %v", tc.addr, p, ok, tc.want, tc.ok)
		}
	}
}

// TestShippedCaddyfileLimits: the repository's Caddyfile adapts with the
// connection limit and a header read timeout on its server.
func TestShippedCaddyfileLimits(t *testing.T) {
	body, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					ReadHeaderTimeout caddy.Duration    `json:"read_header_timeout"`
					ListenerWrappers  []json.RawMessage `json:"listener_wrappers"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Apps.HTTP.Servers) == 0 {
		t.Fatalf("no server in %s", cfg)
	}
	for name, srv := range c.Apps.HTTP.Servers {
		if srv.ReadHeaderTimeout <= 0 || srv.ReadHeaderTimeout > caddy.Duration(time.Minute) {
			t.Errorf("server %s: read_header_timeout %v", name, time.Duration(srv.ReadHeaderTimeout))
		}
		limit, tls := wrapperAt(srv.ListenerWrappers, `"topcdn_limit"`), wrapperAt(srv.ListenerWrappers, `"tls"`)
		if limit < 0 {
			t.Errorf("server %s: no topcdn_limit listener wrapper: %s", name, cfg)
		}
		// Before tls, or an HTTPS server's connections reach it already
		// wrapped by TLS and hide it from the HTTP server (no HTTP/2).
		if tls < 0 || limit > tls {
			t.Errorf("server %s: topcdn_limit (at %d) must come before tls (at %d): %s", name, limit, tls, cfg)
		}
	}
}

// wrapperAt returns the index of the listener wrapper whose JSON holds s,
// or -1.
func wrapperAt(raws []json.RawMessage, s string) int {
	for i, r := range raws {
		if strings.Contains(string(r), s) {
			return i
		}
	}
	return -1
}
