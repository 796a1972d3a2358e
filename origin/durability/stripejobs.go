package durability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

// Stripe jobs (table stripe_jobs) are rows: pending until their root is
// striped (done), or abandoned. Origins sharing the database claim them
// one at a time (holder, lease_until on the database's clock, renewed
// while the job runs), so each job runs on one origin at a time and moves
// to another when its holder dies. A job run twice wastes work, never
// corrupts: blocks already striped are skipped, and a second segment of
// the same blocks is one no block row points to.
//
// A job's blocks are read from the origin's own disk. A job taken over
// from another origin may need blocks only that origin had: with none of
// them here, it is abandoned (the upload it came from was never
// acknowledged, see Origin.Ingest), and a new upload of the root queues
// it again.

// Queue records that root, stored on the origin's disk, must be striped,
// claimed by this origin (its blocks are here), and wakes the striper.
// Jobs live in the database, so a restart resumes them. A job abandoned
// before is pending again. Without a StripeConfig it does nothing.
func (kp *Keeper) Queue(ctx context.Context, root cid.Cid) error {
	return kp.queue(ctx, root, true)
}

// queue is Queue; wake says whether to wake the striper.
func (kp *Keeper) queue(ctx context.Context, root cid.Cid, wake bool) error {
	if kp.striper == nil {
		return nil
	}
	dbNow, err := kp.db.Now(ctx)
	if err != nil {
		return fmt.Errorf("durability: queue stripe job: %w", err)
	}
	now := kp.now().UnixNano()
	if _, err := kp.db.ExecContext(ctx, `INSERT INTO stripe_jobs (root, state, created_at, updated_at, holder, lease_until)
		VALUES (?, 'pending', ?, ?, ?, ?)
		ON CONFLICT (root) DO UPDATE SET state = 'pending', error = '', updated_at = excluded.updated_at,
			holder = excluded.holder, lease_until = excluded.lease_until
		WHERE stripe_jobs.state = 'abandoned'`,
		root.String(), now, now, kp.holder(), dbNow.Add(kp.stripeCfg.LeaseTTL).UnixNano()); err != nil {
		return fmt.Errorf("durability: queue stripe job: %w", err)
	}
	if wake {
		select {
		case kp.stripeWake <- struct{}{}:
		default:
		}
	}
	return nil
}

// stripeInterval is the longest pause between two passes of the striper:
// jobs queued by this origin wake it at once, those of others (and those
// whose claim lapsed) wait for a pass.
const stripeInterval = 5 * time.Second

// runStriper stripes pending roots until ctx ends, a pass every
// stripeInterval (or LeaseTTL, if shorter). Jobs live in the database, so
// a restart, or another origin, resumes them; segments already stored are
// kept.
func (kp *Keeper) runStriper(ctx context.Context) {
	tick := time.NewTicker(min(stripeInterval, kp.stripeCfg.LeaseTTL))
	defer tick.Stop()
	for {
		// Each pending job is tried once per pass, oldest first: a failed
		// one goes to the back (its updated_at moves) and does not hold
		// up the others, whose uploads wait for their own attempt.
		tried := map[cid.Cid]bool{}
		for {
			root, previous, ok, err := kp.claimNextStripeJob(ctx)
			if err != nil && ctx.Err() == nil {
				kp.log.Error("stripe jobs", zap.Error(err))
			}
			if !ok || tried[root] {
				break
			}
			tried[root] = true
			kp.runStripeJob(ctx, root, previous)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-kp.stripeWake:
		}
	}
}

// errRunning is runStripeJob's answer for a job this process runs already.
var errRunning = errors.New("durability: stripe job running already")

