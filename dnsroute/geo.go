package dnsroute

import (
	"fmt"
	"math"
	"net/netip"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Location is a point on Earth with an optional display name.
type Location struct {
	Lat, Lon float64
	// City is the English city name, and Country the ISO 3166 code, when
	// known.
	City, Country string
}

// GeoDB looks IP addresses up in a MaxMind-format City database
// (GeoLite2-City, DB-IP City Lite, or the test file this package ships).
// It is safe for concurrent use.
type GeoDB struct {
	r *maxminddb.Reader

	mu    sync.RWMutex
	byOff map[uintptr]geoRecord // decoded records by data offset
}

// geoRecord is a decoded record: a location or the fact there is none.
type geoRecord struct {
	loc Location
	ok  bool
}

// maxGeoRecords bounds the decoded-record cache; past it, it is reset.
const maxGeoRecords = 1 << 16

// cityRecord is the part of a GeoLite2-City record the router reads.
type cityRecord struct {
	City struct {
		Names map[string]string `maxminddb:"names"`
	} `maxminddb:"city"`
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

// OpenGeoDB opens a MaxMind-format database file.
func OpenGeoDB(path string) (*GeoDB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dnsroute: geoip %s: %w", path, err)
	}
	return &GeoDB{r: r, byOff: make(map[uintptr]geoRecord)}, nil
}

// Close releases the database.
func (g *GeoDB) Close() error { return g.r.Close() }

// Lookup returns where ip is, and whether the database knows.
func (g *GeoDB) Lookup(ip netip.Addr) (Location, bool) {
	res := g.r.Lookup(ip.Unmap())
	if res.Err() != nil || !res.Found() {
		return Location{}, false
	}
	off := res.Offset()
	g.mu.RLock()
	rec, hit := g.byOff[off]
	g.mu.RUnlock()
	if hit {
		return rec.loc, rec.ok
	}
	var c cityRecord
	if err := res.Decode(&c); err == nil && c.Location.Latitude != nil && c.Location.Longitude != nil {
		rec = geoRecord{ok: true, loc: Location{
			Lat: *c.Location.Latitude, Lon: *c.Location.Longitude,
			City: c.City.Names["en"], Country: c.Country.ISOCode,
		}}
	}
	g.mu.Lock()
	if len(g.byOff) >= maxGeoRecords {
		clear(g.byOff)
	}
	g.byOff[off] = rec
	g.mu.Unlock()
	return rec.loc, rec.ok
}

// earthRadiusKm is the mean radius of the Earth.
const earthRadiusKm = 6371.0

// distanceKm is the great-circle distance between two points (haversine).
func distanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(math.Min(1, a)))
}
