package caddymodule

import (
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
		default:
			return d.Errf("unknown topcdn option %q", d.Val())
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
