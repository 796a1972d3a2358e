package billing

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

// maxRecordBytes bounds the bytes one record may bill (1 TiB), whatever
// size the publisher declares for the object (a UnixFS file size is the
// publisher's word). With MaxParts batches of MaxRecords records, an
// edge's accepted bytes for an epoch stay below 2^63, so the sums of
// ingest and settlement (SQL sum over BIGINT) cannot overflow.
const maxRecordBytes = 1 << 40

// acceptedRecord is a record that passed every check but the replay check.
type acceptedRecord struct {
	serial    uint64
	publisher string
	cid       string
	root      string
	dkey      string // the demand key: the site as the DNS router counts it
	path      string // the request's path, informational
	bytes     int64
	// pending is the record as sent when its content could not be
	// resolved now: stored as pending (see pending.go), not paid yet.
	pending *billingapi.Record
}

// IngestBatch verifies an edge's signed batch and stores what it may be
// paid for. from is the address the batch came from (for the self-dealing
// check; the zero Addr skips it). A refusal of the whole batch is a
// *RejectError, recorded; other errors are transient (send the same batch
// again).
func (l *Ledger) IngestBatch(ctx context.Context, env *identity.Envelope, from netip.Addr) (*billingapi.BatchResult, error) {
	batch, signer, err := billingapi.OpenBatch(env)
	if err != nil {
		reason := billingapi.ReasonMalformed
		if errors.Is(err, identity.ErrBadSignature) {
			reason = billingapi.ReasonSignature
		}
		rerr := &RejectError{Reason: reason, Err: err}
		// Only a verified signer has a statement to show the refusal in:
		// an envelope that does not verify is nobody's, whatever it names.
		if err := l.rejectNow(ctx, rejection{account: signer.String(), kind: "batch", reason: reason, detail: err.Error()}); err != nil {
			return nil, err
		}
		return nil, rerr
	}
	edge := signer.String()
	rejectBatch := func(err error) (*billingapi.BatchResult, error) {
		if rerr := l.rejectNow(ctx, rejection{account: edge, epoch: batch.Epoch, kind: "batch",
			ref: strconv.FormatUint(batch.Seq, 10), reason: reasonOf(err), detail: err.Error(), bytes: claimed(batch.Records)}); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	if err := l.checkEpoch(ctx, batch.Epoch, batch.EpochSeconds); err != nil {
		return rejectBatch(err)
	}
	sum := sha256.Sum256(env.Body)
	digest := hex.EncodeToString(sum[:])
	if res, err := l.duplicateBatch(ctx, edge, batch, digest); res != nil || err != nil {
		if reasonOf(err) != "" {
			return rejectBatch(err)
		}
		return res, err
	}
	if err := l.checkAdmitted(ctx, edge, batch.Epoch); err != nil {
		if reasonOf(err) == "" {
			return nil, err
		}
		return rejectBatch(err)
	}
	accepted, rejected, err := l.checkRecords(ctx, signer, batch.Epoch, batch.Salt, batch.Records, from)
	if err != nil {
		return nil, err
	}
	return l.store(ctx, edge, batch.Epoch, batch, digest, accepted, rejected)
}

// claimed sums the bytes of records, saturating at the int64 maximum:
// records of absurd sizes (refused as inflated) must not wrap the total.
func claimed(recs []billingapi.Record) int64 {
	var n int64
	for i := range recs {
		n = addBytes(n, recs[i].Bytes)
	}
	return n
}

// addBytes returns a+b for byte counts a, b >= 0, saturating at the int64
// maximum.
func addBytes(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// checkEpoch checks an epoch against the accepted window.
func (l *Ledger) checkEpoch(ctx context.Context, epoch, secs int64) error {
	now := l.opts.now()
	switch {
	case secs != l.secs:
		return reject(billingapi.ReasonEpochLength, "epoch length %d s, billing's is %d s", secs, l.secs)
	case time.Unix(epoch, 0).After(now.Add(skew)):
		return reject(billingapi.ReasonEpochFuture, "epoch %d starts in the future", epoch)
	case time.Unix(epoch+secs, 0).Before(now.Add(-l.opts.AcceptWindow)):
		return reject(billingapi.ReasonEpochStale, "epoch %d ended more than %s ago", epoch, l.opts.AcceptWindow)
	}
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return err
	}
	if epoch <= last {
		return reject(billingapi.ReasonEpochSettled, "epoch %d is settled (last settled %d)", epoch, last)
	}
	return nil
}

// duplicateBatch returns the stored result when this exact batch was
// accepted before, a replay_batch refusal when another batch holds its
// (edge, epoch, part) or its sequence number, and nil, nil for a new batch.
func (l *Ledger) duplicateBatch(ctx context.Context, edge string, b *billingapi.Batch, digest string) (*billingapi.BatchResult, error) {
	var (
		epoch, part, seq, records int64
		have                      string
	)
	err := l.db.QueryRowContext(ctx, l.db.q(`SELECT epoch, part, seq, digest, records FROM batches
		WHERE edge = ? AND ((epoch = ? AND part = ?) OR seq = ?)`), edge, b.Epoch, b.Part, int64(b.Seq)).Scan(&epoch, &part, &seq, &have, &records)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("billing: look up batch: %w", err)
	case have == digest:
		l.metrics.claims.WithLabelValues("batch", "accepted", "duplicate").Inc()
		return &billingapi.BatchResult{Accepted: int(records), Duplicate: true, Rejected: []billingapi.RecordRejection{}}, nil
	case epoch == b.Epoch && part == int64(b.Part):
		return nil, reject(billingapi.ReasonReplayBatch, "edge already reported part %d of epoch %d with other content", b.Part, b.Epoch)
	default:
		return nil, reject(billingapi.ReasonReplayBatch, "sequence %d already used for epoch %d", b.Seq, epoch)
	}
}

