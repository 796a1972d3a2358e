package caddymodule

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"github.com/topcdn/topcdn/customdomain"
	"github.com/topcdn/topcdn/edge"
)

func init() {
	caddy.RegisterModule(Permission{})
}

// Permission is the Caddy module tls.permission.topcdn, the permission of
// on-demand TLS: it approves a certificate for a publisher's own domain
// only when the edge serves it, that is when its DNSLink, read through
// real DNS (the topcdn handler's resolvers), names a key the origin
// publishes and its _acme-challenge name is delegated to the router's
// zone (edge.AllowCertificate). Anything else gets no certificate order:
// a flood of made-up server names costs rate-limited DNS lookups at most,
// and is counted in topcdn_edge_tls_permission_total.
//
// It has no options: the zone, the origin and the resolvers are those of
// the config's topcdn handler (the first, if several are configured
// differently). A config with the permission and no topcdn handler fails
// to start.
//
//	{
//		on_demand_tls {
//			permission topcdn
//		}
//	}
type Permission struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (Permission) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.permission.topcdn",
		New: func() caddy.Module { return new(Permission) },
	}
}

// Provision finds the config's topcdn app, whose handlers serve the
// hosts it approves, and tells it a permission depends on them.
func (p *Permission) Provision(ctx caddy.Context) error {
	app, err := ctx.App("topcdn")
	if err != nil {
		return fmt.Errorf("topcdn: permission: %w", err)
	}
	p.app = app.(*App)
	p.app.permissions++
	return nil
}

// Validate checks nothing: the topcdn handlers register as the config is
// provisioned, after the TLS app may have been; App.Start refuses a
// permission without a handler.
func (p *Permission) Validate() error { return nil }

// UnmarshalCaddyfile parses the permission, which takes no arguments and
// no block. Syntax:
//
//	permission topcdn
func (p *Permission) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("permission topcdn takes no options (it uses the topcdn handler's), got %q", d.Val())
	}
	return nil
}

// CertificateAllowed returns nil if the edge may obtain a certificate for
// name, else an error wrapping caddytls.ErrPermissionDenied (a refusal) or
// another (no topcdn handler running).
func (p *Permission) CertificateAllowed(ctx context.Context, name string) error {
	e, err := p.app.edge()
	if err != nil {
		return err
	}
	var client netip.Addr
	if hello, ok := ctx.Value(certmagic.ClientHelloInfoCtxKey).(*tls.ClientHelloInfo); ok && hello != nil && hello.Conn != nil {
		if ap, err := netip.ParseAddrPort(hello.Conn.RemoteAddr().String()); err == nil {
			client = ap.Addr().Unmap()
		}
	}
	if err := e.AllowCertificate(ctx, name, client); err != nil {
		if denied(err) {
			return fmt.Errorf("topcdn: %w: %w", caddytls.ErrPermissionDenied, err)
		}
		return fmt.Errorf("topcdn: %w", err)
	}
	return nil
}

// denied reports whether err is a refusal (a verdict, or the rate
// limits), not a failure to check.
func denied(err error) bool {
	for _, s := range []error{customdomain.ErrBadHost, customdomain.ErrInZone, customdomain.ErrNoDNSLink,
		customdomain.ErrNoDelegation, edge.ErrUnpublished, edge.ErrCheckLimited, edge.ErrNoCustomDomains} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// edge returns the running edge of the config's first topcdn handler,
// starting it if the app has not yet.
func (a *App) edge() (*edge.Edge, error) {
	if len(a.handlers) == 0 {
		return nil, errors.New("topcdn: permission: the config has no topcdn handler")
	}
	h := a.handlers[0]
	if err := h.start(); err != nil {
		return nil, err
	}
	return h.run.inst.edge, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Permission)(nil)
	_ caddy.Validator             = (*Permission)(nil)
	_ caddyfile.Unmarshaler       = (*Permission)(nil)
	_ caddytls.OnDemandPermission = (*Permission)(nil)
)
