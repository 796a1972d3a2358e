package billing

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// Price returns what n units cost at price per unit of size unitNum/unitDen
// (rounded down): floor(n * price * unitDen / unitNum), without overflow.
// The result saturates at the int64 maximum.
func Price(n, price, unitDen, unitNum int64) int64 {
	if n <= 0 || price <= 0 || unitDen <= 0 || unitNum <= 0 {
		return 0
	}
	v := new(big.Int).Mul(big.NewInt(n), big.NewInt(price))
	v.Mul(v, big.NewInt(unitDen))
	v.Quo(v, big.NewInt(unitNum))
	if !v.IsInt64() {
		return 1<<63 - 1
	}
	return v.Int64()
}

// ServedAmount is what n bytes served earn at perGiB.
func ServedAmount(n, perGiB int64) int64 { return Price(n, perGiB, 1, GiB) }

// StoredAmount is what holding n bytes for one epoch of epochSecs earns at
// perGiBMonth.
func StoredAmount(n, perGiBMonth, epochSecs int64) int64 {
	return Price(n, perGiBMonth, epochSecs, GiB*int64(Month/time.Second))
}

// line is one payment of a settlement: publisher pays operator.
type line struct {
	operator, opKind, publisher, kind string
	bytes, amount                     int64
	from                              int64  // for records of an earlier epoch (held by the upstream-read check, pending): their epoch
	memo                              string // if set, the entries' memo
}

// Settle settles every closed epoch not settled yet, oldest first, each
// in one transaction: the publishers are debited and the operators
// credited what their accepted claims earn (edges and storage peers per
// GiB served, storage peers per GiB-month held, prorated). Settling is
// idempotent: a settled epoch is never paid again, and a crash leaves each
// epoch either wholly settled or untouched.
func (l *Ledger) Settle(ctx context.Context) (*billingapi.SettleResult, error) {
	if err := l.CaptureEvidence(ctx); err != nil {
		// Settle what the evidence read before covers; the rest waits.
		l.log.Warn("settle: DNS router evidence", zap.Error(err))
	}
	now := l.opts.now()
	lastClosed := l.epochOf(now.Add(-l.opts.SettleDelay)) - l.secs // its end <= now - delay
	res := &billingapi.SettleResult{Epochs: []int64{}}
	storage, err := l.storageFacts(ctx, lastClosed)
	if err != nil {
		return nil, err
	}
	var striped map[string][]string
	if si, ok := l.content.(ShardIndex); ok {
		var err error
		if striped, err = si.RootShards(ctx); err != nil {
			return nil, fmt.Errorf("billing: %w: manifests: %w", errTransient, err)
		}
	}
	// Records deferred at ingest are resolved again before the lock, as
	// the witnesses above are read, and applied in each epoch's
	// transaction (pending.go).
	resolved, err := l.resolvePending(ctx, lastClosed)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return nil, err
	}
	var first int64
	if err := l.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'first_epoch'`).Scan(&first); err != nil {
		return nil, fmt.Errorf("billing: first epoch: %w", err)
	}
	// Batches may be older than the ledger; start at the oldest claim
	// (records deferred at ingest count).
	var oldest sql.NullInt64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT min(epoch) FROM (SELECT epoch FROM records WHERE epoch > ?
		UNION ALL SELECT epoch FROM pending WHERE epoch > ?) x`), last, last).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("billing: oldest epoch: %w", err)
	}
	start := first
	if oldest.Valid && oldest.Int64 < start {
		start = oldest.Int64
	}
	if last > 0 {
		start = last + l.secs
	}
	evidenceAt, err := l.evidenceAt(ctx, l.db)
	if err != nil {
		return nil, err
	}
	for e := start; e <= lastClosed; e += l.secs {
		// The router's evidence of the epoch is complete once read after
		// the settle delay: its heartbeats then report the epoch closed.
		end := time.Unix(e+l.secs, 0)
		sure := !evidenceAt.Before(end.Add(l.opts.SettleDelay))
		if !sure && now.Before(end.Add(l.opts.DemandWait)) {
			break // wait for the router
		}
		paid, err := l.settleEpoch(ctx, e, storage, striped, resolved, sure)
		if err != nil {
			return res, err
		}
		res.Epochs = append(res.Epochs, e)
		res.Paid += paid
	}
	return res, nil
}

