package dnsrouteapi

import (
	"errors"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
)

func TestOpenHeartbeatHTTPSURL(t *testing.T) {
	key, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"https://127.1.0.1:8443", true},
		{"https://edge.example/", true},
		{"https://[2001:db8::1]:8443", true},
		{"http://127.1.0.1:8443", false},
		{"https://", false},
		{"https://127.1.0.1:8443/sub", false},
		{"https://127.1.0.1:8443?x=1", false},
		{"https://u:p@127.1.0.1:8443", false},
		{"127.1.0.1:8443", false},
	}
	for _, tc := range tests {
		hb := Heartbeat{Peer: key.ID.String(), Addrs: []string{"127.1.0.1"}, URL: "http://127.1.0.1:8080", HTTPSURL: tc.url,
			IntervalMS: 1000, Time: time.Now()}
		env, err := key.Sign(TypeHeartbeat, hb)
		if err != nil {
			t.Fatal(err)
		}
		_, err = OpenHeartbeat(env)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalidHeartbeat) {
			t.Errorf("https_url %q: %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}
