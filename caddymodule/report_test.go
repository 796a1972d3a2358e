package caddymodule

import "testing"

func TestHTTPSURL(t *testing.T) {
	tests := []struct {
		publicURL string
		port      int
		want      string
	}{
		{"http://127.1.0.1:8080", 8443, "https://127.1.0.1:8443"},
		{"http://edge.example.net", 443, "https://edge.example.net:443"},
		{"http://[2001:db8::1]:80", 443, "https://[2001:db8::1]:443"},
		{"http://127.1.0.1:8080", 0, ""},
		{"", 8443, ""},
	}
	for _, tc := range tests {
		h := Handler{PublicURL: tc.publicURL, HTTPSPort: tc.port}
		if got := h.httpsURL(); got != tc.want {
			t.Errorf("public_url %q, https_port %d: %q, want %q", tc.publicURL, tc.port, got, tc.want)
		}
	}
}