// settleEpoch settles one epoch in one transaction. striped maps each
// striped root to its shards, for the upstream-read check (checkUpstream);
// resolved is what the pending records resolved to (settlePending); sure
// says whether the router's evidence of the epoch is complete.
func (l *Ledger) settleEpoch(ctx context.Context, epoch int64, storage *storageFacts, striped map[string][]string,
	resolved map[pendingKey]resolution, sure bool) (int64, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	defer tx.Rollback()
	pend, err := l.settlePending(ctx, tx, epoch, resolved, striped)
	if err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	up, err := l.checkUpstream(ctx, tx, epoch, striped, sure)
	if err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	reads, readsRefused, err := l.storageReadLines(ctx, tx, epoch, storage)
	if err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	lines := slices.Concat(up.lines, reads, l.storedLines(storage, epoch), pend.lines)
	txID := "settle:" + strconv.FormatInt(epoch, 10)
	at := l.opts.now().UnixNano()
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO txs (id, kind, epoch, at) VALUES (?, 'settle', ?, ?)`), txID, epoch, at); err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	paid, publishers, err := l.postLines(ctx, tx, txID, epoch, lines)
	if err != nil {
		return 0, err
	}
	for p := range publishers {
		if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE accounts SET out_since = ? WHERE id = ? AND balance < 0 AND out_since = 0`), at, p); err != nil {
			return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
		}
	}
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO settlements (epoch, tx, at) VALUES (?, ?, ?)`), epoch, txID, at); err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	if err := l.insertRejections(ctx, tx, slices.Concat(up.refused, readsRefused, pend.refused)); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("billing: settle %d: %w", epoch, err)
	}
	up.count(l)
	pend.count(l)
	l.metrics.settled.Inc()
	l.metrics.paid.Add(float64(paid))
	if paid > 0 {
		l.log.Info("epoch settled", zap.Int64("epoch", epoch), zap.Int("lines", len(lines)), zap.Int64("paid", paid))
	}
	return paid, nil
}

// postLines writes the entries of lines (the publisher's payer debited,
// operator credited; lines of no amount skipped) in the settlement txID,
// and returns the total paid and the payers debited. A publisher key
// linked to an account (keylinks.go) for the epoch its line's records are
// of is paid for by the account; the entry's memo still names the key, so
// the account's statement itemizes per site.
func (l *Ledger) postLines(ctx context.Context, tx querier, txID string, epoch int64, lines []line) (int64, map[string]bool, error) {
	var paid int64
	publishers := map[string]bool{}
	links, err := l.keyPayers(ctx, tx)
	if err != nil {
		return 0, nil, err
	}
	for _, ln := range lines {
		if ln.amount == 0 {
			continue
		}
		memo := fmt.Sprintf("%s: %d bytes of %s's content by %s in epoch %d", ln.kind, ln.bytes, ln.publisher, ln.operator, epoch)
		if ln.from != 0 {
			memo = fmt.Sprintf("%s: %d bytes of %s's content by %s in epoch %d, held until its read orders arrived",
				ln.kind, ln.bytes, ln.publisher, ln.operator, ln.from)
		}
		if ln.memo != "" {
			memo = ln.memo
		}
		// Records held or resolved late keep the payer of their own epoch.
		payer := links.of(ln.publisher, cmp.Or(ln.from, epoch))
		if payer != ln.publisher {
			memo += ", paid by its account " + payer
		}
		if err := l.post(ctx, tx, txID, epoch, payer, "publisher", -ln.amount, ln.kind, ln.bytes, memo); err != nil {
			return 0, nil, err
		}
		if paid == 0 {
			l.opts.FaultHook("settle-mid") // the publisher debited, the operator not yet credited
		}
		if err := l.post(ctx, tx, txID, epoch, ln.operator, ln.opKind, ln.amount, ln.kind, ln.bytes, memo); err != nil {
			return 0, nil, err
		}
		publishers[payer] = true
		paid += ln.amount
	}
	return paid, publishers, nil
}

// post writes one entry and moves the account's balance.
func (l *Ledger) post(ctx context.Context, tx querier, txID string, epoch int64, account, kind string, amount int64,
	entryKind string, bytes int64, memo string) error {
	if err := l.ensureAccount(ctx, tx, account, kind); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO entries (tx, account, amount, epoch, kind, bytes, memo)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), txID, account, amount, epoch, entryKind, bytes, memo); err != nil {
		return fmt.Errorf("billing: entry: %w", err)
	}
	if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE accounts SET balance = balance + ? WHERE id = ?`), amount, account); err != nil {
		return fmt.Errorf("billing: balance: %w", err)
	}
	return nil
}
