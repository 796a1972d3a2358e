package dnsrouteapi

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
)

// FuzzHeartbeat feeds arbitrary heartbeat bodies, validly signed, through
// the heartbeat parser. It must never panic, and what it accepts must hold
// the invariants answers rely on.
func FuzzHeartbeat(f *testing.F) {
	key, err := identity.Generate(nil)
	if err != nil {
		f.Fatal(err)
	}
	lat, lon := 50.11, 8.68
	for _, hb := range []Heartbeat{
		{Peer: key.ID.String(), Addrs: []string{"127.1.0.1"}, URL: "http://127.1.0.1:8080", Load: 1, Capacity: 10, IntervalMS: 1000,
			Time: time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)},
		{Peer: key.ID.String(), Addrs: []string{"fd00:1::1", "127.1.0.1"}, URL: "https://edge.example", City: "Frankfurt",
			Lat: &lat, Lon: &lon, IntervalMS: 50, Time: time.Date(2026, 11, 25, 15, 0, 0, 1, time.UTC)},
		{Peer: key.ID.String(), Addrs: []string{"127.1.0.1"}, URL: "http://127.1.0.1:8080", HTTPSURL: "https://127.1.0.1:8443",
			IntervalMS: 2000, Time: time.Date(2026, 11, 25, 15, 0, 0, 2, time.UTC)},
	} {
		b, err := json.Marshal(hb)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := append(append([]byte(TypeHeartbeat), 0), body...)
		sig, err := key.Private.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		env := &identity.Envelope{Type: TypeHeartbeat, Signer: key.ID.String(), Body: body, Sig: sig}
		hb, err := OpenHeartbeat(env)
		if err != nil {
			return
		}
		if hb.PeerID != key.ID || len(hb.IPs) == 0 || len(hb.IPs) > maxAddrs || len(hb.IPs) != len(hb.Addrs) {
			t.Fatalf("accepted %+v", hb)
		}
		for _, a := range hb.IPs {
			if !a.IsValid() || a.IsUnspecified() {
				t.Fatalf("accepted address %v", a)
			}
		}
		if hb.Interval() < minInterval || hb.Load < 0 || hb.Capacity < 0 || (hb.Lat == nil) != (hb.Lon == nil) {
			t.Fatalf("accepted %+v", hb.Heartbeat)
		}
		if u, err := url.Parse(hb.HTTPSURL); hb.HTTPSURL != "" && (err != nil || u.Scheme != "https" || u.Hostname() == "") {
			t.Fatalf("accepted https_url %q", hb.HTTPSURL)
		}
	})
}
