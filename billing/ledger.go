package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// GiB is the unit prices are per.
const GiB = 1 << 30

// Month is the unit storage prices are per: 30 days.
const Month = 30 * 24 * time.Hour

// TreasuryAccount is the account deposits are drawn from, so that every
// transaction's entries sum to zero; its balance is minus all deposits.
const TreasuryAccount = "treasury"

// Config configures a Ledger. The zero value of each field means its
// default.
type Config struct {
	// Epoch is the epoch length, whole seconds; edges must use the same.
	// Default: DefaultEpoch.
	Epoch time.Duration
	// AcceptWindow is how long after its end an epoch's batches are
	// accepted (unless it is settled). Default: 24h.
	AcceptWindow time.Duration
	// SettleDelay is how long after its end an epoch may be settled,
	// leaving edges time to report it. Default: one epoch; negative
	// means zero.
	SettleDelay time.Duration
	// PricePerGiBServed is paid for each GiB served, to edges and storage
	// peers, in the token's smallest unit. Default: 0.
	PricePerGiBServed int64
	// PricePerGiBMonthStored is paid to storage peers for each GiB held for
	// a Month, prorated per epoch. Default: 0.
	PricePerGiBMonthStored int64
	// Grace is how long a publisher may stay out of funds before it is
	// listed as suspended. Default: 1h; negative means zero.
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
	// Default: 64 MiB.
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
	if c.AcceptWindow <= 0 {
		c.AcceptWindow = 24 * time.Hour
	}
	switch {
	case c.SettleDelay == 0:
		c.SettleDelay = c.Epoch
	case c.SettleDelay < 0:
		c.SettleDelay = 0
	}
	switch {
	case c.Grace == 0:
		c.Grace = time.Hour
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
	if c.DNSFreeBytes <= 0 {
		c.DNSFreeBytes = 64 << 20
	}
	if c.BackingWait <= 0 {
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

// skew is the clock difference tolerated between edges and billing.
const skew = 5 * time.Second

// Ledger verifies claims and keeps the accounts.
type Ledger struct {
	db       *DB
	content  Content
	operator peer.ID
	opts     Config
	secs     int64
	log      *zap.Logger
	metrics  *metrics
	started  time.Time // when New ran: deferred records wait at least BackingWait from it

	// mu serializes writers: every check-then-write runs under it.
	mu sync.Mutex
	// edgeMu serializes the ingest of one edge's batches (striped by
	// edge), so that the heartbeat check of a part sees the parts of the
	// epoch stored before it.
	edgeMu [64]sync.Mutex

	dnsMu    sync.Mutex
	dnsCache map[string]witness.EdgeInfo
	dnsAt    time.Time
	deferred map[string]time.Time // batches deferred by the heartbeat check: first received
}

// New returns a ledger over db. content answers what is published;
// operator is the billing operator's peer ID, the only signer of deposits.
func New(ctx context.Context, db *DB, content Content, operator peer.ID, cfg Config) (*Ledger, error) {
	o, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("billing: metrics: %w", err)
	}
	l := &Ledger{db: db, content: content, operator: operator, opts: o, secs: int64(o.Epoch / time.Second),
		log: o.Logger, metrics: m, started: o.now()}
	if _, err := db.ExecContext(ctx, db.q(`INSERT INTO meta (key, value) VALUES ('first_epoch', ?) ON CONFLICT (key) DO NOTHING`),
		l.epochOf(o.now())); err != nil {
		return nil, fmt.Errorf("billing: init: %w", err)
	}
	if _, err := db.ExecContext(ctx, db.q(`INSERT INTO accounts (id, kind) VALUES (?, 'treasury') ON CONFLICT (id) DO NOTHING`),
		TreasuryAccount); err != nil {
		return nil, fmt.Errorf("billing: init: %w", err)
	}
	return l, nil
}

// Epoch returns the epoch length.
func (l *Ledger) Epoch() time.Duration { return l.opts.Epoch }

// epochOf returns the start (Unix seconds) of the epoch holding t.
func (l *Ledger) epochOf(t time.Time) int64 {
	u := t.Unix()
	return u - u%l.secs
}

// lastSettled returns the last settled epoch, or 0.
func (l *Ledger) lastSettled(ctx context.Context, q querier) (int64, error) {
	var e sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(epoch) FROM settlements`).Scan(&e); err != nil {
		return 0, fmt.Errorf("billing: last settled epoch: %w", err)
	}
	return e.Int64, nil
}

// querier is *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// rejection is one refusal to record.
type rejection struct {
	account string
	epoch   int64
	kind    string
	ref     string
	reason  billingapi.Reason
	detail  string
	bytes   int64
}

// maxDetail bounds a rejection's detail as stored and logged: the
// message may quote what a claimer sent.
const maxDetail = 1 << 10

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// insertRejections records refusals under their accounts. A refusal
// without an account (its signature did not verify: nobody's) is only
// counted and logged.
func (l *Ledger) insertRejections(ctx context.Context, q querier, rs []rejection) error {
	at := l.opts.now().UnixNano()
	for _, r := range rs {
		if r.account == "" {
			continue
		}
		if _, err := q.ExecContext(ctx, l.db.q(`INSERT INTO rejections (account, epoch, kind, ref, reason, detail, bytes, at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), r.account, r.epoch, r.kind, r.ref, string(r.reason), truncate(r.detail, maxDetail), r.bytes, at); err != nil {
			return fmt.Errorf("billing: record rejection: %w", err)
		}
	}
	return nil
}

// rejectNow records refusals in their own transaction.
func (l *Ledger) rejectNow(ctx context.Context, rs ...rejection) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	if err := l.insertRejections(ctx, tx, rs); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	for _, r := range rs {
		l.metrics.claims.WithLabelValues(r.kind, "rejected", string(r.reason)).Inc()
		l.log.Info("rejected", zap.String("kind", r.kind), zap.String("account", r.account), zap.String("ref", r.ref),
			zap.String("reason", string(r.reason)), zap.String("detail", truncate(r.detail, maxDetail)))
	}
	return nil
}

// ensureAccount creates an account if missing.
func (l *Ledger) ensureAccount(ctx context.Context, tx querier, id, kind string) error {
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO accounts (id, kind) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`), id, kind); err != nil {
		return fmt.Errorf("billing: account %s: %w", id, err)
	}
	return nil
}

// errTransient marks failures worth retrying (the origin or database).
var errTransient = errors.New("temporarily unable to verify")
