package dnsroute_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsroute"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
)

// ExampleNew runs a router for cdn.test: DNS on UDP and TCP, the HTTP API,
// and the loop that polls names and checks edges.
func ExampleNew() {
	geo, err := dnsroute.OpenGeoDB("testdata/geo-test.mmdb")
	if err != nil {
		log.Fatal(err)
	}
	defer geo.Close()
	r, err := dnsroute.New(dnsroute.Config{Zone: "cdn.test", Origin: "http://127.0.0.1:8081", GeoIP: geo})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), time.Second)
	defer stop()
	go r.Run(ctx)

	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300})
	if err != nil {
		log.Fatal(err)
	}
	udp, err := r.NewUDPServer(pc)
	if err != nil {
		log.Fatal(err)
	}
	go udp.Serve()
	defer udp.ShutdownContext(context.Background())
	tcp := &dns.Server{Addr: "127.0.0.1:5300", Net: "tcp", Handler: r}
	go tcp.ListenAndServe()
	defer tcp.ShutdownContext(context.Background())
	go http.ListenAndServe("127.0.0.1:8053", r.Handler())
	<-ctx.Done()
}

// ExampleSendHeartbeat is what an edge sends every interval to each router.
func ExampleSendHeartbeat() {
	key, err := identity.Generate(nil)
	if err != nil {
		log.Fatal(err)
	}
	hb := dnsrouteapi.Heartbeat{
		Addrs:      []string{"127.1.0.1"},
		URL:        "http://127.1.0.1:8080", // answers GET /.well-known/topcdn/health
		Load:       120,
		Capacity:   5000,
		IntervalMS: 10000,
	}
	err = dnsrouteapi.SendHeartbeat(context.Background(), http.DefaultClient, "http://127.0.0.1:8053", key, hb)
	if err != nil {
		log.Print(err)
	}
}
