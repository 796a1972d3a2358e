package origin

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// nameRE is what a human name may look like: one DNS label, lower case, so
// that NAME.cdn.example works as a host name.

// reservedNames cannot be claimed: they are the subdomain gateway's labels.

// acceptedRecord is a record that passed every check but the sequence.
type acceptedRecord struct {
	name     ipns.Name
	raw      []byte
	seq      uint64
	value    path.Path
	validity time.Time
	ttl      time.Duration
	human    string // the topcdn-name metadata, if any
}

// parseRecord unmarshals raw and validates it for name: size, encoding,
// signature and validity (EOL).
func parseRecord(name ipns.Name, raw []byte, now time.Time) (*acceptedRecord, error) {
	if len(raw) > ipns.MaxRecordSize {
		return nil, errorf(ErrTooLarge, "IPNS record is %d bytes, at most %d allowed", len(raw), ipns.MaxRecordSize)
	}
	rec, err := ipns.UnmarshalRecord(raw)
	if err != nil {
		return nil, errorf(ErrBadRequest, "malformed IPNS record: %v", err)
	}
	if err := ipns.ValidateWithName(rec, name); err != nil {
		return nil, errorf(ErrBadRequest, "IPNS record for %s rejected: %v", name, err)
	}
	a := &acceptedRecord{name: name, raw: raw}
	if a.seq, err = rec.Sequence(); err != nil {
		return nil, errorf(ErrBadRequest, "IPNS record: %v", err)
	}
	if a.value, err = rec.Value(); err != nil {
		return nil, errorf(ErrBadRequest, "IPNS record: %v", err)
	}
	if a.validity, err = rec.Validity(); err != nil {
		return nil, errorf(ErrBadRequest, "IPNS record: %v", err)
	}
	// ValidateWithName checks the EOL against the wall clock; check against
	// ours too so a test clock works the same way.
	if !a.validity.After(now) {
		return nil, errorf(ErrBadRequest, "IPNS record for %s expired at %s", name, a.validity.Format(time.RFC3339))
	}
	if a.ttl, err = rec.TTL(); err != nil {
		a.ttl = 0
	}
	if rec.MetadataExists(originapi.RecordNameKey) {
		mv, err := rec.Metadata(originapi.RecordNameKey)
		if err == nil {
			a.human, err = mv.AsString()
		}
		if err != nil {
			return nil, errorf(ErrBadRequest, "IPNS record metadata %q: %v", originapi.RecordNameKey, err)
		}
	}
	return a, nil
}

// PutRecord accepts an IPNS record for name, as `ipfs routing put` would
// send it: signature, validity and size checked, sequence higher than the
// stored record's. If name is bound to a human name the record must point
// to content stored at the origin. It reports whether the stored record
// changed (false for a resend of the stored record).
func (o *Origin) PutRecord(ctx context.Context, name ipns.Name, raw []byte) (bool, error) {
	changed, err := o.putRecord(ctx, "", name, raw)
	o.countRecord(changed, err)
	return changed, err
}

// ClaimName accepts an IPNS record that points the human name at content:
// the first claim binds the name to the record's key (first come, first
// served); later records must come from that key. The record must carry
// the human name in its signed metadata (RecordNameKey) and point to a
// root stored at the origin.
func (o *Origin) ClaimName(ctx context.Context, human string, name ipns.Name, raw []byte) (*originapi.NameInfo, error) {
	if err := originapi.ValidateName(human); err != nil {
		err = errorf(ErrBadRequest, "%v", err)
		o.countRecord(false, err)
		return nil, err
	}
	changed, err := o.putRecord(ctx, human, name, raw)
	o.countRecord(changed, err)
	if err != nil {
		return nil, err
	}
	return o.LookupName(ctx, human)
}

func (o *Origin) countRecord(changed bool, err error) {
	switch {
	case err != nil:
		o.metrics.records.WithLabelValues("rejected").Inc()
	case changed:
		o.metrics.records.WithLabelValues("accepted").Inc()
	default:
		o.metrics.records.WithLabelValues("unchanged").Inc()
	}
}

