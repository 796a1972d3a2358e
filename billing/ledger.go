package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
)

// GiB is the unit prices are per.
const GiB = 1 << 30

// Month is the unit storage prices are per: 30 days.
const Month = 30 * 24 * time.Hour

// TreasuryAccount is the account deposits are drawn from, so that every
// transaction's entries sum to zero; its balance is minus all deposits.
const TreasuryAccount = "treasury"

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
	// addrs are the edges' addresses as the router last listed them, by
	// peer ID (CaptureEvidence), for the self-traffic checks.
	addrs atomic.Pointer[map[string]edgeAddrs]
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
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
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
