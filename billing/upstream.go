package billing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// upstream is what the upstream-read check decided in one epoch's
// settlement: the edge lines to pay (the epoch's backed or unchecked
// records, and records held before that are backed now), the refusals,
// and the counts for the metrics (added once the transaction commits).
type upstream struct {
	lines   []line
	refused []rejection
	results map[string]int
	refRecs int64
}

// count adds the check's results to the metrics.
func (u *upstream) count(l *Ledger) {
	for r, n := range u.results {
		l.metrics.backing.WithLabelValues(r).Add(float64(n))
	}
	for _, r := range u.refused {
		l.metrics.bytes.WithLabelValues("served", "rejected").Add(float64(r.bytes))
		l.log.Info("rejected", zap.String("kind", r.kind), zap.String("account", r.account), zap.String("ref", r.ref),
			zap.String("reason", string(r.reason)), zap.String("detail", r.detail))
	}
	if u.refRecs > 0 {
		l.metrics.claims.WithLabelValues("record", "rejected", string(billingapi.ReasonNoUpstreamReads)).Add(float64(u.refRecs))
	}
}

// recordGroup is an edge's accepted records of one (epoch, publisher,
// root).
type recordGroup struct {
	edge, publisher, root string
	epoch, records, bytes int64
	since                 int64
}

// checkUpstream runs the upstream-read check inside the settlement of
// epoch (tx), on each edge's accepted bytes as the evidence bounds them
// (boundedGroups; sure as there): an edge cannot serve striped content it never read from the
// storage peers, and it reads it with read orders it signs, which the
// peers claim. For each (edge, publisher, root) of the epoch's accepted
// records (forfeited epochs excluded) whose root is striped and for which
// claims flow (billing stored a read order, by any reader, for one of the
// root's shards), the records are paid only if backed: billing stored a
// read order signed by the edge for a shard of that publisher's content,
// in any epoch. Unbacked records are held; every later settlement pays
// the held records that are backed by then and refuses
// (no_upstream_reads) those held for BackingWait (counted from when they
// were held, and from when this process started).
func (l *Ledger) checkUpstream(ctx context.Context, tx querier, epoch int64, striped map[string][]string, sure bool) (*upstream, error) {
	u := &upstream{results: map[string]int{}}
	now := l.opts.now()
	groups, bounded, err := l.boundedGroups(ctx, tx, epoch, sure)
	if err != nil {
		return nil, err
	}
	u.refused = append(u.refused, bounded...)
	held, err := queryGroups(ctx, tx, epoch, l.db.q(`SELECT edge, epoch, publisher, root, records, bytes, since FROM held
		WHERE epoch < ? ORDER BY epoch, edge, publisher, root`), func(g *recordGroup) []any {
		return []any{&g.edge, &g.epoch, &g.publisher, &g.root, &g.records, &g.bytes, &g.since}
	})
	if err != nil {
		return nil, err
	}
	if err := l.judgeEpoch(ctx, tx, u, groups, striped, now); err != nil {
		return nil, err
	}
	if err := l.judgeHeld(ctx, tx, u, held, striped, now); err != nil {
		return nil, err
	}
	return u, nil
}

