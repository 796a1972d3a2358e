package dnsroute

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// ecsWireOK reports whether every client subnet option in the query pkt
// carries exactly the address octets its source prefix needs,
// ceil(SOURCE PREFIX-LENGTH / 8): RFC 7871 §6 asks for FORMERR when it
// has more or fewer. Only the bytes show it: miekg/dns pads the address
// to its family's length and drops the octets past it, so that, without
// this check, an IPv4 address of 5 octets whose last has bits set past a
// /24 would pass as a clean /24. A packet it cannot walk is left to the
// decoder (reported true).
func ecsWireOK(pkt []byte) bool {
	if len(pkt) < 12 {
		return true
	}
	qd := int(binary.BigEndian.Uint16(pkt[4:]))
	rrs := int(binary.BigEndian.Uint16(pkt[6:])) + int(binary.BigEndian.Uint16(pkt[8:])) + int(binary.BigEndian.Uint16(pkt[10:]))
	off := 12
	for range qd {
		_, next, err := dns.UnpackDomainName(pkt, off)
		if err != nil || next+4 > len(pkt) {
			return true
		}
		off = next + 4
	}
	for range rrs {
		_, next, err := dns.UnpackDomainName(pkt, off)
		if err != nil || next+10 > len(pkt) {
			return true
		}
		typ := binary.BigEndian.Uint16(pkt[next:])
		rdlen := int(binary.BigEndian.Uint16(pkt[next+8:]))
		rdata := next + 10
		if rdata+rdlen > len(pkt) {
			return true
		}
		if typ == dns.TypeOPT && !ecsOptionsOK(pkt[rdata:rdata+rdlen]) {
			return false
		}
		off = rdata + rdlen
	}
	return true
}

// ecsOptionsOK checks the client subnet options among an OPT record's
// options (its RDATA).
func ecsOptionsOK(opts []byte) bool {
	for len(opts) >= 4 {
		code := binary.BigEndian.Uint16(opts)
		n := int(binary.BigEndian.Uint16(opts[2:]))
		if 4+n > len(opts) {
			return true // cut short: the decoder's to refuse
		}
		if o := opts[4 : 4+n]; code == dns.EDNS0SUBNET && len(o) >= 4 && len(o)-4 != (int(o[2])+7)/8 {
			return false
		}
		opts = opts[4+n:]
	}
	return true
}
