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
	"go.uber.org/zap"
)

// Key links: one account paying for several publisher keys, one per site.
// A link is signed by both sides (billingapi.KeyLink around the key's
// KeyConsent), starts with the epoch after the request and lasts until
// the account unlinks the key, which takes effect with the epoch after the
// unlink. Links are never retroactive either way: an epoch's payer is the
// one its link said when the epoch began, so settled and held records
// keep theirs. A key has at most one open link, and links do not chain:
// a linked key cannot link keys itself, nor can an account with linked
// keys become a linked key.

// ErrNotFound is returned for an unlink of a key that has no open link to
// the account.
var ErrNotFound = errors.New("not found")

// LinkKey applies a link signed by its account around its key's consent
// (billingapi.TypeKeyLink), posted for account. A link resent while open
// answers the link again.
func (l *Ledger) LinkKey(ctx context.Context, account string, env *identity.Envelope) (*billingapi.KeyLinkInfo, error) {
	li, err := l.linkKey(ctx, account, env)
	if r := reasonOf(err); r != "" {
		l.metrics.claims.WithLabelValues("key_link", "rejected", string(r)).Inc()
		l.log.Warn("key link refused", zap.String("signer", truncate(env.Signer, identity.MaxSignerSize)), zap.Error(err))
	}
	return li, err
}

func (l *Ledger) linkKey(ctx context.Context, account string, env *identity.Envelope) (*billingapi.KeyLinkInfo, error) {
	var kl billingapi.KeyLink
	signer, err := env.Open(billingapi.TypeKeyLink, &kl)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return nil, reject(billingapi.ReasonSignature, "key link: %v", err)
	case err != nil:
		return nil, reject(billingapi.ReasonMalformed, "key link: %v", err)
	case signer.String() != kl.Account:
		return nil, reject(billingapi.ReasonSignature, "key link for account %.64q signed by %s; the account must sign it", kl.Account, signer)
	case kl.Consent == nil:
		return nil, reject(billingapi.ReasonSignature, "key link of %.64q carries no consent signed by the key", kl.Key)
	}
	if err := l.checkLinkParties(account, kl.Account, kl.Key, kl.Time); err != nil {
		return nil, err
	}
	var kc billingapi.KeyConsent
	consenter, err := kl.Consent.Open(billingapi.TypeKeyConsent, &kc)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return nil, reject(billingapi.ReasonSignature, "key consent: %v", err)
	case err != nil:
		return nil, reject(billingapi.ReasonMalformed, "key consent: %v", err)
	case consenter.String() != kl.Key:
		return nil, reject(billingapi.ReasonSignature, "consent to pay for %s signed by %s; the key itself must sign it", kl.Key, consenter)
	case kc.Account != kl.Account || kc.Key != kl.Key:
		return nil, reject(billingapi.ReasonSignature, "the key consented to account %.64q paying for %.64q, not to this link", kc.Account, kc.Key)
	}
	if err := l.checkLinkTime("key consent", kc.Time); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	defer tx.Rollback()
	var (
		open   string
		from   int64
		n      int64
		latest sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, l.db.q(`SELECT account, from_epoch FROM key_links WHERE key = ? AND until_epoch = 0`), kl.Key).Scan(&open, &from)
	switch {
	case err == nil && open == kl.Account:
		return &billingapi.KeyLinkInfo{Account: open, Key: kl.Key, FromEpoch: from}, nil // sent again
	case err == nil:
		return nil, fmt.Errorf("billing: key %s: %w: it is linked to another account; that account must unlink it first", kl.Key, ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	if err := tx.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM key_links WHERE account = ? AND until_epoch = 0`), kl.Key).Scan(&n); err != nil {
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("billing: key %s: %w: it pays for linked keys of its own; links do not chain", kl.Key, ErrConflict)
	}
	switch err := tx.QueryRowContext(ctx, l.db.q(`SELECT key FROM key_links WHERE key = ? AND until_epoch = 0`), kl.Account).Scan(new(string)); {
	case err == nil:
		return nil, fmt.Errorf("billing: account %s: %w: it is itself a linked key; links do not chain", kl.Account, ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	// A link signed before the key's last unlink is an old one sent again.
	if err := tx.QueryRowContext(ctx, l.db.q(`SELECT max(unlinked_at) FROM key_links WHERE key = ?`), kl.Key).Scan(&latest); err != nil {
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	if latest.Valid && kl.Time.UnixNano() <= latest.Int64 {
		return nil, reject(billingapi.ReasonMalformed, "key link of %s signed at %s, before its last unlink: a link is signed anew",
			kl.Key, kl.Time.UTC().Format(time.RFC3339Nano))
	}
	from = l.epochOf(l.opts.now()) + l.secs
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO key_links (key, account, from_epoch, linked_at) VALUES (?, ?, ?, ?)`),
		kl.Key, kl.Account, from, kl.Time.UnixNano()); err != nil {
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("billing: key link: %w", err)
	}
	l.metrics.claims.WithLabelValues("key_link", "accepted", "").Inc()
	l.log.Info("key linked", zap.String("account", kl.Account), zap.String("key", kl.Key), zap.Int64("from_epoch", from))
	return &billingapi.KeyLinkInfo{Account: kl.Account, Key: kl.Key, FromEpoch: from}, nil
}

