package billing

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
)

// No poison: a record whose content billing cannot resolve when its batch
// comes (the origin answered 5xx, timed out, served a CAR cut short) holds
// up neither its batch nor the others. It is stored as pending, once the
// checks that need no content passed, its serial taken, and listed in the
// batch's answer (BatchResult.Deferred). Every settlement resolves the
// pending records of the epochs it settles again, before its transaction
// (as it reads other witnesses), then applies what it found inside it:
//
//   - resolved: the record gets the checks of its object (inflated,
//     self-dealing) and, passing them, is stored as an accepted record of
//     its epoch and added to the edge's sums (edge_keys) of that epoch. In
//     the settlement of its own epoch it is then bounded and paid with the
//     epoch's other records; resolved later, its epoch settled already,
//     the edge is paid what the evidence bound of that epoch grows by with
//     it (payLate), through the upstream-read check as well.
//   - refused by the witness (unindexable, unpublished …): refused with
//     its reason.
//   - still unresolved BackingWait after it was deferred (and after this
//     process started): refused as unindexable.
//
// A refused record's row is kept, marked refused, so that its serial
// stays taken. All of it happens in the epoch's transaction: a crash
// leaves the pending records as they were.

// deferRecord returns a copy of r to store as pending.
func deferRecord(r *billingapi.Record) *billingapi.Record {
	c := *r
	return &c
}