// checkRecords runs the per-record checks that need no ledger state.
func (l *Ledger) checkRecords(ctx context.Context, edge peer.ID, epoch int64, salt []byte, recs []billingapi.Record,
	from netip.Addr) ([]acceptedRecord, []billingapi.RecordRejection, error) {
	lo, hi := epoch*1000, (epoch+l.secs)*1000
	self, others := l.clientSets(edge.String(), salt, from)
	seen := make(map[uint64]bool, len(recs))
	names := map[peer.ID]string{} // peer ID strings, base58-encoded once
	dkeys := map[string]string{}  // record name or root -> demand key
	var (
		ok  []acceptedRecord
		bad []billingapi.RecordRejection
	)
	for i := range recs {
		r := &recs[i]
		refuse := func(err error) {
			bad = append(bad, billingapi.RecordRejection{Serial: r.Serial, Reason: reasonOf(err), Detail: err.Error()})
		}
		if seen[r.Serial] {
			refuse(reject(billingapi.ReasonReplayRecord, "serial %d twice in the batch", r.Serial))
			continue
		}
		seen[r.Serial] = true
		if r.Time < lo-skew.Milliseconds() || r.Time >= hi+skew.Milliseconds() {
			refuse(reject(billingapi.ReasonRecordTime, "served at %d ms, outside epoch %d", r.Time, epoch))
			continue
		}
		if r.Bytes == 0 {
			continue // nothing to pay, nothing to refuse
		}
		if r.Status < 200 || r.Status > 299 {
			refuse(reject(billingapi.ReasonStatus, "%d bytes claimed for a %d response", r.Bytes, r.Status))
			continue
		}
		if other, ok := others[string(r.Client)]; ok {
			refuse(reject(billingapi.ReasonEdgeClient, "request came from an address of edge %s: serving another edge is not serving a client", other))
			continue
		}
		if p, ok := self[string(r.Client)]; ok {
			refuse(reject(billingapi.ReasonSelfDealing, "request came from the edge's own network %s", p))
			continue
		}
		obj, err := l.object(ctx, r)
		var pending *billingapi.Record
		if err != nil {
			if reasonOf(err) != "" {
				refuse(err)
				continue
			}
			// The content cannot be resolved now (the origin answered
			// 5xx, timed out, served a CAR cut short): the record is
			// deferred to settlement once the checks below that need no
			// content pass, and the rest of the batch goes on.
			obj, pending = witness.Object{MaxBytes: maxRecordBytes}, deferRecord(r)
		}
		switch {
		case r.Bytes > obj.MaxBytes:
			refuse(reject(billingapi.ReasonInflated, "%d bytes claimed for %s, which has %d", r.Bytes, r.CID, obj.MaxBytes))
			continue
		case r.Bytes > maxRecordBytes:
			refuse(reject(billingapi.ReasonInflated, "%d bytes claimed for %s, more than the %d a response may bill", r.Bytes, r.CID, int64(maxRecordBytes)))
			continue
		case obj.Publisher == edge:
			refuse(reject(billingapi.ReasonSelfDealing, "edge %s serves its own publisher's site", edge))
			continue
		}
		name, found := names[obj.Publisher]
		if !found {
			name = obj.Publisher.String()
			names[obj.Publisher] = name
		}
		dk := r.Name
		if dk == "" {
			dk = r.Root
		}
		key, found := dkeys[dk]
		if !found {
			key = dkeyOf(r.Name, r.Root)
			dkeys[dk] = key
		}
		ok = append(ok, acceptedRecord{serial: r.Serial, publisher: name, cid: r.CID, root: obj.Root, dkey: key, path: r.Path, bytes: r.Bytes,
			pending: pending})
	}
	return ok, bad, nil
}

