package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Purges per name: 10 a minute and 200 a day, as two token buckets.
const (
	purgesPerMinute = 10
	purgesPerDay    = 200
)

// Purge takes a purge of the human name, an envelope signed by the key the
// name is bound to (originapi.TypePurge over originapi.Purge), and appends
// it to the name-change stream, whose readers (the edges) drop their
// cached answers for the name. It returns the change's ID. It checks, in
// order: the envelope (originapi.OpenPurge: 403 for a bad signature, 400
// otherwise), that it purges human (400), that human is bound to the
// signer (404 for no such name, 403 for another key), that it was signed
// within originapi.PurgeSkew of the origin's clock (400), that its nonce
// is new from that key (409), and that the name is within its purge rate
// limits (429 with Retry-After). The nonce is spent in the transaction
// that appends the change, so a purge refused for its rate can be sent
// again later.
func (o *Origin) Purge(ctx context.Context, human string, env *identity.Envelope) (int64, error) {
	now := o.now()
	p, err := originapi.OpenPurge(env)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return 0, errorf(ErrForbidden, "purge refused: %v", err)
	case err != nil:
		return 0, errorf(ErrBadRequest, "%v", err)
	case p.Name != human:
		return 0, errorf(ErrBadRequest, "the purge is signed for name %q, not %q", p.Name, human)
	}
	bound, err := o.nameTarget(ctx, human)
	if err != nil {
		return 0, err
	}
	if bound != p.IPNS {
		return 0, errorf(ErrForbidden, "name %q is published by %s; a purge must be signed by that key, not by %s's", human, bound, p.IPNS)
	}
	if d := now.Sub(p.Time); d > originapi.PurgeSkew || d < -originapi.PurgeSkew {
		return 0, errorf(ErrBadRequest, "the purge is stale or from the future (%s off the origin's clock, at most %s allowed); sign a new one, and check the clock",
			d.Round(time.Second), originapi.PurgeSkew)
	}

	var (
		id   int64
		undo func() // gives back the purge limits' tokens the last run took
	)
	err = sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		if undo != nil { // a retry
			undo()
			undo = nil
		}
		// A nonce older than the window cannot come back: its purge is
		// refused as stale.
		if _, err := tx.ExecContext(ctx, `DELETE FROM purge_nonces WHERE at < ?`, now.Add(-originapi.PurgeSkew).UnixNano()); err != nil {
			return fmt.Errorf("origin: prune purge nonces: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO purge_nonces (signer, nonce, at) VALUES (?, ?, ?)
			ON CONFLICT (signer, nonce) DO NOTHING`, p.IPNS, p.Nonce, p.Time.UnixNano())
		if err != nil {
			return fmt.Errorf("origin: spend purge nonce: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errorf(ErrConflict, "this purge of %q was already taken (nonce %q); sign a new one for each purge", human, p.Nonce)
		}
		// The limits are taken only for a fresh purge: a replay of a purge
		// seen on the stream, which anyone can read, costs the name nothing.
		var wait time.Duration
		if undo, wait = o.purges.take(human, now); wait > 0 {
			return &retryLater{after: wait, error: errorf(ErrTooManyRequests,
				"name %q was purged too often (at most %d a minute and %d a day); retry in %s", human, purgesPerMinute, purgesPerDay,
				wait.Round(time.Second))}
		}
		id, err = origindb.AppendChange(ctx, tx, originapi.NameChange{Kind: originapi.ChangePurge, Name: human, IPNS: p.IPNS, Purge: env, At: now})
		return err
	})
	if err != nil {
		if undo != nil {
			undo()
		}
		return 0, err
	}
	o.changeCommitted(id, originapi.ChangePurge)
	o.log.Info("purge accepted", zap.String("name", human), zap.Int64("change", id), zap.Int("paths", len(p.Paths)))
	return id, nil
}

// purgeResult is the answer to a purge taken.
type purgeResult struct {
	// ID is the purge's change ID on the name-change stream.
	ID int64 `json:"id"`
}

func (o *Origin) servePurge(w http.ResponseWriter, r *http.Request) {
	env, err := decodePurge(http.MaxBytesReader(w, r.Body, originapi.MaxPurgeSize))
	if err != nil {
		o.fail(w, err)
		return
	}
	id, err := o.Purge(r.Context(), r.PathValue("name"), env)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, purgeResult{ID: id})
}

// decodePurge reads the body of a purge request: one envelope, as JSON.
// Its signature and contents are Purge's to check.
func decodePurge(body io.Reader) (*identity.Envelope, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var env identity.Envelope
	if err := dec.Decode(&env); err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return nil, errorf(ErrTooLarge, "purge over %d bytes", originapi.MaxPurgeSize)
		}
		return nil, errorf(ErrBadRequest, "malformed purge: %v", err)
	}
	if dec.More() {
		return nil, errorf(ErrBadRequest, "malformed purge: trailing data")
	}
	return &env, nil
}

// purgeLimits are the purge rate limits of each name, in memory: the
// origin is one process, and a restart only gives a name a fresh bucket.
type purgeLimits struct {
	mu    sync.Mutex
	names map[string]*purgeBucket
}

// purgeBucket is one name's buckets; a purge takes a token from both.
type purgeBucket struct{ minute, day *rate.Limiter }

func newPurgeLimits() *purgeLimits { return &purgeLimits{names: map[string]*purgeBucket{}} }

// take takes a purge of name at now from its buckets, and returns undo to
// give it back; or, if a bucket is empty, nothing and how long until both
// hold a token.
func (l *purgeLimits) take(name string, now time.Time) (undo func(), wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.names[name]
	if b == nil {
		b = &purgeBucket{
			minute: rate.NewLimiter(rate.Every(time.Minute/purgesPerMinute), purgesPerMinute),
			day:    rate.NewLimiter(rate.Every(24*time.Hour/purgesPerDay), purgesPerDay),
		}
		l.names[name] = b
	}
	if wait = max(untilToken(b.minute, now), untilToken(b.day, now)); wait > 0 {
		return nil, wait
	}
	m, d := b.minute.ReserveN(now, 1), b.day.ReserveN(now, 1)
	return func() {
		m.CancelAt(now)
		d.CancelAt(now)
	}, 0
}

// untilToken is how long until lim holds a whole token (0: it does now),
// rounded up to the second.
func untilToken(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	d := time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
	return (d + time.Second - 1).Truncate(time.Second)
}

// prune forgets the names whose buckets are full again: a new bucket is
// the same.
func (l *purgeLimits) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, b := range l.names {
		if b.minute.TokensAt(now) >= float64(b.minute.Burst()) && b.day.TokensAt(now) >= float64(b.day.Burst()) {
			delete(l.names, name)
		}
	}
}
