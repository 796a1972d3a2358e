package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
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

// ErrConflict is returned for a deposit nonce reused with other content.
var ErrConflict = errors.New("conflict")