// loopbackPrefixes are the client prefixes of loopback addresses
// (billingapi.ClientPrefix): requests from there are an edge's own, unless
// shared (SharedPrefixes).
var loopbackPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/24"),
	netip.MustParsePrefix("::1/128")}

// clientSets returns, as client hashes under salt, the edge's own
// networks (self: loopback, the address its batch came from, the
// addresses its heartbeats list) and the networks of other edges the
// router reached at an address (others, hash to peer ID; loopback and
// the edge's own excluded), each minus SharedPrefixes. A request from
// the first is the edge's own traffic; from the second, another edge
// fetching through it, as a proxy in front of it does: the client bytes
// of that are the proxy's, within its own demand, not this edge's.
func (l *Ledger) clientSets(edge string, salt []byte, from netip.Addr) (self map[string]netip.Prefix, others map[string]string) {
	prefixes := slices.Clone(loopbackPrefixes)
	if from.IsValid() {
		prefixes = append(prefixes, billingapi.ClientPrefix(from))
	}
	var all map[string]edgeAddrs
	if p := l.addrs.Load(); p != nil {
		all = *p
	}
	mine := all[edge]
	for _, a := range slices.Concat(mine.own, mine.verified) {
		prefixes = append(prefixes, billingapi.ClientPrefix(a))
	}
	self = make(map[string]netip.Prefix, len(prefixes))
	for _, p := range prefixes {
		if !l.shared(p) {
			self[string(billingapi.PrefixHash(salt, p))] = p
		}
	}
	others = map[string]string{}
	for id, ea := range all {
		if id == edge {
			continue
		}
		for _, a := range ea.verified {
			p := billingapi.ClientPrefix(a)
			if a.IsLoopback() || l.shared(p) {
				continue
			}
			h := string(billingapi.PrefixHash(salt, p))
			if _, own := self[h]; !own {
				others[h] = id
			}
		}
	}
	return self, others
}

