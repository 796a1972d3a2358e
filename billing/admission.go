package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

// Admit applies an admission (or a revocation) signed by the billing
// operator's key. Only admitted edges are paid, and only reads they sign
// earn storage peers anything: a fresh key is worth nothing until the
// operator vouches for it. An admission resent with the same nonce is
// applied once; the same nonce with other content is ErrConflict.
func (l *Ledger) Admit(ctx context.Context, env *identity.Envelope) (*billingapi.AdmittedEdge, error) {
	a, err := l.admit(ctx, env)
	if r := reasonOf(err); r != "" {
		l.metrics.claims.WithLabelValues("admission", "rejected", string(r)).Inc()
		l.log.Warn("admission refused", zap.String("signer", truncate(env.Signer, identity.MaxSignerSize)), zap.Error(err))
	}
	return a, err
}

func (l *Ledger) admit(ctx context.Context, env *identity.Envelope) (*billingapi.AdmittedEdge, error) {
	var a billingapi.Admission
	signer, err := env.Open(billingapi.TypeAdmission, &a)
	switch {
	case errors.Is(err, identity.ErrBadSignature):
		return nil, reject(billingapi.ReasonSignature, "admission: %v", err)
	case err != nil:
		return nil, reject(billingapi.ReasonMalformed, "admission: %v", err)
	case signer != l.operator:
		return nil, reject(billingapi.ReasonSignature, "admission signed by %s; only the billing operator %s may admit edges", signer, l.operator)
	case a.Nonce == "" || len(a.Nonce) > billingapi.MaxField:
		return nil, reject(billingapi.ReasonMalformed, "admission nonce: want 1 to %d characters", billingapi.MaxField)
	case len(a.Edge) > identity.MaxSignerSize:
		return nil, reject(billingapi.ReasonMalformed, "admission edge: over %d bytes", identity.MaxSignerSize)
	}
	if _, err := peer.Decode(a.Edge); err != nil {
		return nil, reject(billingapi.ReasonMalformed, "admission edge %.64q: %v", a.Edge, err)
	}
	revoke := int64(0)
	if a.Revoke {
		revoke = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("billing: admission: %w", err)
	}
	defer tx.Rollback()
	var (
		edge string
		was  int64
	)
	err = tx.QueryRowContext(ctx, l.db.q(`SELECT edge, revoke FROM admission_nonces WHERE nonce = ?`), a.Nonce).Scan(&edge, &was)
	switch {
	case err == nil && (edge != a.Edge || was != revoke):
		return nil, fmt.Errorf("billing: admission nonce %.64q: %w: used for another admission", a.Nonce, ErrConflict)
	case err == nil: // applied before
	case errors.Is(err, sql.ErrNoRows):
		now := l.opts.now().UnixNano()
		if _, err := tx.ExecContext(ctx, l.db.q(`INSERT INTO admission_nonces (nonce, edge, revoke, at) VALUES (?, ?, ?, ?)`),
			a.Nonce, a.Edge, revoke, now); err != nil {
			return nil, fmt.Errorf("billing: admission: %w", err)
		}
		q := `INSERT INTO admissions (edge, admitted_at, revoked_at) VALUES (?, ?, 0)
			ON CONFLICT (edge) DO UPDATE SET admitted_at = CASE WHEN admissions.revoked_at = 0 THEN admissions.admitted_at ELSE excluded.admitted_at END,
			revoked_at = 0`
		if a.Revoke {
			q = `UPDATE admissions SET revoked_at = ? WHERE edge = ? AND revoked_at = 0`
		}
		args := []any{a.Edge, now}
		if a.Revoke {
			args = []any{now, a.Edge}
		}
		if _, err := tx.ExecContext(ctx, l.db.q(q), args...); err != nil {
			return nil, fmt.Errorf("billing: admission: %w", err)
		}
		if err := l.ensureAccount(ctx, tx, a.Edge, "edge"); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("billing: admission: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("billing: admission: %w", err)
	}
	l.metrics.claims.WithLabelValues("admission", "accepted", "").Inc()
	l.log.Info("admission", zap.String("edge", a.Edge), zap.Bool("revoke", a.Revoke), zap.String("nonce", a.Nonce))
	adm, err := l.admissions(ctx, l.db)
	if err != nil {
		return nil, err
	}
	out := billingapi.AdmittedEdge{Edge: a.Edge}
	if ad, ok := adm[a.Edge]; ok {
		out = ad.info(a.Edge)
	}
	return &out, nil
}

// admission is an edge's admission: since when it is admitted, and when
// it was revoked (zero while admitted).
type admission struct{ from, until time.Time }

// covers reports whether the admission covers the epoch [start, end):
// the edge was admitted before the epoch ended and not revoked before it
// started.
func (a admission) covers(start, end time.Time) bool {
	return a.from.Before(end) && (a.until.IsZero() || a.until.After(start))
}

func (a admission) info(edge string) billingapi.AdmittedEdge {
	out := billingapi.AdmittedEdge{Edge: edge, Since: a.from.UTC()}
	if !a.until.IsZero() {
		u := a.until.UTC()
		out.Revoked = &u
	}
	return out
}

// admissions returns every admission, revoked ones too, by edge.
func (l *Ledger) admissions(ctx context.Context, q querier) (map[string]admission, error) {
	rows, err := q.QueryContext(ctx, `SELECT edge, admitted_at, revoked_at FROM admissions`)
	if err != nil {
		return nil, fmt.Errorf("billing: admissions: %w", err)
	}
	defer rows.Close()
	out := map[string]admission{}
	for rows.Next() {
		var (
			edge        string
			from, until int64
		)
		if err := rows.Scan(&edge, &from, &until); err != nil {
			return nil, fmt.Errorf("billing: admissions: %w", err)
		}
		a := admission{from: time.Unix(0, from)}
		if until != 0 {
			a.until = time.Unix(0, until)
		}
		out[edge] = a
	}
	return out, rows.Err()
}

// admittedAt returns the admission of edge, and whether there is one.
func (l *Ledger) admittedAt(ctx context.Context, edge string) (admission, bool, error) {
	var from, until int64
	err := l.db.QueryRowContext(ctx, l.db.q(`SELECT admitted_at, revoked_at FROM admissions WHERE edge = ?`), edge).Scan(&from, &until)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return admission{}, false, nil
	case err != nil:
		return admission{}, false, fmt.Errorf("billing: %w: admission of %s: %w", errTransient, edge, err)
	}
	a := admission{from: time.Unix(0, from)}
	if until != 0 {
		a.until = time.Unix(0, until)
	}
	return a, true, nil
}

