package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// acceptedRead is a read order that passed every check but the replay
// check.
type acceptedRead struct {
	reader    peer.ID
	serial    string
	shard     string
	publisher peer.ID
	bytes     int64
	offset    int64
	expires   time.Time
	kind      string // edge, origin
	size      int64  // the shard's; 0: not known
}

// IngestClaim verifies a storage peer's signed claim for the read orders
// it served and credits the good ones to the current epoch. Each order
// must be signed by a known edge (one that reported a batch, or that the
// DNS router lists) or the origin, be for the claiming peer, valid for no
// longer than storageapi.MaxOrderLifetime, for a shard of published
// content that (with ShardPlacements) the origin placed on the claiming
// peer while the order was valid, within the shard's bytes, and never have
// been claimed before. Settlement bounds the accepted reads again
// (storageReadLines). Orders of a reader not
// known yet are deferred while the reader may still report its first
// batch (two epochs and the settle delay after the order was issued).
func (l *Ledger) IngestClaim(ctx context.Context, env *identity.Envelope) (*billingapi.ClaimResult, error) {
	var c billingapi.Claim
	signer, err := env.Open(billingapi.TypeClaim, &c)
	if err == nil && c.Peer != signer.String() {
		err = fmt.Errorf("billing: %w: claim for peer %q signed by %s", billingapi.ErrMalformed, c.Peer, signer)
	}
	if err == nil && len(c.Orders) > billingapi.MaxClaimOrders {
		err = fmt.Errorf("billing: %w: %d orders, at most %d", billingapi.ErrMalformed, len(c.Orders), billingapi.MaxClaimOrders)
	}
	if err != nil {
		reason := billingapi.ReasonMalformed
		if errors.Is(err, identity.ErrBadSignature) {
			reason = billingapi.ReasonSignature
		}
		// Recorded under the signer only when the signature verified.
		if rerr := l.rejectNow(ctx, rejection{account: signer.String(), epoch: l.epochOf(l.opts.now()), kind: "claim",
			reason: reason, detail: err.Error()}); rerr != nil {
			return nil, rerr
		}
		return nil, &RejectError{Reason: reason, Err: err}
	}
	now := l.opts.now()
	res := &billingapi.ClaimResult{Rejected: []billingapi.OrderRejection{}, Deferred: []int64{}}
	var ok []acceptedRead
	okIDs := map[int]int64{}
	seen := map[string]bool{}
	for _, co := range c.Orders {
		r, err := l.checkOrder(ctx, c.Peer, co, now, seen, res)
		if err != nil {
			return nil, err
		}
		if r != nil {
			okIDs[len(ok)] = co.ID
			ok = append(ok, *r)
		}
	}
	if err := l.storeReads(ctx, c.Peer, ok, okIDs, res); err != nil {
		return nil, err
	}
	return res, nil
}

// checkOrder checks one read order of a claim by claimPeer: it returns the
// read of an order that passes, adds an order refused or deferred to res
// (and returns nil), and returns an error when it could not check the
// order (the claim is then refused as a whole, or sent again).
func (l *Ledger) checkOrder(ctx context.Context, claimPeer string, co billingapi.ClaimedOrder, now time.Time, seen map[string]bool,
	res *billingapi.ClaimResult) (*acceptedRead, error) {
	refuse := func(err error) (*acceptedRead, error) {
		res.Rejected = append(res.Rejected, billingapi.OrderRejection{ID: co.ID, Reason: reasonOf(err), Detail: err.Error()})
		return nil, nil
	}
	oenv, err := identity.DecodeEnvelope(co.Order)
	if err != nil {
		return refuse(reject(billingapi.ReasonMalformed, "order %d: %v", co.ID, err))
	}
	var o storageapi.ReadOrder
	reader, err := oenv.Open(storageapi.TypeReadOrder, &o)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return refuse(reject(billingapi.ReasonSignature, "order %d: %v", co.ID, err))
	case err != nil:
		return refuse(reject(billingapi.ReasonMalformed, "order %d: %v", co.ID, err))
	case o.Peer != claimPeer:
		return refuse(reject(billingapi.ReasonOrderPeer, "order %d is for peer %s", co.ID, o.Peer))
	case o.Length <= 0 || o.Length > storageapi.MaxReadLength || o.Serial == "":
		return refuse(reject(billingapi.ReasonMalformed, "order %d: length %d, serial %q", co.ID, o.Length, o.Serial))
	case o.Offset < 0:
		return refuse(reject(billingapi.ReasonMalformed, "order %d: offset %d", co.ID, o.Offset))
	case o.Expires.Before(now.Add(-l.opts.AcceptWindow)):
		return refuse(reject(billingapi.ReasonOrderStale, "order %d expired at %s", co.ID, o.Expires.Format(time.RFC3339)))
	case o.Expires.After(now.Add(storageapi.MaxOrderLifetime)):
		// No peer serves an order valid for longer (storageapi.CheckExpiry).
		return refuse(reject(billingapi.ReasonOrderExpiry, "order %d valid until %s, more than %s ahead", co.ID,
			o.Expires.Format(time.RFC3339), storageapi.MaxOrderLifetime))
	case seen[reader.String()+"/"+o.Serial]:
		return refuse(reject(billingapi.ReasonReplayOrder, "order %d: serial %s twice in the claim", co.ID, o.Serial))
	}
	seen[reader.String()+"/"+o.Serial] = true
	known, err := l.knownReader(ctx, reader, o.Expires.Add(-storageapi.ReadOrderLifetime), o.Expires)
	if err != nil {
		return nil, err
	}
	if !known {
		return refuse(reject(billingapi.ReasonUnknownReader, "order %d signed by %s, which is neither an edge the billing operator admitted nor the origin", co.ID, reader))
	}
	read := &acceptedRead{reader: reader, serial: o.Serial, shard: o.Shard, bytes: o.Length, offset: o.Offset,
		expires: o.Expires, kind: "edge"}
	if l.isOrigin(ctx, reader) {
		read.kind = "origin"
	}
	if sp, ok := l.content.(ShardPlacements); ok {
		return l.checkPlacement(ctx, sp, claimPeer, co.ID, &o, read, refuse)
	}
	pub, err := l.content.ShardPublisher(ctx, o.Shard)
	if err != nil {
		if reasonOf(err) == "" {
			return nil, fmt.Errorf("billing: %w: %w", errTransient, err)
		}
		return refuse(err)
	}
	read.publisher = pub
	return read, nil
}

