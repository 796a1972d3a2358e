package main

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRunHandshakes: the handshake load completes full handshakes against
// a server presenting the bench certificate, and counts every handshake
// as failed against one presenting another certificate or resuming.
func TestRunHandshakes(t *testing.T) {
	good, err := makeBenchCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := makeBenchCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		serverCert *benchCert
		clientCfg  func() *tls.Config
		wantOK     bool
		wantErr    string
	}{
		{"bench certificate", good, good.handshakeConfig, true, ""},
		{"another certificate", other, good.handshakeConfig, false, "another certificate"},
		// A client with a session cache, primed by a request (which reads
		// the server's ticket), resumes.
		{"resumed session", good, func() *tls.Config {
			c := good.handshakeConfig()
			c.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			return c
		}, false, "session resumed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := tls.LoadX509KeyPair(tc.serverCert.certFile, tc.serverCert.keyFile)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.NotFoundHandler())
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			addr := srv.Listener.Addr().String()
			cfg := tc.clientCfg()
			if cfg.ClientSessionCache != nil {
				prime := cfg.Clone() // the same cache
				prime.NextProtos = []string{"http/1.1"}
				resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: prime}}).Get("https://" + addr + "/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			r := runHandshakes(context.Background(), addr, cfg, 300*time.Millisecond, 2)
			if tc.wantOK {
				if r.Handshakes == 0 || r.Errors != 0 || r.Rate <= 0 || !strings.HasPrefix(r.Proto, "TLS 1.3 ") || !strings.HasSuffix(r.Proto, " h2") {
					t.Fatalf("got %+v, want handshakes over TLS 1.3 and h2, no errors", r)
				}
				return
			}
			// Go's client uses a TLS 1.3 ticket once: after the primed
			// resumption, handshakes are full again.
			if (tc.wantErr == "another certificate" && r.Handshakes > 0) || r.Errors == 0 || !strings.Contains(r.FirstErr, tc.wantErr) {
				t.Fatalf("got %+v, want failures saying %q", r, tc.wantErr)
			}
		})
	}
}

// TestBenchCertClient: the harness's own requests verify the bench
// certificate by name and address, as a browser would.
func TestBenchCertClient(t *testing.T) {
	c, err := makeBenchCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	tests := []struct {
		serverName string
		wantErr    bool
	}{
		{edgeHost, false},
		{"127.0.0.1", false},
		{"other.cdn.test", true},
	}
	for _, tc := range tests {
		cfg := c.clientConfig()
		cfg.ServerName = tc.serverName
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
		if err == nil {
			conn.Close()
		}
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, want error %v", tc.serverName, err, tc.wantErr)
		}
	}
}

func TestSelectServers(t *testing.T) {
	tests := []struct {
		only    string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{srvFileSrvTLS + ", " + srvEdgeHitTLS, []string{srvEdgeHitTLS, srvFileSrvTLS}, false},
		{srvNginx, []string{srvNginx}, false},
		{"apache", nil, true},
	}
	for _, tc := range tests {
		got, err := selectServers(tc.only)
		if (err != nil) != tc.wantErr {
			t.Fatalf("%q: err %v", tc.only, err)
		}
		if tc.only == "" && len(got) != len(edgeServers) {
			t.Errorf("all: got %v", got)
		}
		if tc.want != nil && !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.only, got, tc.want)
		}
	}
}

// TestEdgePrintHTTPSOnly: with -only the HTTPS pair, the report shows
// those servers, their ratio and the handshakes' paired ratio, and none
// of the servers left out.
func TestEdgePrintHTTPSOnly(t *testing.T) {
	b := &edgeBench{cells: map[string]map[string]*edgeCell{}, handshakes: map[string][]handshakeResult{
		srvEdgeHitTLS: {{Rate: 900, CPUPerHS: 400 * time.Microsecond}, {Rate: 500}, {Rate: 1000}},
		srvFileSrvTLS: {{Rate: 1000, CPUPerHS: 500 * time.Microsecond}, {Rate: 1000, CPUPerHS: 500 * time.Microsecond}, {Rate: 1000, CPUPerHS: 500 * time.Microsecond}},
	}}
	for _, k := range []string{srvEdgeHitTLS, srvFileSrvTLS} {
		b.cells[k] = map[string]*edgeCell{}
		for _, o := range edgeObjects {
			b.cells[k][o.name] = &edgeCell{runs: []wrkResult{{RPS: 100}, {RPS: 100}, {RPS: 100}}}
		}
	}
	b.cells[srvEdgeHitTLS][edgeObjects[0].name].runs = []wrkResult{{RPS: 130}, {RPS: 110}, {RPS: 150}}
	// CPU per request is known at 64 KiB only: the median of what was
	// measured, 100 µs against 150.
	b.cells[srvEdgeHitTLS][edgeObjects[1].name].runs[0].CPUPerReq = 100 * time.Microsecond
	b.cells[srvFileSrvTLS][edgeObjects[1].name].runs = []wrkResult{{RPS: 100, CPUPerReq: 140 * time.Microsecond},
		{RPS: 100, CPUPerReq: 150 * time.Microsecond}, {RPS: 100, CPUPerReq: 900 * time.Microsecond}}
	var out strings.Builder
	b.print(&out, time.Second, 3, 64, 1, map[string]string{})
	b.printHandshakes(&out, time.Second, 16)
	got := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"HTTPS: edge hits / caddy file_server ≥ 1.2 1.30 meets goal 1.00 BELOW goal",
		"HTTPS: edge hits / caddy file_server, 1KiB: runs 1.30 1.10 1.50; medians 1.30",
		"edge-hit-https 900 400 0", // the CPU of the run that measured it
		"caddy-file_server-https 1000 500 0",
		"server CPU per handshake, caddy file_server's over the edge's: 1.25",
		"edge / caddy file_server handshakes (median of paired runs): 0.90, goal ≥ 0.9: meets goal (runs [0.90 0.50 1.00])",
		"server CPU per request, the baseline's over the edge's (> 1: the edge spends less; medians of runs): HTTPS: edge hits / caddy file_server: 64KiB 1.50",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, absent := range []string{"caddy-respond", "nginx", "edge misses", "edge-miss"} {
		if strings.Contains(got, absent) {
			t.Errorf("report shows %q, which was not loaded:\n%s", absent, out.String())
		}
	}
}

func TestPairedRatios(t *testing.T) {
	tests := []struct {
		name     string
		a, c     []float64
		wantMed  float64
		wantEach []float64
	}{
		{"three pairs", []float64{2, 3, 9}, []float64{1, 2, 3}, 2, []float64{2, 1.5, 3}},
		{"unmeasured baseline run skipped", []float64{2, 3}, []float64{0, 2}, 1.5, []float64{1.5}},
		{"runs beyond the shorter side ignored", []float64{4}, []float64{2, 5}, 2, []float64{2}},
		{"none", nil, []float64{1}, 0, nil},
	}
	for _, tc := range tests {
		med, each := pairedRatios(tc.a, tc.c)
		if med != tc.wantMed || !slices.Equal(each, tc.wantEach) {
			t.Errorf("%s: %v %v, want %v %v", tc.name, med, each, tc.wantMed, tc.wantEach)
		}
	}
	if got := medianPositive([]time.Duration{0, 3, 1, 0, 2}); got != 2 {
		t.Errorf("medianPositive: %v, want 2 (zeros are runs that measured nothing)", got)
	}
	if got := medianPositive([]time.Duration{0}); got != 0 {
		t.Errorf("medianPositive of nothing measured: %v", got)
	}
}
