// Package dnsroute is the geo-DNS authoritative server of the CDN's zone
// (github.com/miekg/dns): it answers each browser with the nearest healthy
// edges.
//
// A Router serves NAME.ZONE A/AAAA for every name the origin publishes
// (polled from GET ORIGIN/api/v1/names), _dnslink.NAME.ZONE TXT, and
// CID.ipfs.ZONE and KEY.ipns.ZONE for the subdomain gateway. Each answer carries up to
// Config.Edges healthy edges, nearest to the client first (great-circle
// distance between GeoIP locations, weighted by load/capacity). The client
// is located by its EDNS Client Subnet option (RFC 7871), else by the
// resolver's address, in a MaxMind-format City database (GeoDB).
//
// Edges announce themselves with signed heartbeats (Heartbeat, sent by
// SendHeartbeat to POST /api/v1/edges/heartbeat) and are probed at
// URL/.well-known/topcdn/health once per heartbeat interval; one that
// misses 3 heartbeats or fails a probe leaves the answers until it is
// healthy again. Content probes fetch a published root's raw block through
// each edge (URL/ipfs/CID?format=raw) and check it against its CID: an edge
// that serves other bytes, or that billing's prober caught doing so
// (GET BILLING/api/v1/forfeits), is quarantined for Config.Quarantine. Router.Handler serves the heartbeat API, the edge list
// and DNS-over-HTTPS (RFC 8484); a UDPServer and a dns.Server (TCP) serve
// DNS. See README.md.
package dnsroute
