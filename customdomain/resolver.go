package customdomain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// DefaultResolvConf is the file NewResolver reads the system's resolvers
// from when given none.
const DefaultResolvConf = "/etc/resolv.conf"

// DefaultTimeout bounds one exchange with one server.
const DefaultTimeout = 2 * time.Second

// NewResolver returns a Resolver that asks the servers at addrs
// (host:port, or a host, port 53), in order until one answers: over UDP,
// again over TCP when the answer is truncated. With no addrs it asks the
// servers of DefaultResolvConf, read now.
func NewResolver(addrs []string) (Resolver, error) {
	if len(addrs) == 0 {
		cc, err := dns.ClientConfigFromFile(DefaultResolvConf)
		if err != nil {
			return nil, fmt.Errorf("customdomain: resolvers: %w", err)
		}
		for _, s := range cc.Servers {
			addrs = append(addrs, net.JoinHostPort(s, cc.Port))
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("customdomain: resolvers: %s names no server", DefaultResolvConf)
		}
	}
	servers := make([]string, len(addrs))
	for i, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, "53")
		}
		servers[i] = a
	}
	return &resolver{servers: servers,
		udp: &dns.Client{Net: "udp", Timeout: DefaultTimeout, UDPSize: dns.DefaultMsgSize},
		tcp: &dns.Client{Net: "tcp", Timeout: DefaultTimeout}}, nil
}

// resolver is NewResolver's Resolver.
type resolver struct {
	servers  []string
	udp, tcp *dns.Client
}

// Exchange asks each server in turn until one answers.
func (r *resolver) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	var errs []error
	for _, s := range r.servers {
		ans, _, err := r.udp.ExchangeContext(ctx, m, s)
		if err == nil && ans.Truncated {
			ans, _, err = r.tcp.ExchangeContext(ctx, m, s)
		}
		if err == nil {
			return ans, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("customdomain: no resolver answered: %w", errors.Join(errs...))
}

var _ Resolver = (*resolver)(nil)
