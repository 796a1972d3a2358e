package billing

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/tick"
	"go.uber.org/zap"
)

// The DNS router is billing's witness of what each edge could have
// earned: it counts the client units its answers sent each edge per
// epoch and site, relays the epoch byte counter of each edge's signed
// heartbeats, and measures the bytes of its own content probes. It keeps
// the last dnsrouteapi.MaxEpochs epochs only, so billing copies what it
// says into its own tables (edge_epochs, demand) as it goes, keeping the
// highest figure seen, and settles from those copies.

// maxDemandKey bounds a site key billing stores from the router.
const maxDemandKey = 2 * 256

// CaptureEvidence reads the DNS router's edges and stores, for every
// epoch not settled yet, each edge's epoch byte counter, the bytes of the
// router's probes of it and the demand the router sent it per site. It
// records when it last succeeded: settlement waits for evidence read
// after an epoch's settle delay (or for DemandWait). Without a router
// configured it does nothing.
func (l *Ledger) CaptureEvidence(ctx context.Context) error {
	if l.opts.DNS == nil {
		return nil
	}
	at := l.opts.now()
	edges, err := l.opts.DNS.Edges(ctx)
	if err != nil {
		l.metrics.evidence.WithLabelValues("error").Inc()
		return fmt.Errorf("billing: %w: DNS router: %w", errTransient, err)
	}
	l.addrs.Store(addrsOf(edges))
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return err
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: evidence: %w", err)
	}
	defer tx.Rollback()
	upsertEpoch := l.db.q(`INSERT INTO edge_epochs (edge, epoch, counter, closed, probe_bytes) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (edge, epoch) DO UPDATE SET
		counter = CASE WHEN excluded.counter > edge_epochs.counter THEN excluded.counter ELSE edge_epochs.counter END,
		closed = CASE WHEN excluded.closed > edge_epochs.closed THEN excluded.closed ELSE edge_epochs.closed END,
		probe_bytes = CASE WHEN excluded.probe_bytes > edge_epochs.probe_bytes THEN excluded.probe_bytes ELSE edge_epochs.probe_bytes END`)
	upsertDemand := l.db.q(`INSERT INTO demand (edge, epoch, dkey, first, other) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (edge, epoch, dkey) DO UPDATE SET
		first = CASE WHEN excluded.first > demand.first THEN excluded.first ELSE demand.first END,
		other = CASE WHEN excluded.other > demand.other THEN excluded.other ELSE demand.other END`)
	misaligned := 0
	for _, e := range edges {
		if e.Peer == "" || len(e.Peer) > identity.MaxSignerSize {
			continue
		}
		for _, eb := range e.Epochs {
			if eb.Epoch%l.secs != 0 {
				misaligned++
			}
			if eb.Epoch <= last || eb.Epoch%l.secs != 0 {
				continue
			}
			closed := 0
			if eb.Closed {
				closed = 1
			}
			if _, err := tx.ExecContext(ctx, upsertEpoch, e.Peer, eb.Epoch, clampInt64(eb.Bytes), closed, 0); err != nil {
				return fmt.Errorf("billing: evidence: %w", err)
			}
		}
		for _, ed := range e.Demand {
			if ed.Epoch <= last || ed.Epoch%l.secs != 0 {
				continue
			}
			if ed.ProbeBytes > 0 {
				if _, err := tx.ExecContext(ctx, upsertEpoch, e.Peer, ed.Epoch, 0, 0, clampInt64(ed.ProbeBytes)); err != nil {
					return fmt.Errorf("billing: evidence: %w", err)
				}
			}
			for _, s := range ed.Sites {
				if s.Site == "" || len(s.Site) > maxDemandKey {
					continue
				}
				if _, err := tx.ExecContext(ctx, upsertDemand, e.Peer, ed.Epoch, s.Site, int64(s.First), int64(s.Other)); err != nil {
					return fmt.Errorf("billing: evidence: %w", err)
				}
			}
		}
	}
	if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO meta (key, value) VALUES ('evidence_at', ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`), at.UnixNano()); err != nil {
		return fmt.Errorf("billing: evidence: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: evidence: %w", err)
	}
	if misaligned > 0 {
		// Nothing of those epochs bounds any payment: the edges go unpaid.
		l.log.Warn("the DNS router counts epochs that are not billing's: is its --billing-epoch billing's --epoch?",
			zap.Int("epochs", misaligned), zap.Duration("epoch", l.opts.Epoch))
	}
	l.metrics.evidence.WithLabelValues("ok").Inc()
	return nil
}

// evidenceAt returns when evidence was last read from the router (zero:
// never).
func (l *Ledger) evidenceAt(ctx context.Context, q querier) (time.Time, error) {
	var ns sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'evidence_at'`).Scan(&ns)
	switch {
	case err == sql.ErrNoRows:
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("billing: evidence time: %w", err)
	case !ns.Valid:
		return time.Time{}, nil
	}
	return time.Unix(0, ns.Int64), nil
}

// RunEvidence reads the router's evidence every interval until ctx ends
// (zero: a third of an epoch, between 1 s and 1 min), so that none of it
// is lost however rarely epochs are settled. It returns at once without a
// router.
func (l *Ledger) RunEvidence(ctx context.Context, every time.Duration) {
	if l.opts.DNS == nil || every < 0 {
		return
	}
	every = cmp.Or(every, min(max(l.opts.Epoch/3, time.Second), time.Minute))
	tick.NowAndEvery(ctx, every, func(ctx context.Context) {
		if err := l.CaptureEvidence(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("DNS router evidence", zap.Error(err))
		}
	})
}

// edgeAddrs are an edge's addresses as the router lists them: those its
// heartbeats claim (own: its own word, used only against it) and those
// the router reached it at with its key (verified).
type edgeAddrs struct{ own, verified []netip.Addr }

// maxEdgeAddrs bounds the addresses kept per edge.
const maxEdgeAddrs = 16

// addrsOf returns the addresses of the router's edges, by peer ID.
func addrsOf(edges []dnsrouteapi.EdgeInfo) *map[string]edgeAddrs {
	m := make(map[string]edgeAddrs, len(edges))
	parse := func(ss []string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss[:min(len(ss), maxEdgeAddrs)] {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, a.Unmap())
			}
		}
		return out
	}
	for _, e := range edges {
		if e.Peer != "" && len(e.Peer) <= identity.MaxSignerSize {
			m[e.Peer] = edgeAddrs{own: parse(e.Addrs), verified: parse(e.Verified)}
		}
	}
	return &m
}

// clampInt64 converts a count to int64, saturating.
func clampInt64(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}
