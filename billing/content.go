package billing

import (
	"context"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
)

// object resolves the object an edge's record r claims: at the time it
// was served when the Content can tell (ContentAt), else at any time.
func (l *Ledger) object(ctx context.Context, r *billingapi.Record) (witness.Object, error) {
	if ca, ok := l.content.(ContentAt); ok {
		return ca.ObjectAt(ctx, r.Name, r.Root, r.CID, time.UnixMilli(r.Time))
	}
	return l.content.Object(ctx, r.Name, r.Root, r.CID)
}
