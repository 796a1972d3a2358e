package billing

import (
	"context"
	"errors"
	"fmt"

	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// RejectError is a refusal with its reason. It is declared in billingapi
// so that the parties billing asks for evidence can refuse a claim
// without importing the ledger.
type RejectError = billingapi.RejectError

func reject(r billingapi.Reason, format string, args ...any) error {
	return &RejectError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// reasonOf returns the reason of a refusal, or "" for other errors.
func reasonOf(err error) billingapi.Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// rejection is one refusal to record.
type rejection struct {
	account string
	epoch   int64
	kind    string
	ref     string
	reason  billingapi.Reason
	detail  string
	bytes   int64
}

// maxDetail bounds a rejection's detail as stored and logged: the
// message may quote what a claimer sent.
const maxDetail = 1 << 10

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// insertRejections records refusals under their accounts. A refusal
// without an account (its signature did not verify: nobody's) is only
// counted and logged.
func (l *Ledger) insertRejections(ctx context.Context, q querier, rs []rejection) error {
	at := l.opts.now().UnixNano()
	for _, r := range rs {
		if r.account == "" {
			continue
		}
		if _, err := q.ExecContext(ctx, l.db.q(`INSERT INTO rejections (account, epoch, kind, ref, reason, detail, bytes, at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), r.account, r.epoch, r.kind, r.ref, string(r.reason), truncate(r.detail, maxDetail), r.bytes, at); err != nil {
			return fmt.Errorf("billing: record rejection: %w", err)
		}
	}
	return nil
}

// rejectNow records refusals in their own transaction.
func (l *Ledger) rejectNow(ctx context.Context, rs ...rejection) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	if err := l.insertRejections(ctx, tx, rs); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	for _, r := range rs {
		l.metrics.claims.WithLabelValues(r.kind, "rejected", string(r.reason)).Inc()
		l.log.Info("rejected", zap.String("kind", r.kind), zap.String("account", r.account), zap.String("ref", r.ref),
			zap.String("reason", string(r.reason)), zap.String("detail", truncate(r.detail, maxDetail)))
	}
	return nil
}
