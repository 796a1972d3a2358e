package billing

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// Defaults of Config, and of RunProber's interval.
const (
	DefaultAcceptWindow      = 24 * time.Hour
	DefaultGrace             = time.Hour
	DefaultDemandFactor      = 2
	DefaultDemandWait        = time.Hour
	DefaultDemandHeadroom    = 2
	DefaultDemandLaterWeight = 0.25
	DefaultDemandWindow      = 24 * time.Hour
	DefaultProbeInterval     = 30 * time.Second
)

// Config configures a Ledger. The zero value of each field means its
// default. A negative SettleDelay or Grace means none (zero, which is a
// real value for them); other negative values are refused.
type Config struct {
	// Epoch is the epoch length, whole seconds; edges must use the same.
	// Default: billingapi.DefaultEpoch (1m).
	Epoch time.Duration
	// AcceptWindow is how long after its end an epoch's batches are
	// accepted (unless it is settled). Default: DefaultAcceptWindow (24h).
	AcceptWindow time.Duration
	// SettleDelay is how long after its end an epoch may be settled,
	// leaving edges time to report it. Default: one epoch. Negative: none,
	// an epoch may be settled as soon as it ends.
	SettleDelay time.Duration
	// PricePerGiBServed is paid for each GiB served, to edges and storage
	// peers, in the token's smallest unit. Default: 0 (free).
	PricePerGiBServed int64
	// PricePerGiBMonthStored is paid to storage peers for each GiB held for
	// a Month, prorated per epoch. Default: 0 (free).
	PricePerGiBMonthStored int64
	// Grace is how long a publisher may stay out of funds before it is
	// listed as suspended. Default: DefaultGrace (1h). Negative: none, a
	// publisher out of funds is listed at once.
	Grace time.Duration
	// Logger receives structured logs. Default: none.
	Logger *zap.Logger
	// Registry receives the metrics. Default: a private registry.
	Registry prometheus.Registerer
	// DNS is the DNS router, billing's witness of what each edge could
	// have earned: the demand its answers sent the edge, the bytes of its
	// probes, the epoch byte counter of the edge's heartbeats. Edges are
	// paid within that evidence only: without a router, no edge is paid.
	DNS EdgeDirectory
	// DemandFactor is how many times a site's bytes each client unit the
	// router handed an edge to (first in the answer; later ones count
	// half) may bring the edge per epoch. Default: DefaultDemandFactor (2).
	DemandFactor float64
	// DemandHeadroom bounds an edge's allowance for a site further, once
	// the other edges' clients give a reference: at most DemandHeadroom
	// times the bytes the other edges claimed per client unit the router
	// sent them first (over DemandWindow), per unit it sent this edge
	// first, and DemandLaterWeight of that per later unit. Default:
	// DefaultDemandHeadroom (2). Negative: off, F × the site's bytes alone.
	DemandHeadroom float64
	// DemandLaterWeight is what a unit the router handed the edge in a
	// later place weighs against a first place in the reference bound
	// (clients use a later answer only on failover). Default:
	// DefaultDemandLaterWeight (0.25).
	DemandLaterWeight float64
	// DemandWindow is how far back the reference looks. Default:
	// DefaultDemandWindow (24h).
	DemandWindow time.Duration
	// DemandWait is how long after its end an epoch waits for the
	// router's evidence (read after the settle delay) before it is settled
	// without it: edges of which nothing was read are then refused as
	// no_demand_evidence. Default: DefaultDemandWait (1h).
	DemandWait time.Duration
	// SharedPrefixes are client prefixes that are never an edge's own
	// traffic, though an edge reports or posts from them: in a devnet on
	// loopback, 127.0.0.0/24, where clients, billing and the router share
	// 127.0.0.1 with the edges. Default: none.
	SharedPrefixes []netip.Prefix
	// BackingWait is how long settlement keeps an edge's records of a
	// striped root deferred while no read order the edge signed backs
	// them (storage peers claim with a delay) before refusing them as
	// no_upstream_reads. Default: 10 epochs, at least an hour (a storage
	// peer down for a while claims its orders when it is back).
	BackingWait time.Duration
	// FaultHook, if set, is called at named stages of settlement, for
	// crash tests: "settle-mid" inside an epoch's transaction, after the
	// first publisher debit is written and before its credit.
	FaultHook func(stage string)

	// Testing.
	now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.Epoch == 0 {
		c.Epoch = billingapi.DefaultEpoch
	}
	if c.Epoch < time.Second || c.Epoch%time.Second != 0 {
		return c, fmt.Errorf("billing: epoch %s: want whole seconds, at least 1s", c.Epoch)
	}
	if c.AcceptWindow < 0 || c.DemandFactor < 0 || c.DemandWait < 0 || c.DemandLaterWeight < 0 || c.DemandWindow < 0 || c.BackingWait < 0 {
		return c, errors.New("billing: negative accept window, demand factor, demand wait, later weight, demand window or backing wait")
	}
	if c.AcceptWindow == 0 {
		c.AcceptWindow = DefaultAcceptWindow
	}
	switch {
	case c.SettleDelay == 0:
		c.SettleDelay = c.Epoch
	case c.SettleDelay < 0:
		c.SettleDelay = 0
	}
	switch {
	case c.Grace == 0:
		c.Grace = DefaultGrace
	case c.Grace < 0:
		c.Grace = 0
	}
	if c.PricePerGiBServed < 0 || c.PricePerGiBMonthStored < 0 {
		return c, errors.New("billing: negative price")
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.DemandFactor == 0 {
		c.DemandFactor = DefaultDemandFactor
	}
	if c.DemandWait == 0 {
		c.DemandWait = DefaultDemandWait
	}
	switch {
	case c.DemandHeadroom == 0:
		c.DemandHeadroom = DefaultDemandHeadroom
	case c.DemandHeadroom < 0:
		c.DemandHeadroom = 0 // off
	}
	if c.DemandLaterWeight == 0 {
		c.DemandLaterWeight = DefaultDemandLaterWeight
	}
	if c.DemandWindow == 0 {
		c.DemandWindow = DefaultDemandWindow
	}
	if c.BackingWait == 0 {
		c.BackingWait = max(10*c.Epoch, time.Hour)
	}
	if c.FaultHook == nil {
		c.FaultHook = func(string) {}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}
