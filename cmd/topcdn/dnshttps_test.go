package main

import "testing"

// TestHTTPSCertName: the router's certificate is for a name in its zone,
// where it can set the challenge record; ns1.ZONE by default.
func TestHTTPSCertName(t *testing.T) {
	tests := []struct {
		name, zone string
		want       string // "": an error
	}{
		{"", "cdn.test", "ns1.cdn.test"},
		{"", "CDN.test.", "ns1.cdn.test"},
		{"doh.cdn.test", "cdn.test", "doh.cdn.test"},
		{"DoH.CDN.Test.", "cdn.test", "doh.cdn.test"},
		{"cdn.test", "cdn.test", "cdn.test"},
		{"example.org", "cdn.test", ""},
		{"xcdn.test", "cdn.test", ""},
		{"*.cdn.test", "cdn.test", ""},
		{"a..cdn.test", "cdn.test", ""},
	}
	for _, tc := range tests {
		got, err := httpsOptions{name: tc.name}.certName(tc.zone)
		if tc.want == "" {
			if err == nil {
				t.Errorf("--https-name %q in %s: %q, want an error", tc.name, tc.zone, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("--https-name %q in %s: %q, %v; want %q", tc.name, tc.zone, got, err, tc.want)
		}
	}
}
