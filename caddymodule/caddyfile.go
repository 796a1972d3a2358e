package caddymodule

import (
	"math"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("topcdn", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("topcdn", httpcaddyfile.Before, "file_server")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	topcdn [<origin>] {
//	    origin       <url>
//	    origin_id    <peer ID>
//	    domain       <zone>
//	    memory_cache <size>
//	    disk_cache   <dir> [<size>]
//	    key          <file>
//	    dnslink      <host> </ipfs/cid or /ipns/name path>
//	    router       <DNS router URL>
//	    public_url   <url>
//	    public_addr  <ip> [<ip>...]
//	    city         <name>
//	    location     <lat,lon>
//	    capacity     <requests/s>
//	    heartbeat    <duration>
//	    billing      <billing URL>
//	    billing_epoch <duration>
//	    name_stream  on|off
//	    https_port   <port>
//	}
//
// Sizes take units (256MiB, 1GiB). dnslink may be repeated, one host each.
// It only parses: zero values mean the defaults (Provision) and Validate
// checks the rest.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		h.Origin = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		parse, ok := subdirectives[d.Val()]
		if !ok {
			return d.Errf("unknown topcdn option %q", d.Val())
		}
		if err := parse(h, d); err != nil {
			return err
		}
	}
	return nil
}

// subdirectives parses each option of a topcdn block, by name, from the
// token after it. It is never written to.
var subdirectives = map[string]func(h *Handler, d *caddyfile.Dispenser) error{
	"origin":        stringArg(func(h *Handler) *string { return &h.Origin }),
	"origin_id":     stringArg(func(h *Handler) *string { return &h.OriginID }),
	"domain":        stringArg(func(h *Handler) *string { return &h.Domain }),
	"key":           stringArg(func(h *Handler) *string { return &h.KeyFile }),
	"router":        stringArg(func(h *Handler) *string { return &h.Router }),
	"public_url":    stringArg(func(h *Handler) *string { return &h.PublicURL }),
	"city":          stringArg(func(h *Handler) *string { return &h.City }),
	"location":      stringArg(func(h *Handler) *string { return &h.Location }),
	"billing":       stringArg(func(h *Handler) *string { return &h.Billing }),
	"heartbeat":     durationArg(func(h *Handler) *caddy.Duration { return &h.HeartbeatInterval }),
	"billing_epoch": durationArg(func(h *Handler) *caddy.Duration { return &h.BillingEpoch }),
	"memory_cache":  parseMemoryCache,
	"disk_cache":    parseDiskCache,
	"dnslink":       parseDNSLink,
	"public_addr":   parsePublicAddrs,
	"capacity":      parseCapacity,
	"name_stream":   parseNameStream,
	"https_port":    parseHTTPSPort,
}

// stringArg parses an option of one word into the field field returns.
func stringArg(field func(*Handler) *string) func(*Handler, *caddyfile.Dispenser) error {
	return func(h *Handler, d *caddyfile.Dispenser) error {
		if !d.AllArgs(field(h)) {
			return d.ArgErr()
		}
		return nil
	}
}

// durationArg parses an option of one duration (2s, 1m) into the field
// field returns.
func durationArg(field func(*Handler) *caddy.Duration) func(*Handler, *caddyfile.Dispenser) error {
	return func(h *Handler, d *caddyfile.Dispenser) error {
		opt := d.Val()
		var s string
		if !d.AllArgs(&s) {
			return d.ArgErr()
		}
		dur, err := caddy.ParseDuration(s)
		if err != nil {
			return d.Errf("%s %q: %v", opt, s, err)
		}
		*field(h) = caddy.Duration(dur)
		return nil
	}
}

func parseMemoryCache(h *Handler, d *caddyfile.Dispenser) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return d.Errf("memory_cache %q: %v", s, err)
	}
	h.MemoryCacheBytes = int64(n)
	return nil
}

func parseDiskCache(h *Handler, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.ArgErr()
	}
	h.DiskCacheDir = args[0]
	if len(args) == 2 {
		n, err := humanize.ParseBytes(args[1])
		if err != nil {
			return d.Errf("disk_cache size %q: %v", args[1], err)
		}
		h.DiskCacheBytes = int64(n)
	}
	return nil
}

func parseDNSLink(h *Handler, d *caddyfile.Dispenser) error {
	var host, target string
	if !d.AllArgs(&host, &target) {
		return d.ArgErr()
	}
	if h.DNSLinks == nil {
		h.DNSLinks = map[string]string{}
	}
	h.DNSLinks[host] = target
	return nil
}

func parsePublicAddrs(h *Handler, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	h.PublicAddrs = append(h.PublicAddrs, args...)
	return nil
}

func parseCapacity(h *Handler, d *caddyfile.Dispenser) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) { // JSON has neither
		return d.Errf("capacity %q: want requests per second", s)
	}
	h.Capacity = n
	return nil
}

func parseNameStream(h *Handler, d *caddyfile.Dispenser) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	switch s {
	case "on", "off":
		on := s == "on"
		h.NameStream = &on
		return nil
	}
	return d.Errf("name_stream %q: want on or off", s)
}

func parseHTTPSPort(h *Handler, d *caddyfile.Dispenser) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("https_port %q: want a port number", s)
	}
	h.HTTPSPort = n
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
