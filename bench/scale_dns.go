package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ecsSubnets is how many client /24s per region the DNS load's ECS
// options name: with every published name, almost no (name, subnet) pair
// repeats, so answers are ranked, not served from the response cache.
const ecsSubnets = 256

// ecsQuery packs an A query for fqdn with ID id and an ECS option for
// subnet/24.
func ecsQuery(fqdn string, id uint16, subnet netip.Addr) ([]byte, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeA)
	m.Id = id
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(1232)
	a := subnet.As4()
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IP(a[:])})
	m.Extra = append(m.Extra, o)
	return m.Pack()
}

// ecsSubnet is the client /24 number j (0 ≤ j < 4·ecsSubnets): region j
// mod 4, 127.R.X.0.
func ecsSubnet(j int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, edgeRegions[j%len(edgeRegions)], byte(j / len(edgeRegions) % ecsSubnets), 0})
}

// answered reads a response's header: whether it answers query id with
// NOERROR and at least one record.
func answered(resp []byte, id uint16) bool {
	if len(resp) < 12 || binary.BigEndian.Uint16(resp) != id {
		return false
	}
	rcode := resp[3] & 0x0f
	return rcode == dns.RcodeSuccess && binary.BigEndian.Uint16(resp[6:]) > 0
}

// firstA returns the address in a response's first answer record, if that
// is an A record: the edge the router ranked best for the client.
func firstA(resp []byte) (netip.Addr, bool) {
	if len(resp) < 12 || binary.BigEndian.Uint16(resp[6:]) == 0 {
		return netip.Addr{}, false
	}
	off := 12
	for range binary.BigEndian.Uint16(resp[4:]) {
		if off = skipName(resp, off); off < 0 {
			return netip.Addr{}, false
		}
		off += 4 // type, class
	}
	if off = skipName(resp, off); off < 0 || off+10 > len(resp) {
		return netip.Addr{}, false
	}
	typ, rdlen := binary.BigEndian.Uint16(resp[off:]), binary.BigEndian.Uint16(resp[off+8:])
	off += 10
	if typ != dns.TypeA || rdlen != 4 || off+4 > len(resp) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(resp[off : off+4])), true
}

// skipName returns the offset past the domain name at off in msg, or -1
// if it runs off the end or is malformed.
func skipName(msg []byte, off int) int {
	for off < len(msg) {
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1
		case l&0xc0 == 0xc0: // a compression pointer ends the name
			if off+2 > len(msg) {
				return -1
			}
			return off + 2
		case l&0xc0 != 0:
			return -1
		default:
			off += 1 + l
		}
	}
	return -1
}

// sameRegion reports whether a and b are in the same drill region: the
// same 127.R/16 (see edgeRegions).
func sameRegion(a, b netip.Addr) bool {
	return a.Is4() && b.Is4() && a.As4()[1] == b.As4()[1]
}

// dnsResult is what a DNS load gave.
type dnsResult struct {
	wall     time.Duration
	lat      []time.Duration // of the answered queries
	answered int
	// inRegion counts the answers whose first edge is in the client's
	// region: the geo selection at work.
	inRegion int
	failed   int // lost (no answer within a second) or not NOERROR with records
}

// dnsLoad asks the router at addr for A records of names (in zone, picked
// at random) from random client subnets, inflight queries at once, each
// worker on its own UDP socket, until ctx ends.
func dnsLoad(ctx context.Context, addr string, names []string, zone string, inflight int) (dnsResult, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return dnsResult{}, err
	}
	var (
		mu  sync.Mutex
		res dnsResult
		wg  sync.WaitGroup
	)
	errc := make(chan error, inflight)
	t0 := time.Now()
	for w := range inflight {
		conn, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return dnsResult{}, err
		}
		wg.Go(func() {
			defer conn.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 0x5ca1e))
			buf := make([]byte, 1500)
			var lat []time.Duration
			ok, near, failed := 0, 0, 0
			for ctx.Err() == nil {
				id := uint16(rng.Uint32())
				sub := ecsSubnet(rng.IntN(len(edgeRegions) * ecsSubnets))
				q, err := ecsQuery(names[rng.IntN(len(names))]+"."+zone+".", id, sub)
				if err != nil {
					errc <- err
					return
				}
				start := time.Now()
				if _, err := conn.Write(q); err != nil {
					errc <- err
					return
				}
				conn.SetReadDeadline(start.Add(time.Second))
				got, n := false, 0
				for {
					n, err = conn.Read(buf)
					if err != nil {
						break // lost
					}
					if n >= 2 && binary.BigEndian.Uint16(buf) != id {
						continue // a late answer to a query given up on
					}
					got = answered(buf[:n], id)
					break
				}
				if got {
					ok++
					lat = append(lat, time.Since(start))
					if a, isA := firstA(buf[:n]); isA && sameRegion(a, sub) {
						near++
					}
				} else {
					failed++
				}
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.answered += ok
			res.inRegion += near
			res.failed += failed
			mu.Unlock()
		})
	}
	wg.Wait()
	res.wall = time.Since(t0)
	close(errc)
	if err := <-errc; err != nil {
		return res, err
	}
	return res, nil
}

// askA asks addr once for fqdn's A records and reports whether it got
// some.
func askA(addr, fqdn string) (bool, error) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	id := uint16(rand.Uint32())
	q, err := ecsQuery(fqdn, id, ecsSubnet(0))
	if err != nil {
		return false, err
	}
	if _, err := conn.Write(q); err != nil {
		return false, err
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false, nil
		}
		return false, err
	}
	return answered(buf[:n], id), nil
}
