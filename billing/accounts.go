package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

// Account returns one account. A peer ID the ledger has no entries for
// yet has balance 0; an ID that is no peer ID is refused as malformed. A
// publisher key linked to an account names it as its Payer.
func (l *Ledger) Account(ctx context.Context, id string) (*billingapi.Account, error) {
	if err := checkAccountID(id); err != nil {
		return nil, err
	}
	var (
		a   = billingapi.Account{ID: id}
		out int64
		err error
	)
	if a.Payer, err = l.payer(ctx, id); err != nil {
		return nil, err
	}
	err = l.db.QueryRowContext(ctx, l.db.q(`SELECT kind, balance, out_since FROM accounts WHERE id = ?`), id).Scan(&a.Kind, &a.Balance, &out)
	if errors.Is(err, sql.ErrNoRows) {
		// A party with no entries yet (an edge before its first
		// settlement, a publisher before its deposit) has nothing: 0.
		return &a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("billing: account %s: %w", id, err)
	}
	if out != 0 {
		t := time.Unix(0, out).UTC()
		a.OutOfFundsSince = &t
	}
	return &a, nil
}

// checkAccountID accepts the IDs an account can have: a peer ID or
// TreasuryAccount.
func checkAccountID(id string) error {
	if id == TreasuryAccount {
		return nil
	}
	if len(id) > identity.MaxSignerSize {
		return reject(billingapi.ReasonMalformed, "account ID over %d bytes", identity.MaxSignerSize)
	}
	if _, err := peer.Decode(id); err != nil {
		return reject(billingapi.ReasonMalformed, "account %q is not a peer ID: %v", id, err)
	}
	return nil
}

// Accounts returns every account.
func (l *Ledger) Accounts(ctx context.Context) ([]billingapi.Account, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT id, kind, balance, out_since FROM accounts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("billing: accounts: %w", err)
	}
	defer rows.Close()
	out := []billingapi.Account{}
	for rows.Next() {
		var (
			a  billingapi.Account
			os int64
		)
		if err := rows.Scan(&a.ID, &a.Kind, &a.Balance, &os); err != nil {
			return nil, fmt.Errorf("billing: accounts: %w", err)
		}
		if os != 0 {
			t := time.Unix(0, os).UTC()
			a.OutOfFundsSince = &t
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Served sums the accepted records per publisher, for dashboards.
func (l *Ledger) Served(ctx context.Context) ([]billingapi.PublisherServed, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT publisher, COUNT(*), COALESCE(SUM(bytes), 0) FROM records GROUP BY publisher ORDER BY publisher`)
	if err != nil {
		return nil, fmt.Errorf("billing: served: %w", err)
	}
	defer rows.Close()
	out := []billingapi.PublisherServed{}
	for rows.Next() {
		var p billingapi.PublisherServed
		if err := rows.Scan(&p.Publisher, &p.Records, &p.Bytes); err != nil {
			return nil, fmt.Errorf("billing: served: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Suspended returns the publishers out of funds for longer than the grace
// period, for the DNS router to stop routing to: such accounts, and the
// keys linked to them (an open link, or one that still covers this
// epoch), since the router knows sites by their keys.
func (l *Ledger) Suspended(ctx context.Context) ([]string, error) {
	now := l.opts.now()
	cutoff := now.Add(-l.opts.Grace).UnixNano()
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT id FROM accounts WHERE kind = 'publisher' AND balance < 0
			AND out_since <> 0 AND out_since <= ?
		UNION SELECT k.key FROM key_links k JOIN accounts a ON a.id = k.account
		WHERE a.kind = 'publisher' AND a.balance < 0 AND a.out_since <> 0 AND a.out_since <= ?
			AND (k.until_epoch = 0 OR k.until_epoch > ?)
		ORDER BY 1`), cutoff, cutoff, l.epochOf(now))
	if err != nil {
		return nil, fmt.Errorf("billing: suspended: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("billing: suspended: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Total returns the sum of all balances; double entry keeps it zero.
func (l *Ledger) Total(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT CAST(sum(balance) AS BIGINT) FROM accounts`).Scan(&n); err != nil {
		return 0, fmt.Errorf("billing: total: %w", err)
	}
	return n.Int64, nil
}
