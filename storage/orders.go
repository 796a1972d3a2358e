package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/sqlitedb"
	"github.com/topcdn/topcdn/storageapi"
)

// maxOrderHeader bounds the OrderHeader value; an encoded order is about
// 600 bytes.
const maxOrderHeader = 8 << 10

// maxRangeHeader bounds the Range header: "bytes=" and two int64s.
const maxRangeHeader = 64

// order is what an order envelope says, whatever its type, for the checks
// every order goes through.
type order struct {
	signer  peer.ID
	peer    string
	shard   string
	expires time.Time
}

// orderRequest is a request for a shard with the order that authorizes it.
type orderRequest struct {
	id      string // the shard's ID, from the path
	digest  []byte // its hash, from the ID
	signer  peer.ID
	encoded string // the order as sent, in OrderHeader
}

// openRequest reads r's shard ID and order, opens the order as typ into
// v, and checks it: signed by whoever may sign it (byOrigin: only the
// origin), for this peer and the path's shard, not expired. fields gives
// the order's common fields once v is filled.
func (s *Server) openRequest(r *http.Request, typ string, v any, byOrigin bool, fields func() order) (orderRequest, error) {
	var req orderRequest
	var err error
	if req.id, req.digest, err = shardParam(r); err != nil {
		return req, err
	}
	if req.encoded, err = orderHeader(r); err != nil {
		return req, err
	}
	if req.signer, err = openOrder(req.encoded, typ, v); err != nil {
		return req, err
	}
	o := fields()
	o.signer = req.signer
	return req, s.checkOrder(o, req.id, byOrigin)
}

// orderHeader returns the single, bounded OrderHeader of r.
func orderHeader(r *http.Request) (string, error) {
	vals := r.Header.Values(storageapi.OrderHeader)
	switch {
	case len(vals) == 0 || vals[0] == "":
		return "", reject(reasonMissing, storageapi.ErrForbidden, "no %s header: every shard request needs a signed order", storageapi.OrderHeader)
	case len(vals) > 1:
		return "", reject(reasonMalformed, storageapi.ErrBadRequest, "%d %s headers; send one", len(vals), storageapi.OrderHeader)
	case len(vals[0]) > maxOrderHeader:
		return "", reject(reasonMalformed, storageapi.ErrBadRequest, "%s header over %d bytes", storageapi.OrderHeader, maxOrderHeader)
	}
	return vals[0], nil
}

// openOrder decodes an encoded envelope, checks that it is a signed
// message of type typ and decodes its body into v.
func openOrder(encoded, typ string, v any) (peer.ID, error) {
	env, err := identity.DecodeEnvelope(encoded)
	if err != nil {
		return "", reject(reasonMalformed, storageapi.ErrBadRequest, "order: %w", err)
	}
	return openEnvelope(env, typ, v)
}

// openEnvelope checks that env is a signed message of type typ and
// decodes its body into v.
func openEnvelope(env *identity.Envelope, typ string, v any) (peer.ID, error) {
	if env.Type != typ {
		return "", reject(reasonSignature, storageapi.ErrForbidden, "order is a %q, this request needs a %q", env.Type, typ)
	}
	signer, err := env.Open(typ, v)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return "", reject(reasonSignature, storageapi.ErrForbidden, "order: %w", err)
	case err != nil:
		return "", reject(reasonMalformed, storageapi.ErrBadRequest, "order: %w", err)
	}
	return signer, nil
}

// checkOrder checks what every order must satisfy: that it is for this
// peer and for shard id, unexpired, and, when byOrigin, signed by the
// origin.
func (s *Server) checkOrder(o order, id string, byOrigin bool) error {
	if byOrigin && !s.origins.has[o.signer] {
		return reject(reasonSigner, storageapi.ErrForbidden, "order signed by %s; only the origins %s may sign it", o.signer, s.origins)
	}
	if o.peer != s.key.ID.String() {
		return reject(reasonPeer, storageapi.ErrForbidden, "order is for peer %q; this peer is %s", o.peer, s.key.ID)
	}
	if o.shard != id {
		return reject(reasonShard, storageapi.ErrForbidden, "order is for shard %q, not %s", o.shard, id)
	}
	if err := storageapi.CheckExpiry(o.expires, s.now()); err != nil {
		return reject(reasonExpired, storageapi.ErrForbidden, "order: %w", err)
	}
	return nil
}