// runStripeJob stripes root, whose job the Keeper claimed from previous
// (its holder before, or ""), keeping the claim alive meanwhile, and
// records the outcome; it returns what stripeRoot did, or errRunning if
// the job is running in this process already (for StripeNow, or the
// striper).
func (kp *Keeper) runStripeJob(ctx context.Context, root cid.Cid, previous string) (Striped, error) {
	kp.runningMu.Lock()
	if kp.running[root] {
		kp.runningMu.Unlock()
		return Striped{}, errRunning
	}
	kp.running[root] = true
	kp.runningMu.Unlock()
	defer func() {
		kp.runningMu.Lock()
		delete(kp.running, root)
		kp.runningMu.Unlock()
	}()
	defer kp.attempted()
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := kp.keepAlive(jctx, cancel, "stripe job "+root.String(), func(ctx context.Context) (bool, error) {
		return kp.renewStripeClaim(ctx, root)
	})
	news, err := kp.stripeRoot(jctx, root)
	stop()
	if err == nil || ctx.Err() != nil {
		return news, err
	}
	bg := context.WithoutCancel(ctx)
	if previous != "" && previous != kp.holder() && ipld.IsNotFound(err) {
		// Taken over with blocks only the previous holder had.
		kp.log.Warn("stripe job abandoned: blocks only its previous origin had", zap.Stringer("root", root),
			zap.String("previous", previous), zap.Error(err))
		if _, uerr := kp.db.ExecContext(bg, `UPDATE stripe_jobs SET state = 'abandoned', error = ?, updated_at = ?
			WHERE root = ? AND state = 'pending' AND holder = ?`, err.Error(), kp.now().UnixNano(), root.String(), kp.holder()); uerr != nil {
			kp.log.Error("record abandoned stripe job", zap.Error(uerr))
		}
		return news, err
	}
	kp.log.Warn("stripe postponed", zap.Stringer("root", root), zap.Error(err))
	if _, uerr := kp.db.ExecContext(bg, `UPDATE stripe_jobs SET error = ?, updated_at = ? WHERE root = ?`,
		err.Error(), kp.now().UnixNano(), root.String()); uerr != nil {
		kp.log.Error("record stripe error", zap.Error(uerr))
	}
	return news, err
}

// StripeNow stripes roots, stored on the origin's disk, before it
// returns, and returns what it striped anew: each root's job is queued,
// claimed and run here, or, if another origin (or this one's striper)
// runs it already, waited for (what that job stripes is not counted
// here). It returns stripeRoot's error for the first root that could not
// be striped (erasure.ErrNotEnoughPeers, wrapped, if too few healthy
// storage peers took its shards; the job stays queued, held by this
// origin, and the striper retries it), or ctx's. Without a StripeConfig
// it does nothing.
func (kp *Keeper) StripeNow(ctx context.Context, roots []cid.Cid) (Striped, error) {
	var total Striped
	if kp.striper == nil {
		return total, nil
	}
	for _, root := range roots {
		if err := kp.queue(ctx, root, false); err != nil {
			return total, err
		}
		previous, ok, err := kp.claimStripeJob(ctx, root)
		if err != nil {
			return total, err
		}
		if ok {
			news, err := kp.runStripeJob(ctx, root, previous)
			total.Blocks += news.Blocks
			total.Bytes += news.Bytes
			if err == nil {
				continue
			}
			if !errors.Is(err, errRunning) {
				return total, err
			}
		}
		// Done already, or running elsewhere: wait for it.
		done, err := kp.WaitStriped(ctx, root)
		switch {
		case err != nil:
			return total, err
		case !done && ctx.Err() != nil:
			return total, ctx.Err()
		case !done:
			return total, fmt.Errorf("durability: stripe job of %s gone", root)
		}
	}
	return total, nil
}

// claimNextStripeJob claims the pending job updated longest ago that no
// other origin's live claim holds, and returns its root and who held it
// before (the Keeper itself, another origin whose claim lapsed, or "").
func (kp *Keeper) claimNextStripeJob(ctx context.Context) (root cid.Cid, previous string, ok bool, err error) {
	for {
		now, err := kp.db.Now(ctx)
		if err != nil {
			return cid.Undef, "", false, fmt.Errorf("durability: next stripe job: %w", err)
		}
		var s string
		err = kp.db.QueryRowContext(ctx, `SELECT root FROM stripe_jobs WHERE state = 'pending'
			AND (holder = '' OR holder = ? OR lease_until < ?) ORDER BY updated_at LIMIT 1`, kp.holder(), now.UnixNano()).Scan(&s)
		if errors.Is(err, sql.ErrNoRows) {
			return cid.Undef, "", false, nil
		}
		if err != nil {
			return cid.Undef, "", false, fmt.Errorf("durability: next stripe job: %w", err)
		}
		if root, err = cid.Decode(s); err != nil {
			return cid.Undef, "", false, fmt.Errorf("durability: next stripe job: %w", err)
		}
		previous, ok, err := kp.claimStripeJob(ctx, root)
		if err != nil || ok {
			return root, previous, ok, err
		}
		// Another origin claimed it meanwhile: the next one.
	}
}

