package dnsroute

import (
	"net/netip"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		shouldErr bool
		zone      string
		edges     int
		ttl       time.Duration
		rrl       float64
	}{
		{"defaults", Config{Zone: "cdn.test", Origin: "http://127.0.0.1:8081"}, false, "cdn.test.", 2, 30 * time.Second, 200},
		{"fqdn, upper case", Config{Zone: "CDN.Test.", Origin: "http://o/"}, false, "cdn.test.", 2, 30 * time.Second, 200},
		{"set values", Config{Zone: "x.y", Origin: "https://o", Edges: 5, TTL: time.Minute, RRLRate: -1}, false, "x.y.", 5, time.Minute, -1},
		{"no zone", Config{Origin: "http://o"}, true, "", 0, 0, 0},
		{"root zone", Config{Zone: ".", Origin: "http://o"}, true, "", 0, 0, 0},
		{"bad zone", Config{Zone: "a..b", Origin: "http://o"}, true, "", 0, 0, 0},
		{"no origin", Config{Zone: "cdn.test"}, true, "", 0, 0, 0},
		{"origin not http", Config{Zone: "cdn.test", Origin: "ftp://o"}, true, "", 0, 0, 0},
		{"billing not a URL", Config{Zone: "cdn.test", Origin: "http://o", Billing: "o:80"}, true, "", 0, 0, 0},
		{"negative edges", Config{Zone: "cdn.test", Origin: "http://o", Edges: -1}, true, "", 0, 0, 0},
		{"ttl over a day", Config{Zone: "cdn.test", Origin: "http://o", TTL: 48 * time.Hour}, true, "", 0, 0, 0},
		{"ttl under a second", Config{Zone: "cdn.test", Origin: "http://o", TTL: 500 * time.Millisecond}, true, "", 0, 0, 0},
		{"rrl and content probes off", Config{Zone: "cdn.test", Origin: "http://o", RRLRate: -5, ContentProbeInterval: -time.Second},
			false, "cdn.test.", 2, 30 * time.Second, -5},
		{"negative quarantine", Config{Zone: "cdn.test", Origin: "http://o", Quarantine: -time.Hour}, true, "", 0, 0, 0},
		{"negative content probe timeout", Config{Zone: "cdn.test", Origin: "http://o", ContentProbeTimeout: -1}, true, "", 0, 0, 0},
		{"unspecified ns addr", Config{Zone: "cdn.test", Origin: "http://o", NSAddrs: []netip.Addr{netip.IPv4Unspecified()}}, true, "", 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults()
			if (err != nil) != tc.shouldErr {
				t.Fatalf("err = %v, want error: %v", err, tc.shouldErr)
			}
			if tc.shouldErr {
				return
			}
			if got.Zone != tc.zone || got.Edges != tc.edges || got.TTL != tc.ttl || got.RRLRate != tc.rrl || len(got.NSAddrs) == 0 {
				t.Errorf("got zone %q edges %d ttl %s rrl %v ns %v", got.Zone, got.Edges, got.TTL, got.RRLRate, got.NSAddrs)
			}
			if got.ContentProbeInterval == 0 || got.ContentProbeTimeout <= 0 || got.Quarantine <= 0 {
				t.Errorf("got content probe interval %s, timeout %s, quarantine %s; want defaults",
					got.ContentProbeInterval, got.ContentProbeTimeout, got.Quarantine)
			}
			if (tc.cfg.ContentProbeInterval < 0) != (got.ContentProbeInterval < 0) {
				t.Errorf("content probe interval %s became %s", tc.cfg.ContentProbeInterval, got.ContentProbeInterval)
			}
		})
	}
}
