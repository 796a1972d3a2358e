package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/libdns/libdns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(DNSProvider{})
}

// challengeWait bounds how long AppendRecords waits for a router that
// does not hand the edge out yet (503): longer than libdns advises ("a
// couple of seconds") on purpose, since Caddy orders certificates as it
// starts, before the router has probed the edge, and a failed order is
// first retried after a minute.
const challengeWait = 60 * time.Second

// DNSProvider is the Caddy module dns.providers.topcdn: a libdns provider
// (RecordAppender and RecordDeleter, what Caddy's ACME issuer takes to
// solve DNS-01 challenges) that has the topcdn DNS router, authoritative
// for the zone, set and remove the challenge TXT records. Each record is
// a dnsrouteapi.Challenge signed with the edge's key: the router sets it
// only for an edge it hands out, at the challenge names of the zone's
// wildcards (*.ZONE, *.ipfs.ZONE, *.ipns.ZONE). So each edge obtains its
// own certificates, with its own keys, and no key leaves it.
//
// Provision only checks, like the topcdn handler's: the key file is read
// (or created, as the handler does) at the first AppendRecords.
type DNSProvider struct {
	// Router is the DNS router's HTTP base URL, e.g.
	// "http://127.0.0.1:8053". Required.
	Router string `json:"router,omitempty"`
	// KeyFile is the edge's key file, the one its topcdn handler uses, so
	// that the router knows the signer as an edge it hands out. Default:
	// the handler's default, topcdn/edge.key in Caddy's data directory.
	KeyFile string `json:"key_file,omitempty"`

	logger *zap.Logger
	client *http.Client
	counts *prometheus.CounterVec
	key    *lazyKey
}

// lazyKey is a key file loaded (or created) when first used.
type lazyKey struct {
	path   string
	logger *zap.Logger
	mu     sync.Mutex
	key    *identity.Key
}

// get returns the key, loading it unless it was; a load that failed is
// tried again at the next get.
func (k *lazyKey) get() (*identity.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key == nil {
		key, err := loadKey(k.path, k.logger)
		if err != nil {
			return nil, err
		}
		k.key = key
	}
	return k.key, nil
}

// CaddyModule returns the Caddy module information.
func (DNSProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dns.providers.topcdn",
		New: func() caddy.Module { return new(DNSProvider) },
	}
}

// Provision checks the configuration and a key file already there, and
// registers the provider's metric. It writes nothing and contacts nobody.
func (p *DNSProvider) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if err := p.Validate(); err != nil {
		return err
	}
	p.key = &lazyKey{path: cmp.Or(p.KeyFile, defaultKeyFile()), logger: p.logger}
	if err := checkKey(p.key.path); err != nil {
		return err
	}
	p.client = &http.Client{Timeout: 10 * time.Second}
	p.counts = prom.CounterVec("edge", "acme_challenges_total",
		"ACME challenge records sent to the DNS router, by op (add, delete) and result (ok, refused, not_ready, limited, invalid, error).",
		"op", "result")
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		// Each issuer of a config provisions its own provider; they count
		// in the first one's collector.
		if err := reg.Register(p.counts); err != nil {
			are := prometheus.AlreadyRegisteredError{}
			if !errors.As(err, &are) {
				return fmt.Errorf("topcdn: dns provider: metrics: %w", err)
			}
			if c, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				p.counts = c
			}
		}
	}
	return nil
}

// Validate checks the configuration; it changes nothing.
func (p *DNSProvider) Validate() error {
	u, err := url.Parse(p.Router)
	if p.Router == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("topcdn: dns provider: router %q: want http(s)://host[:port]", p.Router)
	}
	return nil
}

// AppendRecords has the router set each TXT record of recs (named
// relative to zone, as certmagic names them) and returns them as
// libdns.TXT with the router's TTL. While the router does not hand the
// edge out yet it tries again, for up to a minute. Records of another
// type are an error, and nothing after the first error is sent.
func (p *DNSProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, challengeWait)
	defer cancel()
	return p.send(ctx, dnsrouteapi.OpAdd, zone, recs)
}

// DeleteRecords has the router remove each TXT record of recs that this
// edge set (every value of the edge at a name when a record's value is
// empty). The router does not say whether a record was there, so it
// returns recs as deleted.
func (p *DNSProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.send(ctx, dnsrouteapi.OpDelete, zone, recs)
}

// send sends a challenge of op for each record, stopping at the first
// error, and returns the records sent.
func (p *DNSProvider) send(ctx context.Context, op, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		err := p.sendOne(ctx, op, zone, rr)
		p.counts.WithLabelValues(op, sendResult(err)).Inc()
		if err != nil {
			return out, err
		}
		out = append(out, libdns.TXT{Name: rr.Name, TTL: dnsrouteapi.ChallengeTTL, Text: rr.Data})
	}
	return out, nil
}

func (p *DNSProvider) sendOne(ctx context.Context, op, zone string, rr libdns.RR) error {
	if rr.Type != "TXT" {
		return fmt.Errorf("topcdn: dns provider: %s record %q: only TXT (ACME challenges)", rr.Type, rr.Name)
	}
	if !strings.HasSuffix(zone, ".") {
		zone += "."
	}
	name := libdns.AbsoluteName(rr.Name, zone)
	key, err := p.key.get()
	if err != nil {
		return err
	}
	err = dnsrouteapi.SendChallenge(ctx, p.client, p.Router, key, dnsrouteapi.Challenge{Op: op, Name: name, Value: rr.Data})
	if err != nil {
		p.logger.Warn("acme challenge record refused", zap.String("op", op), zap.String("name", name),
			zap.String("router", p.Router), zap.Error(err))
		return fmt.Errorf("topcdn: dns provider: %w", err)
	}
	p.logger.Debug("acme challenge record sent", zap.String("op", op), zap.String("name", name), zap.String("router", p.Router))
	return nil
}

// sendResult is the metric label of a challenge's outcome.
func sendResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, dnsrouteapi.ErrChallengeRefused):
		return "refused"
	case errors.Is(err, dnsrouteapi.ErrChallengeNotReady):
		return "not_ready"
	case errors.Is(err, dnsrouteapi.ErrChallengeLimited):
		return "limited"
	case errors.Is(err, dnsrouteapi.ErrInvalidChallenge):
		return "invalid"
	default:
		return "error"
	}
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens, in a tls
// block's dns option or the global acme_dns option. Syntax:
//
//	dns topcdn [<router URL>] {
//	    router <router URL>
//	    key    <file>
//	}
//
// The router is given once, as the argument or in the block. It only
// parses: Provision and Validate check.
func (p *DNSProvider) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the provider's name
	if d.NextArg() {
		p.Router = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var dst *string
		switch opt {
		case "router":
			dst = &p.Router
		case "key":
			dst = &p.KeyFile
		default:
			return d.Errf("unknown topcdn dns option %q", opt)
		}
		if *dst != "" {
			return d.Errf("topcdn dns: %s given twice", opt)
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if *dst == "" {
			return d.Errf("topcdn dns: empty %s", opt)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*DNSProvider)(nil)
	_ caddy.Validator       = (*DNSProvider)(nil)
	_ caddyfile.Unmarshaler = (*DNSProvider)(nil)
	_ libdns.RecordAppender = (*DNSProvider)(nil)
	_ libdns.RecordDeleter  = (*DNSProvider)(nil)
)