// shared reports whether client prefix p lies in one of SharedPrefixes.
func (l *Ledger) shared(p netip.Prefix) bool {
	for _, s := range l.opts.SharedPrefixes {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// store writes an accepted batch (b may be nil for records signed one by
// one), its records minus replays, and its rejections in one transaction.
func (l *Ledger) store(ctx context.Context, edge string, epoch int64, b *billingapi.Batch, digest string, ok []acceptedRecord,
	bad []billingapi.RecordRejection) (*billingapi.BatchResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Settlement may have closed the epoch since checkEpoch: records stored
	// now would be neither paid nor shown as refused.
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return nil, err
	}
	if epoch <= last {
		err := reject(billingapi.ReasonEpochSettled, "epoch %d was settled while the batch was checked", epoch)
		if rerr := l.rejectNow(ctx, rejection{account: edge, epoch: epoch, kind: "batch", reason: billingapi.ReasonEpochSettled,
			detail: err.Error()}); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("billing: %w", err)
	}
	defer tx.Rollback()
	if b != nil {
		res, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO batches (edge, epoch, part, seq, digest, url, records, at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`), edge, b.Epoch, b.Part, int64(b.Seq), digest, b.URL, len(ok), l.opts.now().UnixNano())
		if err != nil {
			return nil, fmt.Errorf("billing: store batch: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 { // raced with the same batch
			return nil, fmt.Errorf("billing: %w: batch of epoch %d stored concurrently", errTransient, b.Epoch)
		}
	}
	replayed, err := l.replayedSerials(ctx, tx, edge, ok)
	if err != nil {
		return nil, err
	}
	res := &billingapi.BatchResult{Rejected: bad}
	fresh := make([]acceptedRecord, 0, len(ok))
	var deferred []acceptedRecord
	for _, r := range ok {
		if replayed[r.serial] {
			res.Rejected = append(res.Rejected, billingapi.RecordRejection{Serial: r.serial, Reason: billingapi.ReasonReplayRecord,
				Detail: fmt.Sprintf("serial %d was reported before", r.serial)})
			continue
		}
		if r.pending != nil {
			deferred = append(deferred, r)
			continue
		}
		fresh = append(fresh, r)
		res.Bytes += r.bytes
	}
	res.Accepted = len(fresh)
	if err := l.insertRecords(ctx, tx, edge, epoch, fresh); err != nil {
		return nil, err
	}
	if err := l.addEdgeKeys(ctx, tx, edge, epoch, fresh); err != nil {
		return nil, err
	}
	if res.Deferred, err = l.insertPending(ctx, tx, edge, epoch, deferred); err != nil {
		return nil, err
	}
	if b != nil && len(fresh) != len(ok) {
		if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE batches SET records = ? WHERE edge = ? AND epoch = ? AND part = ?`), len(fresh), edge, b.Epoch, b.Part); err != nil {
			return nil, fmt.Errorf("billing: store batch: %w", err)
		}
	}
	rs := make([]rejection, len(res.Rejected))
	for i, r := range res.Rejected {
		rs[i] = rejection{account: edge, epoch: epoch, kind: "record", ref: strconv.FormatUint(r.Serial, 10),
			reason: r.Reason, detail: r.Detail}
	}
	if err := l.insertRejections(ctx, tx, rs); err != nil {
		return nil, err
	}
	if err := l.ensureAccount(ctx, tx, edge, "edge"); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("billing: store batch: %w", err)
	}
	l.countBatch(edge, epoch, res)
	l.metrics.claims.WithLabelValues("record", "deferred", "").Add(float64(len(res.Deferred)))
	return res, nil
}

