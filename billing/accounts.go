package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/tick"
	"go.uber.org/zap"
)

// Deposit applies a deposit signed by the billing operator's key: the
// treasury pays the publisher. A deposit resent with the same nonce is
// applied once; the same nonce with other content is ErrConflict.
func (l *Ledger) Deposit(ctx context.Context, env *identity.Envelope) (*billingapi.Account, error) {
	a, err := l.deposit(ctx, env)
	if r := reasonOf(err); r != "" {
		l.metrics.claims.WithLabelValues("deposit", "rejected", string(r)).Inc()
		l.log.Warn("deposit refused", zap.String("signer", truncate(env.Signer, identity.MaxSignerSize)), zap.Error(err))
	}
	return a, err
}

func (l *Ledger) deposit(ctx context.Context, env *identity.Envelope) (*billingapi.Account, error) {
	var d billingapi.Deposit
	signer, err := env.Open(billingapi.TypeDeposit, &d)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return nil, reject(billingapi.ReasonSignature, "deposit: %v", err)
	case err != nil:
		return nil, reject(billingapi.ReasonMalformed, "deposit: %v", err)
	case signer != l.operator:
		return nil, reject(billingapi.ReasonSignature, "deposit signed by %s; only the billing operator %s may sign deposits", signer, l.operator)
	case d.Amount <= 0:
		return nil, reject(billingapi.ReasonMalformed, "deposit amount %d: want above zero", d.Amount)
	case d.Nonce == "" || len(d.Nonce) > billingapi.MaxField:
		return nil, reject(billingapi.ReasonMalformed, "deposit nonce: want 1 to %d characters", billingapi.MaxField)
	}
	if _, err := peer.Decode(d.Account); err != nil {
		return nil, reject(billingapi.ReasonMalformed, "deposit account %q: %v", d.Account, err)
	}
	txID := "deposit:" + d.Nonce
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("billing: deposit: %w", err)
	}
	defer tx.Rollback()
	var (
		account string
		amount  int64
	)
	err = tx.QueryRowContext(ctx, l.db.q(`SELECT account, amount FROM entries WHERE tx = ? AND amount > 0`), txID).Scan(&account, &amount)
	switch {
	case err == nil && (account != d.Account || amount != d.Amount):
		return nil, fmt.Errorf("billing: deposit nonce %q: %w: used for another deposit", d.Nonce, ErrConflict)
	case err == nil: // applied before
	case errors.Is(err, sql.ErrNoRows):
		at := l.opts.now().UnixNano()
		if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO txs (id, kind, epoch, at) VALUES (?, 'deposit', ?, ?)`),
			txID, l.epochOf(l.opts.now()), at); err != nil {
			return nil, fmt.Errorf("billing: deposit: %w", err)
		}
		memo := "deposit " + d.Nonce
		epoch := l.epochOf(l.opts.now())
		if err := l.post(ctx, tx, txID, epoch, TreasuryAccount, "treasury", -d.Amount, "deposit", 0, memo); err != nil {
			return nil, err
		}
		if err := l.post(ctx, tx, txID, epoch, d.Account, "publisher", d.Amount, "deposit", 0, memo); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE accounts SET out_since = 0 WHERE id = ? AND balance >= 0`), d.Account); err != nil {
			return nil, fmt.Errorf("billing: deposit: %w", err)
		}
	default:
		return nil, fmt.Errorf("billing: deposit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("billing: deposit: %w", err)
	}
	l.metrics.claims.WithLabelValues("deposit", "accepted", "").Inc()
	l.log.Info("deposit", zap.String("account", d.Account), zap.Int64("amount", d.Amount), zap.String("nonce", d.Nonce))
	return l.Account(ctx, d.Account)
}