// checkReadOrder checks a read order's own fields: its serial and that its
// range is well formed and not too long.
func checkReadOrder(o *storageapi.ReadOrder) error {
	switch {
	case o.Serial == "" || len(o.Serial) > storageapi.MaxSerialSize:
		return reject(reasonMalformed, storageapi.ErrBadRequest, "order serial: want 1 to %d characters", storageapi.MaxSerialSize)
	}
	return checkRange("order", o.Offset, o.Length, storageapi.MaxReadLength)
}

// checkAudit checks an audit's own fields.
func checkAudit(a *storageapi.Audit) error {
	switch {
	case len(a.Nonce) == 0 || len(a.Nonce) > storageapi.MaxNonceSize:
		return reject(reasonMalformed, storageapi.ErrBadRequest, "audit nonce: want 1 to %d bytes", storageapi.MaxNonceSize)
	}
	return checkRange("audit", a.Offset, a.Length, storageapi.MaxAuditLength)
}

// checkRange checks the byte range [offset, offset+length) an order or
// audit (what) asks for: well formed and at most limit bytes long.
func checkRange(what string, offset, length, limit int64) error {
	switch {
	case offset < 0 || length <= 0:
		return reject(reasonRange, storageapi.ErrBadRequest, "%s range offset %d length %d: want offset >= 0 and length > 0", what, offset, length)
	case length > limit:
		return reject(reasonRange, storageapi.ErrBadRequest, "%s length %d: at most %d bytes", what, length, limit)
	}
	return nil
}

// parseRange parses a Range header of the single form "bytes=first-last".
func parseRange(h string) (first, last int64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || len(h) > maxRangeHeader {
		return 0, 0, errorf(storageapi.ErrBadRequest, "Range %q: want bytes=FIRST-LAST", h)
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok || !isDigits(a) || !isDigits(b) {
		return 0, 0, errorf(storageapi.ErrBadRequest, "Range %q: want one range bytes=FIRST-LAST", h)
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || last < first {
		return 0, 0, errorf(storageapi.ErrBadRequest, "Range %q: want bytes=FIRST-LAST with FIRST <= LAST", h)
	}
	return first, last, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// schema is applied in order; PRAGMA user_version records how far.
var schema = []string{
	`CREATE TABLE served_reads (
		id        INTEGER PRIMARY KEY,
		reader    TEXT NOT NULL,    -- peer ID of the order's signer
		serial    TEXT NOT NULL,
		shard     TEXT NOT NULL,
		"offset"  INTEGER NOT NULL,
		length    INTEGER NOT NULL,
		served_at INTEGER NOT NULL, -- Unix nanoseconds
		envelope  TEXT NOT NULL,    -- the order exactly as received (OrderHeader)
		UNIQUE (reader, serial)
	);
	CREATE INDEX served_reads_served_at ON served_reads (served_at);`,
	// Billing claims: a claimed read stays (it still refuses the order's
	// replay) until the order has surely expired, then is dropped.
	`ALTER TABLE served_reads ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX served_reads_claimed ON served_reads (claimed, id);`,
}

// openDB opens the peer's database, bringing its schema up to date.
func openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sqlitedb.Open(ctx, path, schema)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return db, nil
}

// claimRead records read order o, signed by reader and received as
// encoded, as served. It fails with ErrConflict if that reader's order
// with that serial was served before: each order is served at most once.
func (s *Server) claimRead(ctx context.Context, reader peer.ID, o *storageapi.ReadOrder, encoded string) error {
	res, err := s.db.ExecContext(ctx, `INSERT INTO served_reads
		(reader, serial, shard, "offset", length, served_at, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (reader, serial) DO NOTHING`,
		reader.String(), o.Serial, o.Shard, o.Offset, o.Length, s.now().UnixNano(), encoded)
	if err != nil {
		return fmt.Errorf("storage: record read order: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("storage: record read order: %w", err)
	}
	if n == 0 {
		return reject(reasonReplay, storageapi.ErrConflict, "read order %s from %s was already served", o.Serial, reader)
	}
	return nil
}