// replayedSerials returns which of the serials of ok edge has reported
// before (records stored or pending, pending.go). A Reporter's serials
// only grow, so one range query usually finds none; a batch whose range
// holds many earlier serials is checked serial by serial, 500 at a time.
func (l *Ledger) replayedSerials(ctx context.Context, tx querier, edge string, ok []acceptedRecord) (map[uint64]bool, error) {
	replayed := map[uint64]bool{}
	if len(ok) == 0 {
		return replayed, nil
	}
	lo, hi := ok[0].serial, ok[0].serial
	in := make(map[uint64]bool, len(ok))
	for _, r := range ok {
		lo, hi = min(lo, r.serial), max(hi, r.serial)
		in[r.serial] = true
	}
	if hi <= math.MaxInt64 {
		limit := 2*len(ok) + 1
		n := 0
		err := scanSerials(ctx, tx, l.db.q(`SELECT serial FROM records WHERE edge = ? AND serial BETWEEN ? AND ?
			UNION ALL SELECT serial FROM pending WHERE edge = ? AND serial BETWEEN ? AND ? LIMIT `+strconv.Itoa(limit)),
			[]any{edge, int64(lo), int64(hi), edge, int64(lo), int64(hi)}, func(s uint64) {
				n++
				if in[s] {
					replayed[s] = true
				}
			})
		if err != nil {
			return nil, err
		}
		if n < limit {
			return replayed, nil
		}
		clear(replayed)
	}
	for start := 0; start < len(ok); start += 500 {
		chunk := ok[start:min(start+500, len(ok))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, edge)
		for _, r := range chunk {
			args = append(args, int64(r.serial))
		}
		in := `(?` + strings.Repeat(",?", len(chunk)-1) + `)`
		if err := scanSerials(ctx, tx, l.db.q(`SELECT serial FROM records WHERE edge = ? AND serial IN `+in+
			` UNION ALL SELECT serial FROM pending WHERE edge = ? AND serial IN `+in), append(args, args...),
			func(s uint64) { replayed[s] = true }); err != nil {
			return nil, err
		}
	}
	return replayed, nil
}

// scanSerials runs query and calls fn with each serial it returns.
func scanSerials(ctx context.Context, tx querier, query string, args []any, fn func(uint64)) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("billing: replay check: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("billing: replay check: %w", err)
		}
		fn(uint64(s))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("billing: replay check: %w", err)
	}
	return nil
}

// countBatch adds a stored batch to the metrics and logs it.
func (l *Ledger) countBatch(edge string, epoch int64, res *billingapi.BatchResult) {
	l.metrics.claims.WithLabelValues("batch", "accepted", "").Inc()
	l.metrics.claims.WithLabelValues("record", "accepted", "").Add(float64(res.Accepted))
	l.metrics.bytes.WithLabelValues("served", "accepted").Add(float64(res.Bytes))
	for _, r := range res.Rejected {
		l.metrics.claims.WithLabelValues("record", "rejected", string(r.Reason)).Inc()
	}
	l.log.Debug("batch accepted", zap.String("edge", edge), zap.Int64("epoch", epoch), zap.Int("records", res.Accepted),
		zap.Int("rejected", len(res.Rejected)), zap.Int64("bytes", res.Bytes))
}

// insertRecords stores records, many per statement; the statement of a
// full chunk is prepared once per call (parsing it again for each chunk
// was a third of the cost of storing).
func (l *Ledger) insertRecords(ctx context.Context, tx querier, edge string, epoch int64, recs []acceptedRecord) error {
	const per = 400 // 8 parameters a row: well within SQLite's and PostgreSQL's limits
	query := func(n int) string {
		return l.db.q(`INSERT INTO records (edge, serial, epoch, publisher, cid, bytes, root, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)` +
			strings.Repeat(", (?, ?, ?, ?, ?, ?, ?, ?)", n-1))
	}
	var full *sql.Stmt
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	args := make([]any, 0, 8*per)
	for start := 0; start < len(recs); start += per {
		chunk := recs[start:min(start+per, len(recs))]
		args = args[:0]
		for _, r := range chunk {
			args = append(args, edge, int64(r.serial), epoch, r.publisher, r.cid, r.bytes, r.root, r.path)
		}
		var err error
		switch {
		case len(chunk) < per:
			_, err = tx.ExecContext(ctx, query(len(chunk)), args...)
		case full == nil:
			if full, err = tx.PrepareContext(ctx, query(per)); err == nil {
				_, err = full.ExecContext(ctx, args...)
			}
		default:
			_, err = full.ExecContext(ctx, args...)
		}
		if err != nil {
			return fmt.Errorf("billing: store records: %w", err)
		}
	}
	return nil
}

