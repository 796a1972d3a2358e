package billing

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/storageapi"
)

// Bounds on storage reads paid, per shard (see README.md, "Storage
// reads").
const (
	// maxEdgeReads: a reader's orders for one shard in one epoch are paid
	// up to this many times the shard's size (an edge caches what it
	// reads: one whole read per epoch is plenty, twice for claims that
	// straddle epochs).
	maxEdgeReads = 2
	// upkeepWindow: the origin's own orders (repair, audit-driven
	// rebuilds, billing's index fetches) for one shard on one peer are
	// paid up to its size once per window.
	upkeepWindow = 24 * time.Hour
)

// isOrigin reports whether p is one of the origins (see OriginKey). An origin
// that cannot be asked now is taken as not p: knownReader, asked first,
// has already refused the claim then.
func (l *Ledger) isOrigin(ctx context.Context, p peer.ID) bool {
	src, ok := l.content.(OriginKey)
	if !ok {
		return false
	}
	ids, err := src.OriginIDs(ctx)
	return err == nil && slices.Contains(ids, p)
}

// checkPlacement checks a read order against the origin's log: the shard
// was on the claiming peer at some time while the order was valid (it
// can have been valid for MaxOrderLifetime at most), and the order reads
// within the shard. It completes read with the shard's payer and size.
func (l *Ledger) checkPlacement(ctx context.Context, sp ShardPlacements, claimPeer string, id int64, o *storageapi.ReadOrder,
	read *acceptedRead, refuse func(error) (*acceptedRead, error)) (*acceptedRead, error) {
	p, err := peer.Decode(claimPeer)
	if err != nil {
		return refuse(reject(billingapi.ReasonMalformed, "claim of peer %.64q: %v", claimPeer, err))
	}
	info, err := sp.ShardInfo(ctx, o.Shard, p, o.Expires.Add(-storageapi.MaxOrderLifetime), o.Expires)
	switch {
	case err != nil && reasonOf(err) == "":
		return nil, fmt.Errorf("billing: %w: %w", errTransient, err)
	case err != nil:
		return refuse(err)
	case !info.Placed:
		return refuse(reject(billingapi.ReasonOrderPlacement, "order %d: shard %s was not on %s while the order was valid", id, o.Shard, p))
	case o.Offset > info.Size-o.Length:
		return refuse(reject(billingapi.ReasonOrderRange, "order %d reads %d bytes at %d of shard %s, which has %d", id, o.Length, o.Offset,
			o.Shard, info.Size))
	}
	read.publisher, read.size = info.Payer, info.Size
	return read, nil
}

// storageFacts is what settlement knows of storage from the witnesses,
// read once per settlement.
type storageFacts struct {
	// placed: the Content implements ShardPlacements; flags and
	// placements come from it and rent is paid by placement intervals.
	placed     bool
	flags      map[string]time.Time // peer/shard -> first flagged
	placements []witness.Placement
	// holdings, without ShardPlacements: rent by the manifests now.
	holdings []witness.Holding
}

// storageFacts reads what settling the epochs up to lastClosed needs:
// flags and placements (reading the origin's log up to now, so that no
// flag learned by settlement time is missed), else the holdings.
func (l *Ledger) storageFacts(ctx context.Context, lastClosed int64) (*storageFacts, error) {
	f := &storageFacts{flags: map[string]time.Time{}}
	sp, ok := l.content.(ShardPlacements)
	if !ok {
		if l.opts.PricePerGiBMonthStored > 0 {
			var err error
			if f.holdings, err = l.content.Holdings(ctx); err != nil {
				return nil, fmt.Errorf("billing: %w: storage holdings: %w", errTransient, err)
			}
		}
		return f, nil
	}
	f.placed = true
	flags, err := sp.Flags(ctx)
	if err != nil {
		return nil, fmt.Errorf("billing: %w: flags: %w", errTransient, err)
	}
	for k, at := range flags {
		f.flags[k.Peer.String()+"/"+k.Shard] = at
	}
	if l.opts.PricePerGiBMonthStored > 0 {
		if f.placements, err = sp.Placements(ctx, time.Unix(0, 0), time.Unix(lastClosed+l.secs, 0)); err != nil {
			return nil, fmt.Errorf("billing: %w: placements: %w", errTransient, err)
		}
	}
	return f, nil
}

// settledRead is a read of the epoch being settled.
type settledRead struct {
	reader, serial, peer, publisher, shard, kind string
	bytes, size                                  int64
}

