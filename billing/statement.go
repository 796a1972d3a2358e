package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/topcdn/topcdn/billingapi"
)

// Statement returns an account's statement. An account never seen but
// with rejections (a forger, say) gets a statement with zero balance.
func (l *Ledger) Statement(ctx context.Context, id string) (*billingapi.Statement, error) {
	st := &billingapi.Statement{Account: id, Entries: []billingapi.Entry{}, Rejected: []billingapi.Rejected{}, Deferred: []billingapi.Deferred{},
		Pending: []billingapi.PendingRecord{}, DNSCheck: "on"}
	if l.opts.DNS == nil {
		st.DNSCheck = "unconfigured: no DNS router vouches for any edge's demand, so no edge is paid"
	}
	a, err := l.Account(ctx, id)
	switch {
	case err == nil:
		st.Kind, st.Balance, st.OutOfFundsSince = a.Kind, a.Balance, a.OutOfFundsSince
	default:
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT tx, epoch, kind, amount, bytes, memo FROM entries WHERE account = ? ORDER BY id`), id)
	if err != nil {
		return nil, fmt.Errorf("billing: statement: %w", err)
	}
	for rows.Next() {
		var e billingapi.Entry
		if err := rows.Scan(&e.Tx, &e.Epoch, &e.Kind, &e.Amount, &e.Bytes, &e.Memo); err != nil {
			rows.Close()
			return nil, fmt.Errorf("billing: statement: %w", err)
		}
		st.Entries = append(st.Entries, e)
	}
	rows.Close()
	rows, err = l.db.QueryContext(ctx, l.db.q(`SELECT epoch, kind, ref, reason, detail, bytes, at FROM rejections WHERE account = ? ORDER BY id`), id)
	if err != nil {
		return nil, fmt.Errorf("billing: statement: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r  billingapi.Rejected
			at int64
		)
		if err := rows.Scan(&r.Epoch, &r.Kind, &r.Ref, &r.Reason, &r.Detail, &r.Bytes, &at); err != nil {
			return nil, fmt.Errorf("billing: statement: %w", err)
		}
		r.At = time.Unix(0, at).UTC()
		st.Rejected = append(st.Rejected, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: statement: %w", err)
	}
	if st.Deferred, err = l.deferredOf(ctx, id); err != nil {
		return nil, err
	}
	if st.Pending, err = l.pendingOf(ctx, id); err != nil {
		return nil, err
	}
	return st, nil
}

// deferredOf returns the records held for edge.
func (l *Ledger) deferredOf(ctx context.Context, edge string) ([]billingapi.Deferred, error) {
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT epoch, publisher, root, records, bytes, since FROM held
		WHERE edge = ? ORDER BY epoch, publisher, root`), edge)
	if err != nil {
		return nil, fmt.Errorf("billing: statement: %w", err)
	}
	defer rows.Close()
	out := []billingapi.Deferred{}
	for rows.Next() {
		var (
			d     billingapi.Deferred
			since int64
		)
		if err := rows.Scan(&d.Epoch, &d.Publisher, &d.Root, &d.Records, &d.Bytes, &since); err != nil {
			return nil, fmt.Errorf("billing: statement: %w", err)
		}
		d.Since = time.Unix(0, since).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}
