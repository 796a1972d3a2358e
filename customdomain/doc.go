// Package customdomain checks a publisher's own domain before the network
// serves it or gets a certificate for it: the host's DNSLink, read
// through real DNS, must name an IPNS key, and its ACME DNS-01 challenge
// name must be delegated, by CNAME, to the name the DNS router answers
// for it in the network's zone (ChallengeTarget).
//
// The publisher of www.example.org, whose site is the IPNS key k51…,
// sets at its DNS host:
//
//	_dnslink.www.example.org.        TXT   "dnslink=/ipns/k51…"
//	www.example.org.                 CNAME notes.cdn.test.
//	_acme-challenge.www.example.org. CNAME www.example.org._acme.cdn.test.
//
// The edge (its on-demand TLS permission) and the router (before it sets
// a challenge TXT) both call Check; whether the key is published is the
// caller's question. The package is a leaf: it imports miekg/dns and
// boxo's ipns only.
package customdomain
