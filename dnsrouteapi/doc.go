// Package dnsrouteapi is the DNS router's HTTP API as edges and readers of
// the edge list see it: the signed edge Heartbeat (its type, validation
// and SendHeartbeat), the paths, EdgeInfo, the JSON of GET
// /api/v1/edges that billing and the dashboard read, and the signed ACME
// DNS-01 Challenge (OpenChallenge, SendChallenge) with which an edge has
// the router set the TXT records of its certificates' challenges.
//
// Edges import this package to report themselves; the router imports it to
// verify them. It links none of the router's DNS server, so an edge binary
// does not carry it.
package dnsrouteapi