// UnlinkKey applies an unlink signed by the account (billingapi.
// TypeKeyUnlink), posted for account and key: the account stops paying for
// the key with the epoch after this one. A key with no open link to the
// account is ErrNotFound.
func (l *Ledger) UnlinkKey(ctx context.Context, account, key string, env *identity.Envelope) (*billingapi.KeyLinkInfo, error) {
	li, err := l.unlinkKey(ctx, account, key, env)
	if r := reasonOf(err); r != "" {
		l.metrics.claims.WithLabelValues("key_unlink", "rejected", string(r)).Inc()
		l.log.Warn("key unlink refused", zap.String("signer", truncate(env.Signer, identity.MaxSignerSize)), zap.Error(err))
	}
	return li, err
}

func (l *Ledger) unlinkKey(ctx context.Context, account, key string, env *identity.Envelope) (*billingapi.KeyLinkInfo, error) {
	var ku billingapi.KeyUnlink
	signer, err := env.Open(billingapi.TypeKeyUnlink, &ku)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return nil, reject(billingapi.ReasonSignature, "key unlink: %v", err)
	case err != nil:
		return nil, reject(billingapi.ReasonMalformed, "key unlink: %v", err)
	case signer.String() != ku.Account:
		return nil, reject(billingapi.ReasonSignature, "key unlink for account %.64q signed by %s; the account must sign it", ku.Account, signer)
	case ku.Key != key:
		return nil, reject(billingapi.ReasonMalformed, "unlink of key %.64q sent for key %.64q", ku.Key, key)
	}
	if err := l.checkLinkParties(account, ku.Account, ku.Key, ku.Time); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("billing: key unlink: %w", err)
	}
	defer tx.Rollback()
	var id, from, linkedAt int64
	err = tx.QueryRowContext(ctx, l.db.q(`SELECT id, from_epoch, linked_at FROM key_links WHERE key = ? AND account = ? AND until_epoch = 0`),
		ku.Key, ku.Account).Scan(&id, &from, &linkedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("billing: key %s: %w: no open link to account %s", ku.Key, ErrNotFound, ku.Account)
	case err != nil:
		return nil, fmt.Errorf("billing: key unlink: %w", err)
	case ku.Time.UnixNano() <= linkedAt:
		return nil, reject(billingapi.ReasonMalformed, "unlink of %s signed at %s, before its link: an unlink is signed anew",
			ku.Key, ku.Time.UTC().Format(time.RFC3339Nano))
	}
	// A link not started yet ends where it would have started: it paid
	// nothing.
	until := max(l.epochOf(l.opts.now())+l.secs, from)
	if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE key_links SET until_epoch = ?, unlinked_at = ? WHERE id = ?`),
		until, ku.Time.UnixNano(), id); err != nil {
		return nil, fmt.Errorf("billing: key unlink: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("billing: key unlink: %w", err)
	}
	l.metrics.claims.WithLabelValues("key_unlink", "accepted", "").Inc()
	l.log.Info("key unlinked", zap.String("account", ku.Account), zap.String("key", ku.Key), zap.Int64("until_epoch", until))
	return &billingapi.KeyLinkInfo{Account: ku.Account, Key: ku.Key, FromEpoch: from, UntilEpoch: until}, nil
}

// checkLinkParties checks a link's or an unlink's account (the one in the
// path, posted), key and signed time.
func (l *Ledger) checkLinkParties(posted, account, key string, at time.Time) error {
	for _, id := range []string{account, key} {
		if len(id) > identity.MaxSignerSize {
			return reject(billingapi.ReasonMalformed, "key link: peer ID over %d bytes", identity.MaxSignerSize)
		}
		if _, err := peer.Decode(id); err != nil {
			return reject(billingapi.ReasonMalformed, "key link: %.64q is not a peer ID: %v", id, err)
		}
	}
	switch {
	case posted != account:
		return reject(billingapi.ReasonMalformed, "key link of account %s sent for account %.64q", account, posted)
	case key == account:
		return reject(billingapi.ReasonMalformed, "account %s cannot link itself", account)
	}
	return l.checkLinkTime("key link", at)
}

// checkLinkTime refuses a signed time farther than KeyLinkSkew from
// billing's clock.
func (l *Ledger) checkLinkTime(what string, at time.Time) error {
	now := l.opts.now()
	if d := at.Sub(now); d > billingapi.KeyLinkSkew || d < -billingapi.KeyLinkSkew {
		return reject(billingapi.ReasonMalformed, "%s signed at %s, %s from billing's clock: at most %s",
			what, at.UTC().Format(time.RFC3339), d.Round(time.Second), billingapi.KeyLinkSkew)
	}
	return nil
}

// KeyLinks returns every link of account, open and ended, oldest first.
func (l *Ledger) KeyLinks(ctx context.Context, account string) ([]billingapi.KeyLinkInfo, error) {
	if err := checkAccountID(account); err != nil {
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT key, from_epoch, until_epoch FROM key_links WHERE account = ? ORDER BY id`), account)
	if err != nil {
		return nil, fmt.Errorf("billing: key links: %w", err)
	}
	defer rows.Close()
	out := []billingapi.KeyLinkInfo{}
	for rows.Next() {
		li := billingapi.KeyLinkInfo{Account: account}
		if err := rows.Scan(&li.Key, &li.FromEpoch, &li.UntilEpoch); err != nil {
			return nil, fmt.Errorf("billing: key links: %w", err)
		}
		out = append(out, li)
	}
	return out, rows.Err()
}

