// Package dnsroute will be the geo-DNS authoritative server
// (github.com/miekg/dns) that answers each browser with nearby healthy
// edges.
//
// Not implemented yet: this package only reserves its place in the layout.
// The work is tracked in issue 6.
package dnsroute