// putRecord stores the record raw for name, and claims the human name
// with it if human is set; it reports whether the stored record changed.
func (o *Origin) putRecord(ctx context.Context, human string, name ipns.Name, raw []byte) (bool, error) {
	now := o.now()
	rec, err := parseRecord(name, raw, now)
	if err != nil {
		return false, err
	}
	if human != "" && rec.human != human {
		return false, errorf(ErrBadRequest, "IPNS record is signed for name %q, not %q (metadata %q)", rec.human, human, originapi.RecordNameKey)
	}
	key := name.String()

	// Content checks read the database too, so they run before the
	// transaction (which holds the only connection).
	var boundBefore string
	o.db.QueryRowContext(ctx, `SELECT name FROM names WHERE ipns = ?`, key).Scan(&boundBefore)
	checked := false
	if human != "" || boundBefore != "" {
		if err := o.checkPublished(ctx, rec.value); err != nil {
			return false, err
		}
		checked = true
	}

	var (
		bound    string
		changed  bool
		changeID int64
	)
	err = sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		var claimNew bool
		var err error
		changed, changeID = false, 0
		if bound, claimNew, err = owners(ctx, tx, key, human); err != nil {
			return err
		}
		if bound != "" && !checked {
			return errorf(ErrConflict, "key %s was bound to name %q meanwhile; retry", key, bound)
		}
		resent, err := checkSequence(ctx, tx, key, rec)
		if err != nil {
			return err
		}
		if resent && !claimNew {
			return nil // the same record again
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO records (ipns, sequence, value, validity, ttl_ns, record, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (ipns) DO UPDATE SET sequence = excluded.sequence, value = excluded.value,
				validity = excluded.validity, ttl_ns = excluded.ttl_ns, record = excluded.record,
				updated_at = excluded.updated_at`,
			key, rec.seq, rec.value.String(), rec.validity.UnixNano(), int64(rec.ttl), raw, now.UnixNano()); err != nil {
			return fmt.Errorf("origin: store record: %w", err)
		}
		if claimNew {
			if _, err := tx.ExecContext(ctx, `INSERT INTO names (name, ipns, created_at) VALUES (?, ?, ?)`,
				human, key, now.Unix()); err != nil {
				return fmt.Errorf("origin: claim name: %w", err)
			}
		}
		changed = true
		// Only a record of a bound name is logged and streamed (see
		// namechanges.go for why an unbound one is not).
		if named := cmp.Or(human, bound); named != "" {
			if err := logName(ctx, tx, named, name, rec, now); err != nil {
				return err
			}
			if changeID, err = origindb.AppendChange(ctx, tx, originapi.NameChange{Kind: originapi.ChangeRecord, Name: named,
				IPNS: key, Record: raw, At: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || !changed {
		return false, err
	}
	if changeID != 0 {
		o.changeCommitted(changeID, originapi.ChangeRecord)
	}
	if human == "" {
		human = bound
	}
	o.log.Info("ipns record accepted", zap.String("ipns", key), zap.String("name", human),
		zap.Uint64("sequence", rec.seq), zap.Stringer("value", rec.value))
	return true, nil
}

// owners reads, in tx, who owns what: bound is the human name key
// publishes, if any. For a claim of human (set), human must be key's
// already, or free while key publishes no other name; claimNew reports
// a free name being claimed.
func owners(ctx context.Context, tx *sqldb.Tx, key, human string) (bound string, claimNew bool, err error) {
	switch err := tx.QueryRowContext(ctx, `SELECT name FROM names WHERE ipns = ?`, key).Scan(&bound); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return "", false, fmt.Errorf("origin: %w", err)
	}
	if human == "" {
		return bound, false, nil
	}
	var owner string
	switch err := tx.QueryRowContext(ctx, `SELECT ipns FROM names WHERE name = ?`, human).Scan(&owner); {
	case errors.Is(err, sql.ErrNoRows):
		if bound != "" {
			return "", false, errorf(ErrConflict,
				"key %s already publishes name %q, and a key publishes one name: publish %q with another key (topcdn keygen --out FILE)",
				key, bound, human)
		}
		return bound, true, nil
	case err != nil:
		return "", false, fmt.Errorf("origin: %w", err)
	case owner != key:
		return "", false, errorf(ErrConflict, "name %q belongs to another key (%s): publish with that key, or under another name", human, owner)
	}
	return bound, false, nil
}

// checkSequence requires rec to be newer, in tx, than the record stored
// for key, or to be that very record again (resent).
func checkSequence(ctx context.Context, tx *sqldb.Tx, key string, rec *acceptedRecord) (resent bool, err error) {
	var storedSeq uint64
	var storedRaw []byte
	switch err := tx.QueryRowContext(ctx, `SELECT sequence, record FROM records WHERE ipns = ?`, key).Scan(&storedSeq, &storedRaw); {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("origin: %w", err)
	}
	if rec.seq < storedSeq || (rec.seq == storedSeq && string(storedRaw) != string(rec.raw)) {
		return false, errorf(ErrConflict, "IPNS record sequence %d for %s is not higher than the stored %d", rec.seq, key, storedSeq)
	}
	return rec.seq == storedSeq, nil
}

// checkPublished requires value to be /ipfs/<cid> with the root stored here.
func (o *Origin) checkPublished(ctx context.Context, value path.Path) error {
	if value.Namespace() != path.IPFSNamespace {
		return errorf(ErrBadRequest, "a named site must point to /ipfs/<cid>, not %s", value)
	}
	root, err := cid.Decode(value.Segments()[1])
	if err != nil {
		return errorf(ErrBadRequest, "record value %s: %v", value, err)
	}
	ok, err := o.blocks.Has(ctx, root)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	if !ok {
		return errorf(ErrIncomplete, "content %s is not stored at this origin; upload it first", root)
	}
	return nil
}

// LookupName returns what the human name currently points to.
func (o *Origin) LookupName(ctx context.Context, human string) (*originapi.NameInfo, error) {
	infos, err := o.queryNames(ctx, `WHERE n.name = ?`, human)
	if err != nil {
		return nil, err
	}
	if len(infos) == 0 {
		return nil, errorf(ErrNotFound, "name %q is not published", human)
	}
	return &infos[0], nil
}

// Names lists every human name, sorted.
func (o *Origin) Names(ctx context.Context) ([]originapi.NameInfo, error) {
	return o.queryNames(ctx, `ORDER BY n.name`)
}

func (o *Origin) queryNames(ctx context.Context, tail string, args ...any) ([]originapi.NameInfo, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT n.name, n.ipns, r.value, r.sequence, r.validity, r.ttl_ns, r.updated_at
		FROM names n JOIN records r ON r.ipns = n.ipns `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("origin: query names: %w", err)
	}
	defer rows.Close()
	infos := []originapi.NameInfo{}
	for rows.Next() {
		var ni originapi.NameInfo
		var validity, ttl, updated int64
		if err := rows.Scan(&ni.Name, &ni.IPNS, &ni.Value, &ni.Sequence, &validity, &ttl, &updated); err != nil {
			return nil, fmt.Errorf("origin: query names: %w", err)
		}
		ni.Validity = time.Unix(0, validity).UTC()
		ni.TTLSeconds = int64(time.Duration(ttl) / time.Second)
		ni.Updated = time.Unix(0, updated).UTC()
		if p, err := path.NewPath(ni.Value); err == nil && p.Namespace() == path.IPFSNamespace {
			ni.CID = p.Segments()[1]
		}
		infos = append(infos, ni)
	}
	return infos, rows.Err()
}

// record returns the stored marshalled record for name.
func (o *Origin) record(ctx context.Context, name ipns.Name) ([]byte, error) {
	var raw []byte
	err := o.db.QueryRowContext(ctx, `SELECT record FROM records WHERE ipns = ?`, name.String()).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no IPNS record for %s", name)
	}
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	return raw, nil
}

// nameTarget returns the IPNS name bound to a human name.
func (o *Origin) nameTarget(ctx context.Context, human string) (string, error) {
	var key string
	err := o.db.QueryRowContext(ctx, `SELECT ipns FROM names WHERE name = ?`, human).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errorf(ErrNotFound, "name %q is not published", human)
	}
	if err != nil {
		return "", fmt.Errorf("origin: %w", err)
	}
	return key, nil
}

// logName appends the move of the human name to rec's value to the
// billing log, in tx. A value that is no /ipfs/ path (only names bound to
// published content are logged, and those must be) is left out.
func logName(ctx context.Context, tx *sqldb.Tx, human string, name ipns.Name, rec *acceptedRecord, now time.Time) error {
	if rec.value.Namespace() != path.IPFSNamespace {
		return nil
	}
	return origindb.AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventName, Name: human, IPNS: name.String(),
		Publisher: name.Peer().String(), Root: rec.value.Segments()[1], Seq: rec.seq,
		TTLSeconds: int64(rec.ttl / time.Second), At: now})
}