// addEdgeKeys adds stored records to their edge's sums per (epoch, demand
// key, publisher, root), which settlement bounds by the evidence.
func (l *Ledger) addEdgeKeys(ctx context.Context, tx querier, edge string, epoch int64, recs []acceptedRecord) error {
	type k struct{ dkey, publisher, root string }
	type sum struct{ bytes, records int64 }
	sums := map[k]*sum{}
	var order []k
	for _, r := range recs {
		key := k{r.dkey, r.publisher, r.root}
		s := sums[key]
		if s == nil {
			s = &sum{}
			sums[key] = s
			order = append(order, key)
		}
		s.bytes += r.bytes
		s.records++
	}
	q := l.db.q(`INSERT INTO edge_keys (edge, epoch, dkey, publisher, root, bytes, records) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (edge, epoch, dkey, publisher, root) DO UPDATE SET bytes = edge_keys.bytes + excluded.bytes,
		records = edge_keys.records + excluded.records`)
	for _, key := range order {
		s := sums[key]
		if _, err := tx.ExecContext(ctx, q, edge, epoch, key.dkey, key.publisher, key.root, s.bytes, s.records); err != nil {
			return fmt.Errorf("billing: store edge sums: %w", err)
		}
	}
	return nil
}

// IngestRecords verifies records signed one by one (TypeRecord
// envelopes) and stores them as IngestBatch would, without a batch row.
// It is the per-record-signature baseline the batch format is measured
// against (go run ./bench billing); the service does not expose it.
func (l *Ledger) IngestRecords(ctx context.Context, envs []*identity.Envelope, from netip.Addr) (*billingapi.BatchResult, error) {
	type group struct {
		edge  peer.ID
		epoch int64
		salt  []byte
		recs  []billingapi.Record
	}
	groups := map[string]*group{}
	var order []string
	for _, env := range envs {
		var rc billingapi.RecordClaim
		signer, err := env.Open(billingapi.TypeRecord, &rc)
		if err != nil || rc.Edge != signer.String() || len(rc.Salt) != billingapi.SaltSize || rc.Record.Validate() != nil {
			return nil, reject(billingapi.ReasonSignature, "record envelope: %v", err)
		}
		if err := l.checkEpoch(ctx, rc.Epoch, rc.EpochSeconds); err != nil {
			return nil, err
		}
		k := rc.Edge + "/" + strconv.FormatInt(rc.Epoch, 10) + "/" + hex.EncodeToString(rc.Salt)
		g := groups[k]
		if g == nil {
			g = &group{edge: signer, epoch: rc.Epoch, salt: rc.Salt}
			groups[k] = g
			order = append(order, k)
		}
		g.recs = append(g.recs, rc.Record)
	}
	total := &billingapi.BatchResult{Rejected: []billingapi.RecordRejection{}}
	for _, k := range order {
		g := groups[k]
		if err := l.checkAdmitted(ctx, g.edge.String(), g.epoch); err != nil {
			return nil, err
		}
		ok, bad, err := l.checkRecords(ctx, g.edge, g.epoch, g.salt, g.recs, from)
		if err != nil {
			return nil, err
		}
		res, err := l.store(ctx, g.edge.String(), g.epoch, nil, "", ok, bad)
		if err != nil {
			return nil, err
		}
		total.Accepted += res.Accepted
		total.Bytes += res.Bytes
		total.Rejected = append(total.Rejected, res.Rejected...)
		total.Deferred = append(total.Deferred, res.Deferred...)
	}
	return total, nil
}