// checkAdmitted refuses a batch of an edge the operator has not admitted
// for the epoch (not_admitted).
func (l *Ledger) checkAdmitted(ctx context.Context, edge string, epoch int64) error {
	a, ok, err := l.admittedAt(ctx, edge)
	switch {
	case err != nil:
		return err
	case !ok:
		return reject(billingapi.ReasonNotAdmitted, "edge %s is not admitted by the billing operator", edge)
	case !a.covers(time.Unix(epoch, 0), time.Unix(epoch+l.secs, 0)):
		return reject(billingapi.ReasonNotAdmitted, "edge %s is not admitted for epoch %d (admitted %s, revoked %s)",
			edge, epoch, a.from.UTC().Format(time.RFC3339), formatTime(a.until))
	}
	return nil
}

// formatTime formats t, or "never" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// Admitted returns the edges admitted now, for the DNS router to hand
// out only those.
func (l *Ledger) Admitted(ctx context.Context) ([]billingapi.AdmittedEdge, error) {
	adm, err := l.admissions(ctx, l.db)
	if err != nil {
		return nil, err
	}
	now := l.opts.now()
	out := []billingapi.AdmittedEdge{}
	for edge, a := range adm {
		if a.covers(now, now.Add(time.Nanosecond)) {
			out = append(out, a.info(edge))
		}
	}
	slices.SortFunc(out, func(a, b billingapi.AdmittedEdge) int { return strings.Compare(a.Edge, b.Edge) })
	return out, nil
}
