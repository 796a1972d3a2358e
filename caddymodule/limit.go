package caddymodule

import (
	"cmp"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(ConnLimit{})
}

// Defaults of ConnLimit.
const (
	// DefaultPerAddress is ConnLimit.PerAddress: room for browsers (six
	// connections a host) of a few hundred people behind one NAT.
	DefaultPerAddress = 256
	// DefaultTotal is ConnLimit.Total: well under the file descriptors
	// a Linux process may open (Go raises the soft limit to the hard
	// one, often 524288), leaving room for the edge's own.
	DefaultTotal = 16384
)

// ConnLimit is the listener wrapper caddy.listeners.topcdn_limit: it caps
// the connections a server holds open at once, per client address and in
// total, and closes a connection over either cap as soon as it is
// accepted, before it is read. Caddy has no such limit: without it one
// client opening connections and sending nothing (slowloris) makes the
// server hold each one until its header read timeout, and tens of
// thousands of them exhaust its file descriptors.
//
// Pair it with a header read timeout (servers { timeouts { read_header
// 10s } }), which frees the connections of a client that holds them
// without sending a request. The counts belong to one loaded config: a
// reload starts them anew while the old config's connections drain.
type ConnLimit struct {
	// PerAddress is the most connections one client address may hold:
	// one IPv4 address, or one IPv6 /64 (what one subscriber gets).
	// Default: DefaultPerAddress (256).
	PerAddress int `json:"per_address,omitempty"`
	// Total is the most connections the server holds. Default:
	// DefaultTotal (16384).
	Total int `json:"total,omitempty"`

	logger *zap.Logger
	held   *connCounts
}

// connCounts are the connections a ConnLimit's listeners hold.
type connCounts struct {
	mu    sync.Mutex
	open  map[netip.Prefix]int // client prefix → connections held
	total int
	// refused counts connections closed over a cap since the last
	// warning; warned is when that was (Unix ns).
	refused atomic.Int64
	warned  atomic.Int64
}

// CaddyModule returns the Caddy module information.
func (ConnLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.topcdn_limit",
		New: func() caddy.Module { return new(ConnLimit) },
	}
}

// Provision sets the defaults.
func (l *ConnLimit) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	l.PerAddress = cmp.Or(l.PerAddress, DefaultPerAddress)
	l.Total = cmp.Or(l.Total, DefaultTotal)
	l.held = &connCounts{open: map[netip.Prefix]int{}}
	return nil
}

// Validate checks the configuration; it changes nothing.
func (l *ConnLimit) Validate() error {
	if l.PerAddress < 0 || l.Total < 0 {
		return errors.New("topcdn_limit: per_address and total cannot be negative")
	}
	return nil
}

// WrapListener returns ln with the caps applied to what it accepts.
func (l *ConnLimit) WrapListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l}
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens, in the
// global options' servers block. Syntax:
//
//	listener_wrappers {
//	    topcdn_limit {
//	        per_address <connections>
//	        total       <connections>
//	    }
//	    tls
//	}
//
// Name it before tls: Caddy puts its TLS step first unless tls is named,
// and a wrapper after it would hide the TLS connection from the HTTP
// server (no r.TLS, no HTTP/2).
func (l *ConnLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // wrapper name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var field *int
		switch d.Val() {
		case "per_address":
			field = &l.PerAddress
		case "total":
			field = &l.Total
		default:
			return d.Errf("unknown topcdn_limit option %q", d.Val())
		}
		var s string
		if !d.AllArgs(&s) {
			return d.ArgErr()
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return d.Errf("topcdn_limit %s %q: want a number of connections, 1 or more", d.Val(), s)
		}
		*field = n
	}
	return nil
}

// clientPrefix is what PerAddress counts by: the IPv4 address, or the
// IPv6 /64, of addr. ok is false for an address without an IP (a Unix
// socket), which only Total counts.
func clientPrefix(addr net.Addr) (p netip.Prefix, ok bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip, ok = ap.Addr(), true
		}
	}
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// acquire counts a connection from p (if hasP) unless that would pass a
// cap, and says whether it did.
func (l *ConnLimit) acquire(p netip.Prefix, hasP bool) bool {
	h := l.held
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total >= l.Total || (hasP && h.open[p] >= l.PerAddress) {
		return false
	}
	h.total++
	if hasP {
		h.open[p]++
	}
	return true
}

// release uncounts a connection acquire counted.
func (l *ConnLimit) release(p netip.Prefix, hasP bool) {
	h := l.held
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	if hasP {
		if h.open[p]--; h.open[p] <= 0 {
			delete(h.open, p)
		}
	}
}

// refuse notes a connection closed over a cap, and warns at most every
// 10 s with the number closed since the last warning, so that a flood
// does not flood the log too.
func (l *ConnLimit) refuse(addr net.Addr) {
	h := l.held
	n := h.refused.Add(1)
	now := time.Now().UnixNano()
	last := h.warned.Load()
	if now-last < int64(10*time.Second) || !h.warned.CompareAndSwap(last, now) {
		return
	}
	h.refused.Add(-n)
	l.logger.Warn("closed connections over the connection limit",
		zap.Int64("closed", n), zap.String("last_client", addr.String()),
		zap.Int("per_address", l.PerAddress), zap.Int("total", l.Total))
}

// limitListener closes the connections over its ConnLimit's caps.
type limitListener struct {
	net.Listener
	l *ConnLimit
}

// Accept returns the next connection within the caps, closing the ones
// over them on the way.
func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, hasP := clientPrefix(c.RemoteAddr())
		if ln.l.acquire(p, hasP) {
			return &limitConn{Conn: c, release: func() { ln.l.release(p, hasP) }}, nil
		}
		c.Close()
		ln.l.refuse(c.RemoteAddr())
	}
}

// limitConn is a counted connection, uncounted once, when first closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and frees its place.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom lets a response copied from a file use the TCP connection's
// sendfile, which the wrapping would otherwise hide.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*ConnLimit)(nil)
	_ caddy.Validator       = (*ConnLimit)(nil)
	_ caddy.ListenerWrapper = (*ConnLimit)(nil)
	_ caddyfile.Unmarshaler = (*ConnLimit)(nil)
	_ io.ReaderFrom         = (*limitConn)(nil)
)
