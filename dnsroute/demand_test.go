package dnsroute

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
)

// demandOf returns the demand the router lists for the edge at ip in the
// epoch starting at epoch, by site.
func (g *geoNet) demandOf(t *testing.T, ip string, epoch int64) map[string]dnsrouteapi.SiteDemand {
	t.Helper()
	out := map[string]dnsrouteapi.SiteDemand{}
	for _, ed := range g.edgeInfo(t, ip).Demand {
		if ed.Epoch == epoch {
			for _, s := range ed.Sites {
				out[s.Site] = s
			}
		}
	}
	return out
}

// TestDemandCounting asks the router over real UDP and TCP sockets and
// checks what it counts as each edge's demand: one unit per client subnet
// however often it asks and by whichever path the answer goes (UDP, its
// ready-response cache, TCP); nothing for queries from an edge's own
// address; at most maxECSUnits units introduced by one source with ECS;
// CID names counted under their CID, IPNS key names under name:KEY.
func TestDemandCounting(t *testing.T) {
	g := newGeoNet(t, Config{BillingEpoch: 24 * time.Hour})
	day := func() int64 { now := time.Now().Unix(); return now - now%86400 }
	epoch := day()
	const frankfurt, tokyo = "127.1.0.1", "127.2.0.1"
	const cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	k51 := g.origin.names[0].IPNS // blog's key, k51…
	steps := []struct {
		name string
		ask  func(t *testing.T)
		ip   string
		site string
		want dnsrouteapi.SiteDemand
	}{
		{"the edges asking for themselves count for no one", func(t *testing.T) {
			for _, ip := range []string{frankfurt, tokyo} {
				for range 5 {
					g.query(t, "udp", ip, newQuery("blog", dns.TypeA))
					g.query(t, "tcp", ip, newQuery("blog", dns.TypeA))
				}
			}
		}, frankfurt, "name:blog", dnsrouteapi.SiteDemand{}},
		{"one client, many queries, UDP and TCP", func(t *testing.T) {
			for range 20 {
				g.query(t, "udp", "127.1.0.5", newQuery("blog", dns.TypeA))
			}
			g.query(t, "tcp", "127.1.0.5", newQuery("blog", dns.TypeA))
			g.query(t, "udp", "127.1.0.6", newQuery("blog", dns.TypeA)) // the same /24
		}, frankfurt, "name:blog", dnsrouteapi.SiteDemand{Site: "name:blog", First: 1}},
		{"the second edge of those answers", func(*testing.T) {}, tokyo, "name:blog",
			dnsrouteapi.SiteDemand{Site: "name:blog", Other: 1}},
		{"another subnet", func(t *testing.T) {
			g.query(t, "udp", "127.2.0.5", newQuery("blog", dns.TypeA))
		}, tokyo, "name:blog", dnsrouteapi.SiteDemand{Site: "name:blog", First: 1, Other: 1}},
		{"one source minting subnets by ECS", func(t *testing.T) {
			for i := range maxECSUnits + 10 {
				g.query(t, "udp", "127.1.9.9", withECS(newQuery("blog", dns.TypeA), fmt.Sprintf("127.1.%d.0/24", 100+i)))
			}
		}, frankfurt, "name:blog", dnsrouteapi.SiteDemand{Site: "name:blog", First: 1 + maxECSUnits, Other: 1}},
		{"the edges asking again, after clients of their subnets", func(t *testing.T) {
			g.query(t, "udp", frankfurt, newQuery(cid+".ipfs", dns.TypeA))
		}, frankfurt, "cid:" + cid, dnsrouteapi.SiteDemand{}},
		{"a CID name", func(t *testing.T) {
			g.query(t, "udp", "127.1.0.5", newQuery(cid+".ipfs", dns.TypeA))
		}, frankfurt, "cid:" + cid, dnsrouteapi.SiteDemand{Site: "cid:" + cid, First: 1}},
		{"an IPNS key name, asked in capitals, counted as the edges record it", func(t *testing.T) {
			g.query(t, "udp", "127.1.0.5", newQuery(strings.ToUpper(k51)+".ipns", dns.TypeA))
			g.query(t, "tcp", "127.1.0.6", newQuery(k51+".ipns", dns.TypeA)) // the same /24
		}, frankfurt, "name:" + k51, dnsrouteapi.SiteDemand{Site: "name:" + k51, First: 1}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.ask(t)
			if day() != epoch {
				t.Skip("the day changed while counting")
			}
			if got := g.demandOf(t, st.ip, epoch)[st.site]; got != st.want {
				t.Fatalf("%s's demand for %s: %+v, want %+v", st.ip, st.site, got, st.want)
			}
		})
	}
}

// TestDemandProbeBytes: the bytes the router's content probes read from
// an edge are reported per epoch, apart from any client's demand, so that
// billing pays the edge for serving them.
func TestDemandProbeBytes(t *testing.T) {
	d := newDemand(time.Minute, 30*time.Second, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	t0 := time.Unix(1893553440, 0) // an epoch's start
	d.probed(t0.Add(time.Second), "edgeA", 100)
	d.probed(t0.Add(59*time.Second), "edgeA", 50)
	d.probed(t0.Add(61*time.Second), "edgeA", 7) // the next epoch
	d.probed(t0, "edgeB", 0)                     // nothing read: nothing said
	got := d.of("edgeA")
	want := []dnsrouteapi.EpochDemand{{Epoch: t0.Unix(), ProbeBytes: 150}, {Epoch: t0.Unix() + 60, ProbeBytes: 7}}
	if len(got) != len(want) {
		t.Fatalf("demand %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Epoch != want[i].Epoch || got[i].ProbeBytes != want[i].ProbeBytes || len(got[i].Sites) != 0 {
			t.Fatalf("demand %+v, want %+v", got, want)
		}
	}
	if got := d.of("edgeB"); len(got) != 0 {
		t.Fatalf("edge never probed: %+v", got)
	}
}
