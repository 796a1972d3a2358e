package devnet

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// Resolve asks the DNS router at addr for host's A records, as a resolver
// at source (nil: any local address) would, and returns the addresses in
// the router's order (nearest edge first).
func Resolve(ctx context.Context, addr, host string, source net.IP) ([]net.IP, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if source != nil {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: source}, Timeout: 2 * time.Second}
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(host), dns.TypeA)
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, fmt.Errorf("devnet: resolving %s at %s: %w", host, addr, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("devnet: resolving %s at %s: %s", host, addr, dns.RcodeToString[r.Rcode])
	}
	var ips []net.IP
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A)
		}
	}
	return ips, nil
}

// waitRouted waits until the router hands out an edge for host: the
// origin's name list reached it and the edges' heartbeats did.
func (n *network) waitRouted(ctx context.Context, addr, host string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ips, err := Resolve(ctx, addr, host, nil)
		if err == nil && len(ips) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devnet: the router does not answer for %s after 30 s (last: %v, %d addresses); see %s",
				host, err, len(ips), logPath(n.cfg.Dir, "dns"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
