package dnsroute

import (
	"math"
	"net/netip"
	"slices"
	"testing"
)

func TestDistanceKm(t *testing.T) {
	tests := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want                   float64 // km, ±1%
	}{
		{"same point", 50.11, 8.68, 50.11, 8.68, 0},
		{"Frankfurt–Tokyo", 50.1109, 8.6821, 35.6762, 139.6503, 9340},
		{"Frankfurt–São Paulo", 50.1109, 8.6821, -23.5558, -46.6396, 9800},
		{"antipodes", 0, 0, 0, 180, math.Pi * earthRadiusKm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := distanceKm(tc.lat1, tc.lon1, tc.lat2, tc.lon2)
			if math.Abs(got-tc.want) > tc.want*0.01+1e-9 {
				t.Errorf("%.0f km, want %.0f", got, tc.want)
			}
		})
	}
}

func TestRank(t *testing.T) {
	fra := Location{Lat: 50.11, Lon: 8.68}
	tyo := Location{Lat: 35.68, Lon: 139.65}
	edge := func(name string, loc *Location, util float64) *edgeView {
		e := &edgeView{peer: name, hash: uint64(len(name)) * 0x9e3779b97f4a7c15, util: util,
			v4: netip.MustParseAddr("192.0.2.1")}
		if loc != nil {
			e.loc, e.located = *loc, true
		}
		if name == "v6only" {
			e.v4, e.v6 = netip.Addr{}, netip.MustParseAddr("2001:db8::1")
		}
		return e
	}
	names := func(es []*edgeView) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.peer)
		}
		return out
	}
	tests := []struct {
		name     string
		edges    []*edgeView
		client   *Location
		v6       bool
		n        int
		want     []string
		anyOrder bool
	}{
		{"nearest first", []*edgeView{edge("tyo", &tyo, 0), edge("fra", &fra, 0)}, &fra, false, 2, []string{"fra", "tyo"}, false},
		{"n caps the answer", []*edgeView{edge("tyo", &tyo, 0), edge("fra", &fra, 0)}, &tyo, false, 1, []string{"tyo"}, false},
		{"busier edge of one city goes second", []*edgeView{edge("fra-busy", &fra, 0.8), edge("fra-idle", &fra, 0.1)}, &fra, false, 2,
			[]string{"fra-idle", "fra-busy"}, false},
		{"a full edge goes behind a far one", []*edgeView{edge("fra-full", &fra, 1.0), edge("tyo", &tyo, 0.5)}, &fra, false, 2,
			[]string{"tyo", "fra-full"}, false},
		{"an unlocated edge goes last", []*edgeView{edge("nowhere", nil, 0), edge("tyo", &tyo, 0)}, &fra, false, 2,
			[]string{"tyo", "nowhere"}, false},
		{"unlocated client: by load", []*edgeView{edge("tyo", &tyo, 0.5), edge("fra", &fra, 0.2)}, nil, false, 2,
			[]string{"fra", "tyo"}, false},
		{"family filter", []*edgeView{edge("v6only", &fra, 0), edge("tyo", &tyo, 0)}, &fra, false, 2, []string{"tyo"}, false},
		{"family filter, v6", []*edgeView{edge("v6only", &fra, 0), edge("tyo", &tyo, 0)}, &fra, true, 2, []string{"v6only"}, false},
		{"nothing to hand out", nil, &fra, false, 2, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var loc Location
			if tc.client != nil {
				loc = *tc.client
			}
			got := names(rank(tc.edges, loc, tc.client != nil, 42, tc.v6, tc.n))
			if !slices.Equal(got, tc.want) {
				t.Errorf("%v, want %v", got, tc.want)
			}
		})
	}
}

// TestRankTieBreak checks that equally good edges are spread over client
// subnets, and that one subnet always sees the same order.
func TestRankTieBreak(t *testing.T) {
	fra := Location{Lat: 50.11, Lon: 8.68}
	var edges []*edgeView
	for i := range 4 {
		edges = append(edges, &edgeView{peer: string(rune('a' + i)), hash: mix(uint64(i + 1)), loc: fra, located: true,
			v4: netip.MustParseAddr("192.0.2.1")})
	}
	firsts := map[string]int{}
	for sub := range 64 {
		_, tie := clientKey(netip.AddrFrom4([4]byte{10, 0, byte(sub), 1}), nil)
		a := rank(edges, fra, true, tie, false, 2)
		b := rank(edges, fra, true, tie, false, 2)
		if a[0] != b[0] || a[1] != b[1] {
			t.Fatal("one subnet got two orders")
		}
		firsts[a[0].peer]++
	}
	if len(firsts) != 4 {
		t.Errorf("first edges over 64 subnets: %v, want all 4 used", firsts)
	}
}

func TestGeoDB(t *testing.T) {
	g, err := OpenGeoDB(testGeo)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	tests := []struct {
		ip      string
		city    string
		country string
		found   bool
	}{
		{"127.0.0.1", "Frankfurt am Main", "DE", true},
		{"127.1.0.1", "Frankfurt am Main", "DE", true},
		{"127.2.0.5", "Tokyo", "JP", true},
		{"127.3.255.255", "São Paulo", "BR", true},
		{"::ffff:127.2.0.1", "Tokyo", "JP", true},
		{"fd00:2::1", "Tokyo", "JP", true},
		{"127.200.0.1", "", "", false},
		{"192.0.2.1", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			for range 2 { // the second lookup comes from the decoded-record cache
				loc, ok := g.Lookup(netip.MustParseAddr(tc.ip))
				if ok != tc.found || loc.City != tc.city || loc.Country != tc.country {
					t.Errorf("%+v %v, want %s/%s %v", loc, ok, tc.city, tc.country, tc.found)
				}
			}
		})
	}
	if _, err := OpenGeoDB("testdata/nonexistent.mmdb"); err == nil {
		t.Error("opening a missing file: no error")
	}
}
