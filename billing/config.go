package billing

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// Defaults of Config, and of RunProber's interval.
const (
	DefaultAcceptWindow  = 24 * time.Hour
	DefaultGrace         = time.Hour
	DefaultDNSFreeBytes  = 64 << 20
	DefaultProbeInterval = 30 * time.Second
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
	// DNS, if set, enables the DNS cross-check: an edge the router never
	// handed out may claim at most DNSFreeBytes per batch, and a listed
	// edge no more per epoch than its heartbeats' byte counter allows
	// (checkHeartbeats). Unset, the check is skipped and counted as
	// "unconfigured".
	DNS EdgeDirectory
	// DNSFreeBytes is what an edge unknown to DNS may claim per batch.
	// Default: DefaultDNSFreeBytes (64 MiB).
	DNSFreeBytes int64
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
	if c.AcceptWindow < 0 || c.DNSFreeBytes < 0 || c.BackingWait < 0 {
		return c, errors.New("billing: negative accept window, DNS free bytes or backing wait")
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
	if c.DNSFreeBytes == 0 {
		c.DNSFreeBytes = DefaultDNSFreeBytes
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