// payer returns the account whose funds count for key now: the account of
// its open link, or "".
func (l *Ledger) payer(ctx context.Context, key string) (string, error) {
	var account string
	switch err := l.db.QueryRowContext(ctx, l.db.q(`SELECT account FROM key_links WHERE key = ? AND until_epoch = 0`), key).Scan(&account); {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("billing: payer of %s: %w", key, err)
	}
	return account, nil
}

// keySpan is one link of a key: account pays for the epochs [from, until),
// until 0 meaning open.
type keySpan struct {
	account     string
	from, until int64
}

// payers maps each linked key to its links, for settlement.
type payers map[string][]keySpan

// of returns who pays what key was charged in epoch: the account of the
// link covering the epoch, else key itself.
func (p payers) of(key string, epoch int64) string {
	for _, s := range p[key] {
		if s.from <= epoch && (s.until == 0 || epoch < s.until) {
			return s.account
		}
	}
	return key
}

// keyPayers reads every key link, in tx.
func (l *Ledger) keyPayers(ctx context.Context, tx querier) (payers, error) {
	rows, err := tx.QueryContext(ctx, `SELECT key, account, from_epoch, until_epoch FROM key_links ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("billing: key links: %w", err)
	}
	defer rows.Close()
	out := payers{}
	for rows.Next() {
		var (
			key string
			s   keySpan
		)
		if err := rows.Scan(&key, &s.account, &s.from, &s.until); err != nil {
			return nil, fmt.Errorf("billing: key links: %w", err)
		}
		out[key] = append(out[key], s)
	}
	return out, rows.Err()
}
