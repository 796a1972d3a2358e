package devnet

import _ "embed"

// geoDB is the DNS router's geo database for the devnet: a MaxMind-format
// file placing 127.1.0.0/16 in Frankfurt, 127.2.0.0/16 in Tokyo and
// 127.3.0.0/16 in São Paulo (a copy of dnsroute/testdata/geo-test.mmdb).
//
//go:embed geo.mmdb
var geoDB []byte