// claimStripeJob claims root's job, pending, if no other origin's live
// claim holds it, and returns who held it before.
func (kp *Keeper) claimStripeJob(ctx context.Context, root cid.Cid) (previous string, ok bool, err error) {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return "", false, fmt.Errorf("durability: claim stripe job: %w", err)
	}
	me := kp.holder()
	err = sqldb.InTx(ctx, kp.db, func(tx *sqldb.Tx) error {
		ok = false
		var state string
		var until int64
		if err := tx.QueryRowContext(ctx, `SELECT state, holder, lease_until FROM stripe_jobs WHERE root = ?`, root.String()).
			Scan(&state, &previous, &until); err != nil {
			return err
		}
		if state != "pending" || (previous != "" && previous != me && until >= now.UnixNano()) {
			return nil
		}
		_, err := tx.ExecContext(ctx, `UPDATE stripe_jobs SET holder = ?, lease_until = ? WHERE root = ?`,
			me, now.Add(kp.stripeCfg.LeaseTTL).UnixNano(), root.String())
		ok = err == nil
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("durability: claim stripe job: %w", err)
	}
	return previous, ok, nil
}

// renewStripeClaim extends the Keeper's claim on root's job; false if the
// job is no longer the Keeper's, or no longer pending.
func (kp *Keeper) renewStripeClaim(ctx context.Context, root cid.Cid) (bool, error) {
	now, err := kp.db.Now(ctx)
	if err != nil {
		return false, err
	}
	res, err := kp.db.ExecContext(ctx, `UPDATE stripe_jobs SET lease_until = ? WHERE root = ? AND holder = ? AND state = 'pending'`,
		now.Add(kp.stripeCfg.LeaseTTL).UnixNano(), root.String(), kp.holder())
	if err != nil {
		return false, fmt.Errorf("durability: renew stripe claim: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// attempted wakes WaitStriped's callers after an attempt at a stripe job.
func (kp *Keeper) attempted() {
	kp.attemptsMu.Lock()
	defer kp.attemptsMu.Unlock()
	close(kp.attempts)
	kp.attempts = make(chan struct{})
}

// stripePoll is how often WaitStriped reads a stripe job it waits for:
// the job may be another origin's, whose attempts wake no one here.
const stripePoll = 250 * time.Millisecond

// WaitStriped waits until root's stripe job is done, and reports whether
// it is: true once root is striped onto the storage peers (its manifest
// signed), false with no error if root has no stripe job (striping off,
// or never queued) or ctx ended first, and false with the job's error if
// an attempt made after the call failed (too few healthy peers, say; the
// job stays queued and is retried) or the job was abandoned. It wakes
// after each attempt this Keeper makes, and reads the job every
// stripePoll for the attempts of other origins sharing the database.
func (kp *Keeper) WaitStriped(ctx context.Context, root cid.Cid) (bool, error) {
	if kp.striper == nil {
		return false, nil
	}
	since := kp.now().UnixNano()
	poll := time.NewTicker(stripePoll)
	defer poll.Stop()
	for {
		kp.attemptsMu.Lock()
		next := kp.attempts
		kp.attemptsMu.Unlock()
		var state, jobErr string
		var updated int64
		err := kp.db.QueryRowContext(ctx, `SELECT state, error, updated_at FROM stripe_jobs WHERE root = ?`, root.String()).Scan(&state, &jobErr, &updated)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return false, nil
		case err != nil:
			if ctx.Err() != nil {
				return false, nil
			}
			return false, fmt.Errorf("durability: stripe job of %s: %w", root, err)
		case state == "done":
			return true, nil
		case state == "abandoned":
			return false, fmt.Errorf("durability: stripe job of %s abandoned: %s", root, jobErr)
		case jobErr != "" && updated > since:
			return false, errors.New(jobErr) // an attempt made since the call failed
		}
		select {
		case <-next:
		case <-poll.C:
		case <-ctx.Done():
			return false, nil
		}
	}
}
