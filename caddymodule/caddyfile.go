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
//	}
//
// Sizes take units (256MiB, 1GiB). dnslink may be repeated, one host each.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		h.Origin = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "origin":
			if !d.AllArgs(&h.Origin) {
				return d.ArgErr()
			}
		case "origin_id":
			if !d.AllArgs(&h.OriginID) {
				return d.ArgErr()
			}
		case "domain":
			if !d.AllArgs(&h.Domain) {
				return d.ArgErr()
			}
		case "key":
			if !d.AllArgs(&h.KeyFile) {
				return d.ArgErr()
			}
		case "memory_cache":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(s)
			if err != nil {
				return d.Errf("memory_cache %q: %v", s, err)
			}
			h.MemoryCacheBytes = int64(n)
		case "disk_cache":
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
		case "dnslink":
			var host, target string
			if !d.AllArgs(&host, &target) {
				return d.ArgErr()
			}
			if h.DNSLinks == nil {
				h.DNSLinks = map[string]string{}
			}
			h.DNSLinks[host] = target
		case "router":
			if !d.AllArgs(&h.Router) {
				return d.ArgErr()
			}
		case "public_url":
			if !d.AllArgs(&h.PublicURL) {
				return d.ArgErr()
			}
		case "public_addr":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.PublicAddrs = append(h.PublicAddrs, args...)
		case "city":
			if !d.AllArgs(&h.City) {
				return d.ArgErr()
			}
		case "location":
			if !d.AllArgs(&h.Location) {
				return d.ArgErr()
			}
		case "capacity":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(n) || math.IsInf(n, 0) { // JSON has neither
				return d.Errf("capacity %q: want requests per second", s)
			}
			h.Capacity = n
		case "heartbeat", "billing_epoch":
			opt := d.Val()
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("%s %q: %v", opt, s, err)
			}
			if opt == "heartbeat" {
				h.HeartbeatInterval = caddy.Duration(dur)
			} else {
				h.BillingEpoch = caddy.Duration(dur)
			}
		case "billing":
			if !d.AllArgs(&h.Billing) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown topcdn option %q", d.Val())
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
