package origin

import (
	"context"
	"net/http"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// CheckPublish tells a publisher, before it imports and uploads anything,
// whether an upload signed by p and then a claim of the human name (if
// set) would be refused for what the origin knows already: p may not
// upload here (ErrForbidden), cannot pay (ErrPaymentRequired, or ErrBusy
// when billing cannot tell), the name belongs to another key, or p
// publishes another name already (ErrConflict). The errors and their
// messages are the ones the upload and the claim would give. It returns
// p's usage, so the publisher can see how much quota is left: a full
// quota is no refusal, since an upload that adds no new bytes is taken.
// It changes nothing, so a later refusal for what happens meanwhile (or
// for the upload's size) remains possible. The usage also names the
// domain sites are served under and the billing service (Config.Domain,
// Config.Billing).
func (o *Origin) CheckPublish(ctx context.Context, p peer.ID, human string) (*originapi.PublisherUsage, error) {
	if err := o.checkAdmitted(p); err != nil {
		return nil, err
	}
	if human != "" {
		if err := originapi.ValidateName(human); err != nil {
			return nil, errorf(ErrBadRequest, "%v", err)
		}
		if err := o.checkOwner(ctx, p, human); err != nil {
			return nil, err
		}
	}
	if err := o.checkFunds(ctx, p); err != nil {
		return nil, err
	}
	u, err := o.Usage(ctx, p)
	if err != nil {
		return nil, err
	}
	u.Domain, u.Billing = o.cfg.Domain, o.cfg.Billing
	return u, nil
}

// checkOwner applies ClaimName's ownership rules (owners) to a claim of
// human by p, without claiming anything.
func (o *Origin) checkOwner(ctx context.Context, p peer.ID, human string) error {
	return sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		_, _, err := owners(ctx, tx, ipns.NameFromPeer(p).String(), human)
		return err
	})
}

// serveCheckPublish answers GET /api/v1/publishers/{peer}/check?name=NAME
// with the publisher's usage, or with the error CheckPublish gives.
func (o *Origin) serveCheckPublish(w http.ResponseWriter, r *http.Request) {
	p, err := peer.Decode(r.PathValue("peer"))
	if err != nil {
		o.fail(w, errorf(ErrBadRequest, "%q is not a peer ID: %v", r.PathValue("peer"), err))
		return
	}
	u, err := o.CheckPublish(r.Context(), p, r.URL.Query().Get("name"))
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, u)
}