// Account returns one account. A peer ID the ledger has no entries for
// yet has balance 0; an ID that is no peer ID is refused as malformed.
func (l *Ledger) Account(ctx context.Context, id string) (*billingapi.Account, error) {
	if err := checkAccountID(id); err != nil {
		return nil, err
	}
	var (
		a   = billingapi.Account{ID: id}
		out int64
	)
	err := l.db.QueryRowContext(ctx, l.db.q(`SELECT kind, balance, out_since FROM accounts WHERE id = ?`), id).Scan(&a.Kind, &a.Balance, &out)
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

// Statement returns an account's statement. An account never seen but
// with rejections (a forger, say) gets a statement with zero balance.
func (l *Ledger) Statement(ctx context.Context, id string) (*billingapi.Statement, error) {
	st := &billingapi.Statement{Account: id, Entries: []billingapi.Entry{}, Rejected: []billingapi.Rejected{}, Deferred: []billingapi.Deferred{}, DNSCheck: "on"}
	if l.opts.DNS == nil {
		st.DNSCheck = "unconfigured: batches are not cross-checked with the DNS router"
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
	return st, nil
}

// Suspended returns the publishers out of funds for longer than the grace
// period, for the DNS router to stop routing to.
func (l *Ledger) Suspended(ctx context.Context) ([]string, error) {
	cutoff := l.opts.now().Add(-l.opts.Grace).UnixNano()
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT id FROM accounts WHERE kind = 'publisher' AND balance < 0
		AND out_since <> 0 AND out_since <= ? ORDER BY id`), cutoff)
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

// Forfeit makes edge forfeit an unsettled epoch: none of its records of
// that epoch is paid.
func (l *Ledger) Forfeit(ctx context.Context, edge string, epoch int64, reason billingapi.Reason, detail string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return err
	}
	if epoch <= last {
		return reject(billingapi.ReasonEpochSettled, "epoch %d is settled", epoch)
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO forfeits (edge, epoch, reason) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
		edge, epoch, string(reason))
	if err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	var bytes sql.NullInt64
	if err := tx.QueryRowContext(ctx, l.db.q(`SELECT CAST(sum(bytes) AS BIGINT) FROM records WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&bytes); err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	if err := l.insertRejections(ctx, tx, []rejection{{account: edge, epoch: epoch, kind: "epoch",
		ref: strconv.FormatInt(epoch, 10), reason: reason, detail: detail, bytes: bytes.Int64}}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	l.metrics.claims.WithLabelValues("epoch", "rejected", string(reason)).Inc()
	l.log.Warn("edge forfeits its epoch", zap.String("edge", edge), zap.Int64("epoch", epoch),
		zap.String("reason", string(reason)), zap.String("detail", detail))
	return nil
}

// Forfeits returns the epochs edges forfeited at or after since, oldest
// decision first, for the DNS router to keep those edges out of answers.
func (l *Ledger) Forfeits(ctx context.Context, since time.Time) ([]billingapi.ForfeitInfo, error) {
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT f.edge, f.epoch, f.reason, r.at FROM forfeits f
		JOIN rejections r ON r.account = f.edge AND r.epoch = f.epoch AND r.kind = 'epoch'
		WHERE r.at >= ? ORDER BY r.at, f.edge, f.epoch`), since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("billing: forfeits: %w", err)
	}
	defer rows.Close()
	out := []billingapi.ForfeitInfo{}
	for rows.Next() {
		var (
			f      billingapi.ForfeitInfo
			reason string
			at     int64
		)
		if err := rows.Scan(&f.Edge, &f.Epoch, &reason, &at); err != nil {
			return nil, fmt.Errorf("billing: forfeits: %w", err)
		}
		f.Reason, f.At = billingapi.Reason(reason), time.Unix(0, at).UTC()
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: forfeits: %w", err)
	}
	return out, nil
}

// ProbeOnce picks a random record of an unsettled epoch, fetches its
// object from the edge that reported it (the URL in its batch, else the
// DNS router's) and checks the bytes; an edge caught serving wrong bytes
// forfeits the epoch. It returns false when there was nothing to probe.
func (l *Ledger) ProbeOnce(ctx context.Context, p Prober) (bool, error) {
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return false, err
	}
	var n int64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM records WHERE epoch > ?`), last).Scan(&n); err != nil {
		return false, fmt.Errorf("billing: probe: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	var (
		edge, c, url string
		epoch        int64
	)
	err = l.db.QueryRowContext(ctx, l.db.q(`SELECT r.edge, r.epoch, r.cid,
		coalesce((SELECT max(b.url) FROM batches b WHERE b.edge = r.edge AND b.epoch = r.epoch), '') FROM records r
		WHERE r.epoch > ? ORDER BY r.edge, r.serial LIMIT 1 OFFSET ?`), last, rand.Int64N(n)).Scan(&edge, &epoch, &c, &url)
	if err != nil {
		return false, fmt.Errorf("billing: probe: %w", err)
	}
	if url == "" {
		if edges, ok := l.dnsEdges(ctx); ok {
			url = edges[edge].URL
			if url == "" && len(edges[edge].Addrs) > 0 {
				url = "http://" + edges[edge].Addrs[0]
			}
		}
	}
	if url == "" {
		l.metrics.probes.WithLabelValues("no_url").Inc()
		return true, nil
	}
	err = p.Probe(ctx, url, c)
	switch {
	case reasonOf(err) == billingapi.ReasonWrongContent:
		l.metrics.probes.WithLabelValues("wrong_content").Inc()
		return true, l.Forfeit(ctx, edge, epoch, billingapi.ReasonWrongContent, err.Error())
	case err != nil:
		l.metrics.probes.WithLabelValues("error").Inc()
		l.log.Info("probe inconclusive", zap.String("edge", edge), zap.String("cid", c), zap.Error(err))
		return true, nil
	}
	l.metrics.probes.WithLabelValues("ok").Inc()
	return true, nil
}

// RunProber probes a random served object every interval until ctx ends.
func (l *Ledger) RunProber(ctx context.Context, p Prober, every time.Duration) {
	tick.Every(ctx, every, func(ctx context.Context) {
		if _, err := l.ProbeOnce(ctx, p); err != nil && ctx.Err() == nil {
			l.log.Warn("probe", zap.Error(err))
		}
	})
}