// insertPending stores the deferred records of edge's batch of epoch as
// pending and returns their serials.
func (l *Ledger) insertPending(ctx context.Context, tx querier, edge string, epoch int64, recs []acceptedRecord) ([]uint64, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	since := l.opts.now().UnixNano()
	q := l.db.q(`INSERT INTO pending (edge, serial, epoch, name, root, cid, bytes, time_ms, client, since, path)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	out := make([]uint64, 0, len(recs))
	for _, a := range recs {
		r := a.pending
		if _, err := tx.ExecContext(ctx, q, edge, int64(r.Serial), epoch, r.Name, r.Root, r.CID, r.Bytes, r.Time,
			hex.EncodeToString(r.Client), since, r.Path); err != nil {
			return nil, fmt.Errorf("billing: store pending record: %w", err)
		}
		out = append(out, r.Serial)
	}
	return out, nil
}

// pendingRow is a pending record as stored.
type pendingRow struct {
	edge  string
	epoch int64
	rec   billingapi.Record
	since int64 // Unix ns
}

// pendingKey names a pending record.
type pendingKey struct {
	edge   string
	serial uint64
}

// resolution is what resolving a pending record again found.
type resolution struct {
	obj witness.Object
	err error
}

// loadPending returns the pending records (not refused) of the epochs up
// to upto.
func (l *Ledger) loadPending(ctx context.Context, q querier, upto int64) ([]pendingRow, error) {
	rows, err := q.QueryContext(ctx, l.db.q(`SELECT edge, serial, epoch, name, root, cid, bytes, time_ms, client, since, path FROM pending
		WHERE refused = 0 AND epoch <= ? ORDER BY epoch, edge, serial`), upto)
	if err != nil {
		return nil, fmt.Errorf("billing: pending records: %w", err)
	}
	defer rows.Close()
	var out []pendingRow
	for rows.Next() {
		var (
			p      pendingRow
			serial int64
			client string
		)
		if err := rows.Scan(&p.edge, &serial, &p.epoch, &p.rec.Name, &p.rec.Root, &p.rec.CID, &p.rec.Bytes, &p.rec.Time,
			&client, &p.since, &p.rec.Path); err != nil {
			return nil, fmt.Errorf("billing: pending records: %w", err)
		}
		p.rec.Serial = uint64(serial)
		p.rec.Client, _ = hex.DecodeString(client)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: pending records: %w", err)
	}
	return out, nil
}

// resolvePending resolves the pending records of the epochs up to upto
// again, outside any transaction: what the witness answers, each.
func (l *Ledger) resolvePending(ctx context.Context, upto int64) (map[pendingKey]resolution, error) {
	rows, err := l.loadPending(ctx, l.db, upto)
	if err != nil {
		return nil, err
	}
	out := make(map[pendingKey]resolution, len(rows))
	for _, p := range rows {
		obj, err := l.object(ctx, &p.rec)
		out[pendingKey{p.edge, p.rec.Serial}] = resolution{obj: obj, err: err}
	}
	return out, nil
}

// pendingResult is what one settlement did with pending records: the
// lines to pay for those resolved after their epoch was settled, the
// refusals, and counts for the metrics (added once the transaction
// commits).
type pendingResult struct {
	lines    []line
	refused  []rejection
	accepted int
}

// count adds the results to the metrics.
func (p *pendingResult) count(l *Ledger) {
	l.metrics.claims.WithLabelValues("record", "accepted", "").Add(float64(p.accepted))
	for _, r := range p.refused {
		if r.kind == "record" {
			l.metrics.claims.WithLabelValues("record", "rejected", string(r.reason)).Inc()
		}
	}
}

// edgeEpoch names an edge's epoch.
type edgeEpoch struct {
	edge  string
	epoch int64
}

// settlePending applies, inside the settlement of epoch (tx), what
// resolvePending found for the pending records of the epochs up to epoch
// (see the comment at the top of this file). striped is as for
// checkUpstream.
func (l *Ledger) settlePending(ctx context.Context, tx querier, epoch int64, found map[pendingKey]resolution,
	striped map[string][]string) (*pendingResult, error) {
	out := &pendingResult{}
	if len(found) == 0 {
		return out, nil
	}
	rows, err := l.loadPending(ctx, tx, epoch)
	if err != nil {
		return nil, err
	}
	now := l.opts.now()
	accepted := map[edgeEpoch][]acceptedRecord{}
	var order []edgeEpoch
	for _, p := range rows {
		r, ok := found[pendingKey{p.edge, p.rec.Serial}]
		if !ok {
			continue // deferred after this settlement resolved: the next one will
		}
		since := time.Unix(0, p.since)
		if l.started.After(since) {
			since = l.started
		}
		var refusal error
		switch {
		case r.err == nil:
			a, err := checkResolved(p, r.obj)
			if err != nil {
				refusal = err
				break
			}
			if _, err := tx.ExecContext(ctx, l.db.q(`DELETE FROM pending WHERE edge = ? AND serial = ?`), p.edge, int64(p.rec.Serial)); err != nil {
				return nil, fmt.Errorf("billing: pending record: %w", err)
			}
			k := edgeEpoch{p.edge, p.epoch}
			if accepted[k] == nil {
				order = append(order, k)
			}
			accepted[k] = append(accepted[k], a)
			continue
		case reasonOf(r.err) != "":
			refusal = r.err
		case !now.Before(since.Add(l.opts.BackingWait)):
			refusal = reject(billingapi.ReasonUnindexable, "the content of %s could not be resolved within %s: %v", p.rec.CID, l.opts.BackingWait, r.err)
		default:
			continue // still pending
		}
		if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE pending SET refused = 1 WHERE edge = ? AND serial = ?`), p.edge, int64(p.rec.Serial)); err != nil {
			return nil, fmt.Errorf("billing: pending record: %w", err)
		}
		out.refused = append(out.refused, rejection{account: p.edge, epoch: p.epoch, kind: "record", ref: strconv.FormatUint(p.rec.Serial, 10),
			reason: reasonOf(refusal), detail: refusal.Error(), bytes: p.rec.Bytes})
	}
	flowing := map[string]bool{}
	for _, k := range order {
		recs := accepted[k]
		out.accepted += len(recs)
		if k.epoch == epoch {
			// Bounded and paid with the epoch's other records.
			if err := l.insertRecords(ctx, tx, k.edge, k.epoch, recs); err != nil {
				return nil, err
			}
			if err := l.addEdgeKeys(ctx, tx, k.edge, k.epoch, recs); err != nil {
				return nil, err
			}
			continue
		}
		if err := l.payLate(ctx, tx, k, recs, striped, flowing, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkResolved runs the checks of a resolved pending record against its
// object, as checkRecords does at ingest, and returns it accepted.
func checkResolved(p pendingRow, obj witness.Object) (acceptedRecord, error) {
	r := &p.rec
	publisher := obj.Publisher.String()
	switch {
	case r.Bytes > obj.MaxBytes:
		return acceptedRecord{}, reject(billingapi.ReasonInflated, "%d bytes claimed for %s, which has %d", r.Bytes, r.CID, obj.MaxBytes)
	case r.Bytes > maxRecordBytes:
		return acceptedRecord{}, reject(billingapi.ReasonInflated, "%d bytes claimed for %s, more than the %d a response may bill",
			r.Bytes, r.CID, int64(maxRecordBytes))
	case publisher == p.edge:
		return acceptedRecord{}, reject(billingapi.ReasonSelfDealing, "edge %s serves its own publisher's site", p.edge)
	}
	return acceptedRecord{serial: r.Serial, publisher: publisher, cid: r.CID, root: obj.Root, dkey: dkeyOf(r.Name, r.Root), path: r.Path,
		bytes: r.Bytes}, nil
}

// payLate stores records of k resolved after k's epoch was settled and
// adds to out what the edge is paid for them: what the evidence bound of
// the edge's epoch (boundEdge) grows by with them, shared among their
// (publisher, root) groups by bytes, each group through the upstream-read
// check (paid, or held); and the bound's refusals that grow with them.
func (l *Ledger) payLate(ctx context.Context, tx querier, k edgeEpoch, recs []acceptedRecord, striped map[string][]string,
	flowing map[string]bool, out *pendingResult) error {
	before, beforeRefused, _, err := l.boundOf(ctx, tx, k)
	if err != nil {
		return err
	}
	if err := l.insertRecords(ctx, tx, k.edge, k.epoch, recs); err != nil {
		return err
	}
	if err := l.addEdgeKeys(ctx, tx, k.edge, k.epoch, recs); err != nil {
		return err
	}
	after, _, afterRefused, err := l.boundOf(ctx, tx, k)
	if err != nil {
		return err
	}
	for _, r := range afterRefused {
		key := string(r.reason) + "\x00" + r.ref
		if grew := r.bytes - beforeRefused[key]; grew > 0 {
			r.bytes = grew
			r.detail = fmt.Sprintf("records resolved after the epoch was settled: %d more bytes refused: %s", grew, r.detail)
			out.refused = append(out.refused, r)
		}
	}
	// The records' groups, by (publisher, root).
	type pr struct{ publisher, root string }
	sums := map[pr]*recordGroup{}
	var groups []*recordGroup
	for _, r := range recs {
		g := sums[pr{r.publisher, r.root}]
		if g == nil {
			g = &recordGroup{edge: k.edge, publisher: r.publisher, root: r.root, epoch: k.epoch}
			sums[pr{r.publisher, r.root}] = g
			groups = append(groups, g)
		}
		g.records++
		g.bytes += r.bytes
	}
	slices.SortFunc(groups, func(a, b *recordGroup) int {
		return cmp.Or(strings.Compare(a.publisher, b.publisher), strings.Compare(a.root, b.root))
	})
	weights := make([]int64, len(groups))
	for i, g := range groups {
		weights[i] = g.bytes
	}
	for i, n := range split(max(after-before, 0), weights) {
		if n == 0 {
			continue
		}
		g := *groups[i]
		g.bytes = n
		result, err := l.judgeGroup(ctx, tx, g, striped[g.root], flowing)
		if err != nil {
			return err
		}
		if result == "deferred" {
			if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO held (edge, epoch, publisher, root, records, bytes, since)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (edge, epoch, publisher, root) DO UPDATE SET
				records = held.records + excluded.records, bytes = held.bytes + excluded.bytes`),
				g.edge, g.epoch, g.publisher, g.root, g.records, g.bytes, l.opts.now().UnixNano()); err != nil {
				return fmt.Errorf("billing: hold late records: %w", err)
			}
			continue
		}
		out.lines = append(out.lines, line{operator: g.edge, opKind: "edge", publisher: g.publisher, kind: "served", bytes: g.bytes,
			amount: ServedAmount(g.bytes, l.opts.PricePerGiBServed), from: g.epoch,
			memo: fmt.Sprintf("served: %d bytes of %s's content by %s in epoch %d, its content resolved after the epoch was settled",
				g.bytes, g.publisher, g.edge, g.epoch)})
	}
	return nil
}

// boundOf returns what the evidence bound pays edge k.edge for epoch
// k.epoch from its sums as stored now (nothing for a forfeited epoch), and
// the bound's refusals by reason and ref.
func (l *Ledger) boundOf(ctx context.Context, tx querier, k edgeEpoch) (int64, map[string]int64, []rejection, error) {
	rows, err := tx.QueryContext(ctx, l.db.q(`SELECT edge, dkey, publisher, root, bytes, records FROM edge_keys e
		WHERE edge = ? AND epoch = ? AND NOT EXISTS (SELECT 1 FROM forfeits f WHERE f.edge = e.edge AND f.epoch = e.epoch)
		ORDER BY dkey, publisher, root`), k.edge, k.epoch)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("billing: late bound: %w", err)
	}
	var groups []keyGroup
	for rows.Next() {
		g := keyGroup{recordGroup: recordGroup{epoch: k.epoch}}
		if err := rows.Scan(&g.edge, &g.dkey, &g.publisher, &g.root, &g.bytes, &g.records); err != nil {
			rows.Close()
			return 0, nil, nil, fmt.Errorf("billing: late bound: %w", err)
		}
		groups = append(groups, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("billing: late bound: %w", err)
	}
	if len(groups) == 0 {
		return 0, map[string]int64{}, nil, nil
	}
	ev, err := l.evidenceOf(ctx, tx, k.epoch)
	if err != nil {
		return 0, nil, nil, err
	}
	adm, err := l.admissions(ctx, tx)
	if err != nil {
		return 0, nil, nil, err
	}
	paid, refused, err := l.boundEdge(ctx, k.epoch, groups, ev[k.edge], adm, newBoundCache(tx), true)
	if err != nil {
		return 0, nil, nil, err
	}
	var total int64
	for _, g := range paid {
		total += g.bytes
	}
	byKey := map[string]int64{}
	for _, r := range refused {
		byKey[string(r.reason)+"\x00"+r.ref] += r.bytes
	}
	return total, byKey, refused, nil
}

// pendingOf returns edge's pending records, for its statement.
func (l *Ledger) pendingOf(ctx context.Context, edge string) ([]billingapi.PendingRecord, error) {
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT epoch, serial, name, root, cid, bytes, since FROM pending
		WHERE edge = ? AND refused = 0 ORDER BY epoch, serial`), edge)
	if err != nil {
		return nil, fmt.Errorf("billing: statement: %w", err)
	}
	defer rows.Close()
	out := []billingapi.PendingRecord{}
	for rows.Next() {
		var (
			p             billingapi.PendingRecord
			serial, since int64
		)
		if err := rows.Scan(&p.Epoch, &serial, &p.Name, &p.Root, &p.CID, &p.Bytes, &since); err != nil {
			return nil, fmt.Errorf("billing: statement: %w", err)
		}
		p.Serial, p.Since = uint64(serial), time.Unix(0, since).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}
