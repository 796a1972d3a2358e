package billing

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/tick"
	"go.uber.org/zap"
)

// Forfeit makes edge forfeit an unsettled epoch: none of its records of
// that epoch is paid.
func (l *Ledger) Forfeit(ctx context.Context, edge string, epoch int64, reason billingapi.Reason, detail string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return err
	}
	if epoch <= last {
		return reject(billingapi.ReasonEpochSettled, "epoch %d is settled", epoch)
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO forfeits (edge, epoch, reason) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
		edge, epoch, string(reason))
	if err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	var bytes sql.NullInt64
	if err := tx.QueryRowContext(ctx, l.db.q(`SELECT CAST(sum(bytes) AS BIGINT) FROM records WHERE edge = ? AND epoch = ?`), edge, epoch).Scan(&bytes); err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	if err := l.insertRejections(ctx, tx, []rejection{{account: edge, epoch: epoch, kind: "epoch",
		ref: strconv.FormatInt(epoch, 10), reason: reason, detail: detail, bytes: bytes.Int64}}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: forfeit: %w", err)
	}
	l.metrics.claims.WithLabelValues("epoch", "rejected", string(reason)).Inc()
	l.log.Warn("edge forfeits its epoch", zap.String("edge", edge), zap.Int64("epoch", epoch),
		zap.String("reason", string(reason)), zap.String("detail", detail))
	return nil
}

// Forfeits returns the epochs edges forfeited at or after since, oldest
// decision first, for the DNS router to keep those edges out of answers.
func (l *Ledger) Forfeits(ctx context.Context, since time.Time) ([]billingapi.ForfeitInfo, error) {
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT f.edge, f.epoch, f.reason, r.at FROM forfeits f
		JOIN rejections r ON r.account = f.edge AND r.epoch = f.epoch AND r.kind = 'epoch'
		WHERE r.at >= ? ORDER BY r.at, f.edge, f.epoch`), since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("billing: forfeits: %w", err)
	}
	defer rows.Close()
	out := []billingapi.ForfeitInfo{}
	for rows.Next() {
		var (
			f      billingapi.ForfeitInfo
			reason string
			at     int64
		)
		if err := rows.Scan(&f.Edge, &f.Epoch, &reason, &at); err != nil {
			return nil, fmt.Errorf("billing: forfeits: %w", err)
		}
		f.Reason, f.At = billingapi.Reason(reason), time.Unix(0, at).UTC()
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: forfeits: %w", err)
	}
	return out, nil
}

// ProbeOnce picks a random record of an unsettled epoch, fetches its
// object from the edge that reported it (the URL in its batch, else the
// DNS router's) and checks the bytes; an edge caught serving wrong bytes
// forfeits the epoch. It returns false when there was nothing to probe.
func (l *Ledger) ProbeOnce(ctx context.Context, p Prober) (bool, error) {
	last, err := l.lastSettled(ctx, l.db)
	if err != nil {
		return false, err
	}
	var n int64
	if err := l.db.QueryRowContext(ctx, l.db.q(`SELECT count(*) FROM records WHERE epoch > ?`), last).Scan(&n); err != nil {
		return false, fmt.Errorf("billing: probe: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	var (
		edge, c, url string
		epoch        int64
	)
	err = l.db.QueryRowContext(ctx, l.db.q(`SELECT r.edge, r.epoch, r.cid,
		coalesce((SELECT max(b.url) FROM batches b WHERE b.edge = r.edge AND b.epoch = r.epoch), '') FROM records r
		WHERE r.epoch > ? ORDER BY r.edge, r.serial LIMIT 1 OFFSET ?`), last, rand.Int64N(n)).Scan(&edge, &epoch, &c, &url)
	if err != nil {
		return false, fmt.Errorf("billing: probe: %w", err)
	}
	if url == "" && l.opts.DNS != nil {
		if edges, err := l.opts.DNS.Edges(ctx); err == nil {
			for _, e := range edges {
				if e.Peer != edge {
					continue
				}
				url = e.URL
				if url == "" && len(e.Addrs) > 0 {
					url = "http://" + e.Addrs[0]
				}
			}
		}
	}
	if url == "" {
		l.metrics.probes.WithLabelValues("no_url").Inc()
		return true, nil
	}
	at := l.opts.now()
	read, err := p.Probe(ctx, url, c)
	if read > 0 {
		// The edge bills what it served the prober, which no client
		// asked for: the probe pool of its epoch covers it.
		if err := l.addProbeBytes(ctx, edge, l.epochOf(at), read); err != nil {
			return true, err
		}
	}
	switch {
	case reasonOf(err) == billingapi.ReasonWrongContent:
		l.metrics.probes.WithLabelValues("wrong_content").Inc()
		return true, l.Forfeit(ctx, edge, epoch, billingapi.ReasonWrongContent, err.Error())
	case err != nil:
		l.metrics.probes.WithLabelValues("error").Inc()
		l.log.Info("probe inconclusive", zap.String("edge", edge), zap.String("cid", c), zap.Error(err))
		return true, nil
	}
	l.metrics.probes.WithLabelValues("ok").Inc()
	return true, nil
}

// addProbeBytes adds n bytes billing's prober read from edge in epoch.
func (l *Ledger) addProbeBytes(ctx context.Context, edge string, epoch, n int64) error {
	if _, err := l.db.ExecContext(ctx, l.db.q(`INSERT INTO probe_reads (edge, epoch, bytes) VALUES (?, ?, ?)
		ON CONFLICT (edge, epoch) DO UPDATE SET bytes = probe_reads.bytes + excluded.bytes`), edge, epoch, n); err != nil {
		return fmt.Errorf("billing: probe bytes: %w", err)
	}
	return nil
}

// RunProber probes a random served object every interval until ctx ends.
// An interval of zero is DefaultProbeInterval; a negative one turns the
// prober off (RunProber returns at once).
func (l *Ledger) RunProber(ctx context.Context, p Prober, every time.Duration) {
	if every < 0 {
		return
	}
	tick.Every(ctx, cmp.Or(every, DefaultProbeInterval), func(ctx context.Context) {
		if _, err := l.ProbeOnce(ctx, p); err != nil && ctx.Err() == nil {
			l.log.Warn("probe", zap.Error(err))
		}
	})
}
