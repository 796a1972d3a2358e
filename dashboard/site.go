package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// SitePage is one site as its page shows it: what its name points at,
// from the origin, and what the edges served for its key over the last
// 30 days, per epoch and by path, from billing.
type SitePage struct {
	Name     string    `json:"name"`
	IPNS     string    `json:"ipns"`
	CID      string    `json:"cid"`
	Sequence uint64    `json:"sequence"`
	Updated  time.Time `json:"updated"`
	Size     int64     `json:"size"` // bytes of content, -1 if not striped yet
	// Publisher is the key the name is bound to (its IPNS name's).
	Publisher string `json:"publisher"`
	// Served is billing's GET /api/v1/publishers/{key}/served for the
	// last 30 days; absent without billing, or when billing failed.
	Served *billingapi.ServedHistory `json:"served,omitempty"`
	// Errors names the services that failed: "billing".
	Errors map[string]string `json:"errors,omitempty"`
}

// errNoSite is a name the origin does not know.
var errNoSite = errors.New("no such site")

// Site gathers the page of the site name: an *httpkit.StatusError for a
// name that is not valid (400), not published (404) or an origin that
// cannot tell (502).
func (d *Dashboard) Site(ctx context.Context, name string) (*SitePage, error) {
	if err := originapi.ValidateName(name); err != nil {
		return nil, httpkit.Error(http.StatusBadRequest, err)
	}
	var ni originapi.NameInfo
	err := d.get(ctx, d.cfg.Origin+"/api/v1/names/"+url.PathEscape(name), &ni)
	var re *httpkit.ResponseError
	switch {
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		return nil, httpkit.Error(http.StatusNotFound, fmt.Errorf("%w: %s", errNoSite, name))
	case err != nil:
		return nil, httpkit.Errorf(http.StatusBadGateway, "origin: %w", err)
	}
	n, err := ipns.NameFromString(ni.IPNS)
	if err != nil {
		return nil, httpkit.Errorf(http.StatusBadGateway, "origin: %s is bound to %q: %w", name, ni.IPNS, err)
	}
	p := &SitePage{Name: ni.Name, IPNS: ni.IPNS, CID: ni.CID, Sequence: ni.Sequence, Updated: ni.Updated,
		Size: d.siteSize(ctx, ni.CID), Publisher: n.Peer().String()}
	if d.cfg.Billing != "" {
		h, err := billingapi.NewClient(d.cfg.Billing, d.cfg.HTTPClient).ServedHistory(ctx, p.Publisher, time.Time{}, time.Time{})
		if err != nil {
			p.Errors = map[string]string{"billing": err.Error()}
		} else {
			p.Served = h
		}
	}
	return p, nil
}

// serveSite answers GET /api/sites/{name}.
func (d *Dashboard) serveSite(w http.ResponseWriter, r *http.Request) {
	p, err := d.Site(r.Context(), r.PathValue("name"))
	if err != nil {
		w.Header().Set("Cache-Control", "no-store")
		httpkit.WriteError(w, err)
		return
	}
	writeNoStore(w, p)
}
