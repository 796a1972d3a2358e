package durability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// Leases coordinate the background jobs of origins sharing one database:
// a job's pass runs only on the origin holding its lease (a row of table
// leases), so each pass runs once across origins, and a holder that dies
// stops renewing, so another origin takes the job over within the lease's
// TTL. Times are the database's clock (sqldb.DB.Now), which every origin
// reads alike: skew between origins cannot hand a lease to two holders.
// A holder is an origin's peer ID; the token goes up with each new holder,
// so a holder that lost its lease cannot renew or release the next
// holder's.

// Names of the leases of the Keeper's jobs.
const (
	leaseAudit  = "audit"
	leaseRepair = "repair"
	leaseSweep  = "sweep"
)

// leaseGrant is a lease as acquireLease took it.
type leaseGrant struct {
	name     string
	token    int64
	previous string // the holder whose unreleased lease lapsed, if one did
}

// holder is the Keeper's name in leases and claims: its origin's peer ID.
func (kp *Keeper) holder() string { return kp.key.ID.String() }

// acquireLease takes lease name for LeaseTTL if it is free, released,
// lapsed or the Keeper's own; ok is false if another origin holds it.
func (kp *Keeper) acquireLease(ctx context.Context, name string) (g leaseGrant, ok bool, err error) {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return leaseGrant{}, false, err
	}
	me, expires := kp.holder(), now.Add(kp.stripeCfg.LeaseTTL).UnixNano()
	err = sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		g, ok = leaseGrant{name: name, token: 1}, false
		var holder string
		var token, until int64
		switch err := tx.QueryRowContext(ctx, `SELECT holder, token, expires FROM leases WHERE name = ?`, name).Scan(&holder, &token, &until); {
		case errors.Is(err, sql.ErrNoRows):
			_, err := tx.ExecContext(ctx, `INSERT INTO leases (name, holder, token, expires) VALUES (?, ?, 1, ?)`, name, me, expires)
			ok = err == nil
			return err
		case err != nil:
			return err
		case holder != me && until >= now.UnixNano():
			return nil // held
		case holder != me:
			g.token = token + 1
			if until != 0 {
				g.previous = holder
			}
		default:
			g.token = token
		}
		_, err := tx.ExecContext(ctx, `UPDATE leases SET holder = ?, token = ?, expires = ? WHERE name = ?`, me, g.token, expires, name)
		ok = err == nil
		return err
	})
	if err != nil {
		return leaseGrant{}, false, fmt.Errorf("durability: lease %s: %w", name, err)
	}
	return g, ok, nil
}

// renewLease extends the Keeper's lease g for another LeaseTTL; ok is
// false if the lease is no longer the Keeper's (it lapsed and another
// origin took it).
func (kp *Keeper) renewLease(ctx context.Context, g leaseGrant) (ok bool, err error) {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return false, err
	}
	res, err := kp.db.ExecContext(ctx, `UPDATE leases SET expires = ? WHERE name = ? AND holder = ? AND token = ?`,
		now.Add(kp.stripeCfg.LeaseTTL).UnixNano(), g.name, kp.holder(), g.token)
	if err != nil {
		return false, fmt.Errorf("durability: renew lease %s: %w", g.name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// releaseLease gives the Keeper's lease g up, so that another origin may
// take it at once.
func (kp *Keeper) releaseLease(ctx context.Context, g leaseGrant) {
	if _, err := kp.db.ExecContext(ctx, `UPDATE leases SET expires = 0 WHERE name = ? AND holder = ? AND token = ?`,
		g.name, kp.holder(), g.token); err != nil {
		kp.log.Warn("lease not released", zap.String("lease", g.name), zap.Error(err))
	}
}

// withLease runs fn under lease name, if the Keeper can take it, and
// reports whether it did. While fn runs the lease is renewed every third
// of LeaseTTL; fn's ctx is cancelled if a renewal finds another holder, or
// if renewals keep failing until the lease may lapse. The lease is
// released when fn returns. A lease another origin holds is not waited
// for: its holder does the pass.
func (kp *Keeper) withLease(ctx context.Context, name string, fn func(ctx context.Context)) bool {
	g, ok, err := kp.acquireLease(ctx, name)
	if err != nil {
		if ctx.Err() == nil {
			kp.log.Warn("lease not taken", zap.String("lease", name), zap.Error(err))
		}
		return false
	}
	if !ok {
		kp.log.Debug("lease held by another origin", zap.String("lease", name))
		return false
	}
	if g.previous != "" {
		kp.metrics.leaseTakeovers.WithLabelValues(name).Inc()
		kp.log.Info("lease taken over", zap.String("lease", name), zap.String("from", g.previous), zap.Int64("token", g.token))
	}
	held := kp.metrics.leaseHeld.WithLabelValues(name)
	held.Set(1)
	defer held.Set(0)
	lctx, cancel := context.WithCancel(ctx)
	stop := kp.keepAlive(lctx, cancel, "lease "+name, func(ctx context.Context) (bool, error) { return kp.renewLease(ctx, g) })
	fn(lctx)
	stop()
	cancel()
	kp.releaseLease(context.WithoutCancel(ctx), g)
	return true
}

// keepAlive calls renew every third of LeaseTTL until stop is called,
// and calls lost (cancelling the work it keeps alive) once renew reports
// the lease or claim gone, or has failed for two thirds of LeaseTTL: the
// last renewal that succeeded is about to lapse. what names it in logs.
func (kp *Keeper) keepAlive(ctx context.Context, lost func(), what string, renew func(context.Context) (bool, error)) (stop func()) {
	ttl := kp.stripeCfg.LeaseTTL
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ok, err := renew(ctx)
			switch {
			case err == nil && ok:
				renewed = time.Now()
			case err == nil:
				kp.log.Warn("lost to another origin; stopping", zap.String("what", what))
				lost()
				return
			case ctx.Err() != nil:
				return
			case time.Since(renewed) >= ttl*2/3:
				kp.log.Warn("not renewed in time; stopping", zap.String("what", what), zap.Error(err))
				lost()
				return
			default:
				kp.log.Warn("renewal failed; retrying", zap.String("what", what), zap.Error(err))
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}