// storageReadLines returns what the epoch's accepted read orders earn each
// (storage peer, publisher), and the reads or bytes refused: every read of
// a (peer, shard) the origin flagged (peer_flagged); a reader's bytes of a
// shard beyond maxEdgeReads × its size in the epoch (over_read); the
// origin's bytes of a shard on a peer beyond its size in upkeepWindow
// (upkeep_repeat). Reads are taken in the order they were valid until, so
// the first are paid. It records what it paid of the origin's reads
// (reads.paid), the window of later settlements.
func (l *Ledger) storageReadLines(ctx context.Context, tx querier, epoch int64, f *storageFacts) ([]line, []rejection, error) {
	rows, err := tx.QueryContext(ctx, l.db.q(`SELECT reader, serial, peer, publisher, shard, kind, bytes, shard_size FROM reads
		WHERE epoch = ? ORDER BY peer, shard, expires, reader, serial`), epoch)
	if err != nil {
		return nil, nil, err
	}
	var reads []settledRead
	for rows.Next() {
		var r settledRead
		if err := rows.Scan(&r.reader, &r.serial, &r.peer, &r.publisher, &r.shard, &r.kind, &r.bytes, &r.size); err != nil {
			rows.Close()
			return nil, nil, err
		}
		reads = append(reads, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	type key struct{ a, b string }
	edgeUsed := map[key]int64{}   // (reader, shard)
	upkeepUsed := map[key]int64{} // (peer, shard), over the window
	paidBy := map[key]int64{}     // (peer, publisher)
	var refused []rejection
	for _, r := range reads {
		paid := r.bytes
		refuse := func(reason billingapi.Reason, n int64, detail string) {
			paid -= n
			refused = append(refused, rejection{account: r.peer, epoch: epoch, kind: "order", ref: r.serial, reason: reason,
				detail: fmt.Sprintf("read order %s of %s for shard %s: %s", r.serial, r.reader, r.shard, detail), bytes: n})
		}
		switch {
		case !f.flags[r.peer+"/"+r.shard].IsZero():
			refuse(billingapi.ReasonPeerFlagged, r.bytes, "the origin flagged the peer for this shard at "+
				f.flags[r.peer+"/"+r.shard].UTC().Format(time.RFC3339))
		case r.size <= 0:
		case r.kind == "origin":
			k := key{r.peer, r.shard}
			used, ok := upkeepUsed[k]
			if !ok {
				if err := tx.QueryRowContext(ctx, l.db.q(`SELECT COALESCE(CAST(sum(paid) AS BIGINT), 0) FROM reads
					WHERE peer = ? AND shard = ? AND kind = 'origin' AND epoch > ? AND epoch < ?`),
					r.peer, r.shard, epoch-int64(upkeepWindow/time.Second), epoch).Scan(&used); err != nil {
					return nil, nil, err
				}
			}
			if over := used + r.bytes - r.size; over > 0 {
				refuse(billingapi.ReasonUpkeepRepeat, min(over, r.bytes), fmt.Sprintf("the origin's reads of it on this peer exceed its %d bytes in %s",
					r.size, upkeepWindow))
			}
			upkeepUsed[k] = used + paid
			if _, err := tx.ExecContext(ctx, l.db.q(`UPDATE reads SET paid = ? WHERE reader = ? AND serial = ?`), paid, r.reader, r.serial); err != nil {
				return nil, nil, err
			}
		default:
			k := key{r.reader, r.shard}
			if over := edgeUsed[k] + r.bytes - maxEdgeReads*r.size; over > 0 {
				refuse(billingapi.ReasonOverRead, min(over, r.bytes), fmt.Sprintf("the reader's orders for it exceed %d × its %d bytes in the epoch",
					maxEdgeReads, r.size))
			}
			edgeUsed[k] += paid
		}
		paidBy[key{r.peer, r.publisher}] += paid
	}
	keys := make([]key, 0, len(paidBy))
	for k := range paidBy {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].a < keys[j].a || (keys[i].a == keys[j].a && keys[i].b < keys[j].b) })
	var lines []line
	for _, k := range keys {
		if n := paidBy[k]; n > 0 {
			lines = append(lines, line{operator: k.a, opKind: "storage", publisher: k.b, kind: "storage_read", bytes: n,
				amount: ServedAmount(n, l.opts.PricePerGiBServed)})
		}
	}
	return lines, refused, nil
}

// storedLines returns the storage rent of epoch, by storage peer and
// payer: from the placement intervals overlapping the epoch, each cut at
// the peer's first flag for the shard (or, without ShardPlacements, from
// the holdings read at settlement).
func (l *Ledger) storedLines(f *storageFacts, epoch int64) []line {
	if l.opts.PricePerGiBMonthStored <= 0 {
		return nil
	}
	hs := append([]witness.Holding(nil), f.holdings...)
	if f.placed {
		hs = hs[:0]
		start, end := time.Unix(epoch, 0), time.Unix(epoch+l.secs, 0)
		sum := map[[2]peer.ID]int64{}
		for _, pl := range f.placements {
			from, until := maxTime(pl.From, start), end
			if !pl.Until.IsZero() && pl.Until.Before(until) {
				until = pl.Until
			}
			if flagged := f.flags[pl.Peer.String()+"/"+pl.Shard]; !flagged.IsZero() && flagged.Before(until) {
				until = flagged
			}
			if ms := until.Sub(from).Milliseconds(); ms > 0 {
				sum[[2]peer.ID{pl.Peer, pl.Payer}] += Price(pl.Size, ms, 1, l.secs*1000) // the shard's bytes × the share of the epoch held
			}
		}
		for k, n := range sum {
			hs = append(hs, witness.Holding{Peer: k[0], Publisher: k[1], Bytes: n})
		}
	}
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].Peer != hs[j].Peer {
			return hs[i].Peer < hs[j].Peer
		}
		return hs[i].Publisher < hs[j].Publisher
	})
	lines := make([]line, 0, len(hs))
	for _, h := range hs {
		lines = append(lines, line{operator: h.Peer.String(), opKind: "storage", publisher: h.Publisher.String(),
			kind: "stored", bytes: h.Bytes, amount: StoredAmount(h.Bytes, l.opts.PricePerGiBMonthStored, l.secs)})
	}
	return lines
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
