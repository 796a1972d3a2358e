// Command mkgeo writes the small GeoIP test database dnsroute's tests and
// the devnet use: a MaxMind-format file with the GeoLite2-City field layout
// (location.latitude/longitude, city.names.en, country.iso_code) that
// places loopback subnets in different cities, so that a router, edges and
// clients all on 127.0.0.0/8 see real distances.
//
//	go run ./dnsroute/internal/mkgeo [-o dnsroute/testdata/geo-test.mmdb]
//
// The output is deterministic; TestGeoTestFileIsCurrent checks
// the committed file matches it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// place is one subnet and where it is.
type place struct {
	cidr, city, country string
	lat, lon            float64
}

// places are the test networks. 127.0.0.0/16 (where tests bind their
// servers and most clients sit) is in Frankfurt with 127.1.0.0/16.
var places = []place{
	{"127.0.0.0/16", "Frankfurt am Main", "DE", 50.1109, 8.6821},
	{"127.1.0.0/16", "Frankfurt am Main", "DE", 50.1109, 8.6821},
	{"127.2.0.0/16", "Tokyo", "JP", 35.6762, 139.6503},
	{"127.3.0.0/16", "São Paulo", "BR", -23.5558, -46.6396},
	{"127.4.0.0/16", "Ashburn", "US", 39.0438, -77.4874},
	{"fd00:1::/32", "Frankfurt am Main", "DE", 50.1109, 8.6821},
	{"fd00:2::/32", "Tokyo", "JP", 35.6762, 139.6503},
	{"fd00:3::/32", "São Paulo", "BR", -23.5558, -46.6396},
}

func main() {
	out := flag.String("o", "dnsroute/testdata/geo-test.mmdb", "file to write")
	flag.Parse()
	b, err := build()
	if err == nil {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkgeo:", err)
		os.Exit(1)
	}
}

// build returns the database bytes.
func build() ([]byte, error) {
	t, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "topcdn-Test-City",
		Description:             map[string]string{"en": "topcdn test database: loopback subnets placed in cities"},
		Languages:               []string{"en"},
		IncludeReservedNetworks: true,
		BuildEpoch:              1764000000, // fixed, so the output is reproducible
		RecordSize:              28,
	})
	if err != nil {
		return nil, fmt.Errorf("new tree: %w", err)
	}
	for _, p := range places {
		_, n, err := net.ParseCIDR(p.cidr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.cidr, err)
		}
		rec := mmdbtype.Map{
			"city":    mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(p.city)}},
			"country": mmdbtype.Map{"iso_code": mmdbtype.String(p.country)},
			"location": mmdbtype.Map{
				"latitude":  mmdbtype.Float64(p.lat),
				"longitude": mmdbtype.Float64(p.lon),
			},
		}
		if err := t.Insert(n, rec); err != nil {
			return nil, fmt.Errorf("insert %s: %w", p.cidr, err)
		}
	}
	var buf bytes.Buffer
	if _, err := t.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	return buf.Bytes(), nil
}