// knownReader reports whether p is a reader billing pays reads for: an
// edge the operator admitted (and had not revoked) while the order was
// valid, from issued to expires, or an origin (see OriginKey). A fresh
// key signing orders for a colluding storage peer earns it nothing.
func (l *Ledger) knownReader(ctx context.Context, p peer.ID, issued, expires time.Time) (bool, error) {
	if src, ok := l.content.(OriginKey); ok {
		ids, err := src.OriginIDs(ctx)
		if err != nil {
			return false, fmt.Errorf("billing: %w: origin IDs: %w", errTransient, err)
		}
		if slices.Contains(ids, p) {
			return true, nil
		}
	}
	a, ok, err := l.admittedAt(ctx, p.String())
	if err != nil || !ok {
		return false, err
	}
	return a.covers(issued, expires), nil
}

// storeReads stores accepted reads minus replays, and the rejections, in
// one transaction.
func (l *Ledger) storeReads(ctx context.Context, storagePeer string, ok []acceptedRead, ids map[int]int64, res *billingapi.ClaimResult) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	epoch := l.epochOf(l.opts.now())
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	defer tx.Rollback()
	var accepted int64
	for i, r := range ok {
		sr, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO reads (reader, serial, peer, epoch, publisher, shard, bytes,
			read_offset, expires, kind, shard_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
			r.reader.String(), r.serial, storagePeer, epoch, r.publisher.String(), r.shard, r.bytes,
			r.offset, r.expires.UnixNano(), r.kind, r.size)
		if err != nil {
			return fmt.Errorf("billing: store read: %w", err)
		}
		if n, _ := sr.RowsAffected(); n == 0 {
			var by string
			if err := tx.QueryRowContext(ctx, l.db.q(`SELECT peer FROM reads WHERE reader = ? AND serial = ?`),
				r.reader.String(), r.serial).Scan(&by); err != nil {
				return fmt.Errorf("billing: store read: %w", err)
			}
			if by == storagePeer {
				// The peer's own claim again, its answer lost on the
				// way: credited once already.
				res.Duplicates++
				continue
			}
			res.Rejected = append(res.Rejected, billingapi.OrderRejection{ID: ids[i], Reason: billingapi.ReasonReplayOrder,
				Detail: fmt.Sprintf("read order %s of %s was claimed before, by %s", r.serial, r.reader, by)})
			continue
		}
		res.Accepted++
		accepted += r.bytes
	}
	rs := make([]rejection, len(res.Rejected))
	for i, r := range res.Rejected {
		rs[i] = rejection{account: storagePeer, epoch: epoch, kind: "order", ref: strconv.FormatInt(r.ID, 10),
			reason: r.Reason, detail: r.Detail}
	}
	if err := l.insertRejections(ctx, tx, rs); err != nil {
		return err
	}
	if err := l.ensureAccount(ctx, tx, storagePeer, "storage"); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: store reads: %w", err)
	}
	l.metrics.claims.WithLabelValues("claim", "accepted", "").Inc()
	l.metrics.claims.WithLabelValues("order", "accepted", "").Add(float64(res.Accepted))
	l.metrics.bytes.WithLabelValues("storage_read", "accepted").Add(float64(accepted))
	for _, r := range res.Rejected {
		l.metrics.claims.WithLabelValues("order", "rejected", string(r.Reason)).Inc()
	}
	l.log.Debug("claim accepted", zap.String("peer", storagePeer), zap.Int("orders", res.Accepted),
		zap.Int("rejected", len(res.Rejected)), zap.Int("deferred", len(res.Deferred)))
	return nil
}
