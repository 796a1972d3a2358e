package edge

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHTTPSRedirect: with an HTTPS port, plain HTTP by name is sent to
// HTTPS (308, same path and query), and the router's and billing's ways
// in (the health path, IP addresses, the public URL's host) are served;
// the gateway sees X-Forwarded-Proto "https" on TLS only, whatever the
// client sent.
func TestHTTPSRedirect(t *testing.T) {
	tests := []struct {
		name, target, host, xfh string
		tls                     bool
		port                    int
		wantLocation            string // "": served
		wantProto               string // X-Forwarded-Proto the gateway sees
	}{
		{name: "site by name", target: "/docs/?a=1", host: "blog.cdn.test:8080", port: 8443,
			wantLocation: "https://blog.cdn.test:8443/docs/?a=1"},
		{name: "subdomain gateway", target: "/", host: "bafkqaaa.ipfs.cdn.test", port: 8443,
			wantLocation: "https://bafkqaaa.ipfs.cdn.test:8443/"},
		{name: "port 443 is left out", target: "/x", host: "BLOG.cdn.test.", port: 443,
			wantLocation: "https://blog.cdn.test/x"},
		{name: "X-Forwarded-Host is the host answered for", target: "/", host: "127.1.0.1:8080", xfh: "blog.cdn.test", port: 8443,
			wantLocation: "https://blog.cdn.test:8443/"},
		{name: "health path", target: HealthPath, host: "blog.cdn.test", port: 8443},
		{name: "IPv4 address", target: "/ipfs/bafkqaaa", host: "127.1.0.1:8080", port: 8443},
		{name: "IPv6 address", target: "/ipfs/bafkqaaa", host: "[::1]:8080", port: 8443},
		{name: "public URL's host", target: "/ipfs/bafkqaaa", host: "edge1.example.net:8080", port: 8443},
		{name: "no Host", target: "/", host: "", port: 8443},
		{name: "no HTTPS port", target: "/", host: "blog.cdn.test", port: 0},
		{name: "TLS", target: "/", host: "blog.cdn.test:8443", tls: true, port: 8443, wantProto: "https"},
		{name: "TLS without an HTTPS port", target: "/", host: "blog.cdn.test", tls: true, wantProto: "https"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &Edge{cfg: Config{HTTPSPort: tc.port, PublicHost: "edge1.example.net"}}
			var proto *string
			h := e.withHTTPS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p := r.Header.Get("X-Forwarded-Proto")
				proto = &p
			}))
			req := httptest.NewRequest(http.MethodGet, tc.target, nil)
			req.Host = tc.host
			req.Header.Set("X-Forwarded-Proto", "spoofed")
			if tc.xfh != "" {
				req.Header.Set("X-Forwarded-Host", tc.xfh)
			}
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			} else {
				req.TLS = nil
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tc.wantLocation != "" {
				if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tc.wantLocation || proto != nil {
					t.Fatalf("got %d Location %q (passed on: %v), want 308 to %s", rec.Code, rec.Header().Get("Location"), proto != nil, tc.wantLocation)
				}
				return
			}
			if proto == nil {
				t.Fatalf("not passed on: %d Location %q", rec.Code, rec.Header().Get("Location"))
			}
			if *proto != tc.wantProto {
				t.Fatalf("X-Forwarded-Proto %q, want %q", *proto, tc.wantProto)
			}
		})
	}
}

func TestNewRefusesBadHTTPSPort(t *testing.T) {
	for _, port := range []int{-1, 65536} {
		if _, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1", HTTPSPort: port}); err == nil {
			t.Errorf("HTTPSPort %d accepted", port)
		}
	}
}

// TestSubdomainRedirectKeepsHTTPS: over TLS, the gateway's redirect of
// the path gateway to the subdomain gateway stays on https://, and over
// plain HTTP (an edge without an HTTPS port) on http://, even when the
// client claims otherwise.
func TestSubdomainRedirectKeepsHTTPS(t *testing.T) {
	e, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	const cidv1 = "bafkqaaa"
	for _, tc := range []struct {
		name string
		tls  bool
		want string
	}{
		{"TLS", true, "https://" + cidv1 + ".ipfs.cdn.test/"},
		{"plain HTTP claiming https", false, "http://" + cidv1 + ".ipfs.cdn.test/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/ipfs/"+cidv1+"/", nil)
			req.Host = "cdn.test"
			req.TLS = nil
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			} else {
				req.Header.Set("X-Forwarded-Proto", "https")
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if loc := rec.Header().Get("Location"); rec.Code/100 != 3 || loc != tc.want {
				t.Fatalf("got %d Location %q, want a redirect to %s", rec.Code, loc, tc.want)
			}
		})
	}
}
