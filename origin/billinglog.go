package origin

import (
	"context"
	"net/http"
	"strconv"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
)

// BillingLog returns the page of the billing log after event since, at
// most limit events (MaxBillingLogPage if limit is 0 or more than that),
// signed with the origin's key: billing pays by these facts and checks
// that the origin stated them.
func (o *Origin) BillingLog(ctx context.Context, since int64, limit int) (*identity.Envelope, error) {
	if limit <= 0 || limit > originapi.MaxBillingLogPage {
		limit = originapi.MaxBillingLogPage
	}
	evs, last, err := origindb.Events(ctx, o.db, since, limit)
	if err != nil {
		return nil, err
	}
	page := originapi.BillingLog{Since: since, To: since, Last: last, Events: evs}
	if len(evs) > 0 {
		page.To = evs[len(evs)-1].ID
	}
	return o.key.Sign(originapi.TypeBillingLog, page)
}

func (o *Origin) serveBillingLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since int64
	limit := originapi.MaxBillingLogPage
	var err error
	if s := q.Get("since"); s != "" {
		if since, err = strconv.ParseInt(s, 10, 64); err != nil || since < 0 {
			o.fail(w, errorf(ErrBadRequest, "since %.32q: want an event ID", s))
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit <= 0 || limit > originapi.MaxBillingLogPage {
			o.fail(w, errorf(ErrBadRequest, "limit %.32q: want 1 to %d", s, originapi.MaxBillingLogPage))
			return
		}
	}
	env, err := o.BillingLog(r.Context(), since, limit)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, env)
}