// queryGroups runs query with epoch as its argument and returns a
// recordGroup per row, of epoch unless its row says otherwise, scanned
// into the fields given.
func queryGroups(ctx context.Context, tx querier, epoch int64, query string, fields func(g *recordGroup) []any) ([]recordGroup, error) {
	rows, err := tx.QueryContext(ctx, query, epoch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []recordGroup
	for rows.Next() {
		g := recordGroup{epoch: epoch}
		if err := rows.Scan(fields(&g)...); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// judgeEpoch runs the check on this epoch's groups: a group is paid (per
// (edge, publisher) as before the check) unless its root is striped,
// claims flow for it and no read order of the edge backs it; then it is
// held, since now.
func (l *Ledger) judgeEpoch(ctx context.Context, tx querier, u *upstream, groups []recordGroup, striped map[string][]string, now time.Time) error {
	flowing := map[string]bool{} // root -> claims flow for it
	for _, g := range groups {
		result, err := l.judgeGroup(ctx, tx, g, striped[g.root], flowing)
		if err != nil {
			return err
		}
		u.results[result]++
		if result != "deferred" {
			u.pay(g, l.opts.PricePerGiBServed)
			continue
		}
		if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO held (edge, epoch, publisher, root, records, bytes, since)
			VALUES (?, ?, ?, ?, ?, ?, ?)`), g.edge, g.epoch, g.publisher, g.root, g.records, g.bytes, now.UnixNano()); err != nil {
			return err
		}
	}
	return nil
}

// judgeGroup returns what the check decides for a group of this epoch
// whose root has shards (none: not striped): skipped_unstriped,
// skipped_no_claims, backed or deferred. flowing caches claimsFlow per
// root.
func (l *Ledger) judgeGroup(ctx context.Context, tx querier, g recordGroup, shards []string, flowing map[string]bool) (string, error) {
	if g.root == "" || len(shards) == 0 {
		return "skipped_unstriped", nil
	}
	f, ok := flowing[g.root]
	if !ok {
		var err error
		if f, err = l.claimsFlow(ctx, tx, shards); err != nil {
			return "", err
		}
		flowing[g.root] = f
	}
	if !f {
		return "skipped_no_claims", nil
	}
	b, err := l.backed(ctx, tx, g.edge, g.publisher)
	switch {
	case err != nil:
		return "", err
	case b:
		return "backed", nil
	}
	return "deferred", nil
}

// pay adds g to the edge lines to pay, in the line before if that is of
// the same (edge, publisher).
func (u *upstream) pay(g recordGroup, perGiB int64) {
	if n := len(u.lines); n > 0 && u.lines[n-1].operator == g.edge && u.lines[n-1].publisher == g.publisher {
		u.lines[n-1].bytes += g.bytes
		u.lines[n-1].amount = ServedAmount(u.lines[n-1].bytes, perGiB)
		return
	}
	u.lines = append(u.lines, line{operator: g.edge, opKind: "edge", publisher: g.publisher, kind: "served",
		bytes: g.bytes, amount: ServedAmount(g.bytes, perGiB)})
}

// judgeHeld runs the check again on the groups earlier settlements held:
// it pays those backed by now (or whose root has no manifest any more:
// nothing to check against), refuses those held for BackingWait (counted
// from when they were held, and from when this process started), and
// keeps the others held.
func (l *Ledger) judgeHeld(ctx context.Context, tx querier, u *upstream, held []recordGroup, striped map[string][]string, now time.Time) error {
	for _, g := range held {
		_, isStriped := striped[g.root]
		b := !isStriped
		if !b {
			var err error
			if b, err = l.backed(ctx, tx, g.edge, g.publisher); err != nil {
				return err
			}
		}
		since := time.Unix(0, g.since)
		if l.started.After(since) {
			since = l.started
		}
		switch {
		case b:
			u.results["paid_late"]++
			u.lines = append(u.lines, line{operator: g.edge, opKind: "edge", publisher: g.publisher, kind: "served",
				bytes: g.bytes, amount: ServedAmount(g.bytes, l.opts.PricePerGiBServed), from: g.epoch})
		case !now.Before(since.Add(l.opts.BackingWait)):
			u.results["refused"]++
			u.refRecs += g.records
			u.refused = append(u.refused, rejection{account: g.edge, epoch: g.epoch, kind: "record", ref: "root " + g.root,
				reason: billingapi.ReasonNoUpstreamReads, bytes: g.bytes,
				detail: fmt.Sprintf("%d records (%d bytes) of striped root %s: no read order signed by the edge for the shards of %s's content within %s, while storage peers claim other reads of it",
					g.records, g.bytes, g.root, g.publisher, l.opts.BackingWait)})
		default:
			continue // still held
		}
		if _, err := tx.ExecContext(ctx, l.db.q(`DELETE FROM held WHERE edge = ? AND epoch = ? AND publisher = ? AND root = ?`),
			g.edge, g.epoch, g.publisher, g.root); err != nil {
			return err
		}
	}
	return nil
}

// claimsFlow reports whether billing stored a read order (of any reader,
// from any storage peer) for one of shards.
func (l *Ledger) claimsFlow(ctx context.Context, tx querier, shards []string) (bool, error) {
	for start := 0; start < len(shards); start += 500 {
		chunk := shards[start:min(start+500, len(shards))]
		args := make([]any, len(chunk))
		for i, s := range chunk {
			args[i] = s
		}
		var n int64
		if err := tx.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM (SELECT 1 FROM reads WHERE shard IN (?`+
			strings.Repeat(",?", len(chunk)-1)+`) LIMIT 1) x`), args...).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// backed reports whether billing stored a read order signed by edge for a
// shard of publisher's content.
func (l *Ledger) backed(ctx context.Context, tx querier, edge, publisher string) (bool, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM (SELECT 1 FROM reads WHERE reader = ? AND publisher = ? LIMIT 1) x`),
		edge, publisher).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}
