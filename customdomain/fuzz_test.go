package customdomain

import (
	"errors"
	"strings"
	"testing"
)

// FuzzHost: Host never panics, and a host it takes is lower case, LDH
// labels, outside the zone, and taken again as it is.
func FuzzHost(f *testing.F) {
	for _, s := range []string{"www.example.org", "WWW.example.org.", "cdn.test", "a.cdn.test", "192.0.2.1", "::1", "x", "-a.b", "a..b", "_dnslink.a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		h, err := Host(host, "cdn.test")
		if err != nil {
			if !errors.Is(err, ErrBadHost) && !errors.Is(err, ErrInZone) {
				t.Fatalf("Host(%q): %v is neither sentinel", host, err)
			}
			return
		}
		if h != strings.ToLower(h) || strings.HasSuffix(h, ".cdn.test") || len(ChallengeTarget(h, "cdn.test")) > 254 {
			t.Fatalf("Host(%q) = %q", host, h)
		}
		if again, err := Host(h, "cdn.test"); err != nil || again != h {
			t.Fatalf("Host(%q) = %q, %v; want it again", h, again, err)
		}
	})
}

// FuzzParseDNSLink: ParseDNSLink never panics and refuses with
// ErrNoDNSLink only.
func FuzzParseDNSLink(f *testing.F) {
	f.Add("dnslink=/ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8", "v=spf1")
	f.Add("dnslink=/ipfs/bafkqaaa", "")
	f.Add("dnslink=/ipns/example.com", "dnslink=/ipns/x")
	f.Fuzz(func(t *testing.T, a, b string) {
		key, err := ParseDNSLink([]string{a, b})
		if err != nil {
			if !errors.Is(err, ErrNoDNSLink) {
				t.Fatalf("%v is not ErrNoDNSLink", err)
			}
			return
		}
		if strings.HasPrefix(a, "dnslink=") == strings.HasPrefix(b, "dnslink=") {
			t.Fatalf("key %s from %q %q: want exactly one dnslink= value", key, a, b)
		}
	})
}
